"""AdaLoRA: the budget schedule really prunes ranks, through the loop's optimizer-step hook."""

import json

import pytest

from conftest import run_tiny

SCHEDULE = ("method=adalora", "train.max_steps=30", "train.eval_every=30", "method.init_r=6", "method.target_r=2",
            "method.tinit=5", "method.tfinal=10", "method.deltaT=5", "method.lr_multiplier=20")
N_MODULES = 12  # tiny_bert: 2 layers x 6 block linears


@pytest.mark.parametrize("accum", [1, 2])  # the schedule counts optimizer steps, not micro-batches
def test_total_rank_falls_to_target_budget_non_uniformly(use_mirror, tmp_path, accum):
    record = run_tiny(tmp_path / "run", *SCHEDULE, f"train.grad_accum={accum}")
    ranks = record["ranks"]
    assert ranks["initial_total"] == 6 * N_MODULES and ranks["final_total"] == 2 * N_MODULES
    assert len(set(ranks["final"].values())) > 1, "per-module ranks should be non-uniform"
    assert "ranks_never_moved" not in record["flags"] and record["method_report"]["ranks_moved"] is True
    budgets = [h["budget"] for h in ranks["history"]]
    assert budgets == sorted(budgets, reverse=True) and budgets[0] == 72 and budgets[-1] == 24
    events = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    rank_steps = [e["step"] for e in events if "rank/total" in e]
    assert rank_steps == [0, 5, 10, 15, 20, 25, 30]  # every deltaT steps
    assert any(k.startswith("rank/bert.encoder.layer.1.") for e in events for k in e)
    # stored = the saved adapter sliced to the final ranks (+ the head); nonzero = r_final (in + out + 1)
    assert record["params"]["stored"] < record["params"]["trainable"]
    assert record["params"]["nonzero"] == record["params"]["stored"] - record["params"]["head"]


def test_without_the_allocation_hook_ranks_never_move_and_are_flagged(use_mirror, tmp_path, monkeypatch):
    from harness.methods.adalora import AdaLora
    monkeypatch.setattr(AdaLora, "on_optimizer_step", lambda self, step, model: None)
    record = run_tiny(tmp_path / "run", *SCHEDULE)
    assert record["ranks"]["final_total"] == 6 * N_MODULES
    assert "ranks_never_moved" in record["flags"]


def test_task_loss_is_logged_apart_from_the_regulariser(use_mirror, tmp_path):
    run_tiny(tmp_path / "run", *SCHEDULE)
    events = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    train = [e for e in events if "train/loss" in e]
    assert all(e["train/objective"] > e["train/loss"] for e in train)  # orthogonal regulariser included


@pytest.mark.parametrize("bad,fragment", [
    (("method.tinit=25", "method.tfinal=10"), "leaves no budgeting phase"),
    (("method.target_r=8", "method.init_r=4"), "exceeds method.init_r"),
])
def test_impossible_schedules_are_rejected(use_mirror, tmp_path, bad, fragment):
    from harness.errors import HarnessError
    with pytest.raises(HarnessError, match=fragment):
        run_tiny(tmp_path / "run", *SCHEDULE, *bad)
    assert not (tmp_path / "run/result.json").exists()
