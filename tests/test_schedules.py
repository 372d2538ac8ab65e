"""The loop's LR schedules, read back from metrics.jsonl."""

import json

import pytest

from conftest import run_tiny


def _lrs(run_dir):
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [e["train/lr"] for e in events if "train/lr" in e]


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_schedule_shapes(use_mirror, tmp_path, schedule):
    record = run_tiny(tmp_path / schedule, f"train.schedule={schedule}", "train.warmup_steps=2",
                      "train.log_every=1", "train.max_steps=8")
    lr = record["inferred"]["lr"]["value"]
    got = _lrs(tmp_path / schedule)
    assert len(got) == 8
    assert got[0] == pytest.approx(lr / 2)  # after step 1 of 2 warm-up steps
    assert got[1] == pytest.approx(lr)
    if schedule == "constant":
        assert got[1:] == pytest.approx([lr] * 7)
    else:
        assert got[-1] == pytest.approx(0.0, abs=1e-12)
        assert all(a >= b for a, b in zip(got[1:], got[2:]))  # decays monotonically


def test_grad_accum_consumes_more_batches(use_mirror, tmp_path):
    one = run_tiny(tmp_path / "one", "train.max_steps=4", "train.eval_every=4")
    two = run_tiny(tmp_path / "two", "train.max_steps=4", "train.eval_every=4", "train.grad_accum=2")
    assert one["data"]["train_examples"] == 64
    # 4 steps x 8 = 32 examples vs 4 steps x 2 x 8 = 64 examples (one full epoch)
    assert two["cost"]["train_tokens"] > 1.5 * one["cost"]["train_tokens"]
