"""A run stopped after a checkpoint and started again in its directory continues exactly: same
loss curve, same final metrics as a run that was never interrupted."""

import json

import pytest

from conftest import compose, run_tiny
from harness.methods import METHODS as REGISTRY

BUDGET = ("train.max_steps=20", "train.log_every=5", "train.eval_every=10", "train.checkpoint_every=10")
METHODS = {
    "lora": ("method=lora",),
    "adalora": ("method=adalora", "method.init_r=6", "method.target_r=2", "method.tinit=4", "method.tfinal=4",
                "method.deltaT=2"),
    "loreft": ("method=loreft",),
}


def _curve(run_dir):
    events = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(e["step"], e["train/loss"]) for e in events if "train/loss" in e]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_resume_after_a_crash_equals_an_uninterrupted_run(name, use_mirror, tmp_path, monkeypatch):
    overrides = (*METHODS[name], *BUDGET)
    straight = run_tiny(tmp_path / "straight", *overrides)

    crashed = tmp_path / "crashed"
    monkeypatch.setenv("HARNESS_FAULT", "error@13")
    with pytest.raises(RuntimeError, match="injected fault at step 13"):
        run_tiny(crashed, *overrides)
    assert json.loads((crashed / "result.json").read_text())["status"] == "failed"
    assert json.loads((crashed / "checkpoint" / "meta.json").read_text())["step"] == 10

    monkeypatch.delenv("HARNESS_FAULT")
    resumed = run_tiny(crashed, *overrides)
    assert [a["resumed_from_step"] for a in resumed["attempts"]] == [0, 10]
    assert _curve(crashed) == _curve(tmp_path / "straight")
    assert resumed["metrics"] == straight["metrics"]
    assert resumed["params"] == straight["params"]
    if REGISTRY.get(compose(*METHODS[name]).method.kind).rank_adaptive:  # its rank state resumes too
        assert resumed["ranks"]["final"] == straight["ranks"]["final"]
        assert resumed["ranks"]["history"] == straight["ranks"]["history"]


def test_checkpoint_of_another_config_is_not_resumed(use_mirror, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.setenv("HARNESS_FAULT", "error@13")
    with pytest.raises(RuntimeError):
        run_tiny(run_dir, *BUDGET)
    monkeypatch.delenv("HARNESS_FAULT")
    record = run_tiny(run_dir, *BUDGET, "method.r=4")  # different identity: starts over
    assert [a["resumed_from_step"] for a in record["attempts"]] == [0]
    assert (run_dir / "attempt-1" / "checkpoint" / "meta.json").is_file()  # kept aside, not deleted


def test_checkpoint_every_must_be_a_multiple_of_log_every(use_mirror, tmp_path):
    from harness.errors import HarnessError
    with pytest.raises(HarnessError, match="checkpoint_every must be a positive multiple of train.log_every=5"):
        run_tiny(tmp_path / "r", "train.log_every=5", "train.checkpoint_every=12")
