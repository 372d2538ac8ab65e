"""Same seed, same loss curve (CPU); another seed, another curve."""

import json

from conftest import run_tiny


def _losses(run_dir):
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(e["step"], e["train/loss"]) for e in events if "train/loss" in e]


def test_same_seed_same_loss_curve(use_mirror, tmp_path):
    extra = ("method.dropout=0.1", "train.seed=7")  # dropout exercises the RNG too
    a = run_tiny(tmp_path / "a", *extra)
    b = run_tiny(tmp_path / "b", *extra)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    assert a["metrics"] == b["metrics"] and a["run_id"] == b["run_id"]
    c = run_tiny(tmp_path / "c", "method.dropout=0.1", "train.seed=8")
    assert _losses(tmp_path / "c") != _losses(tmp_path / "a")
    assert c["run_id"] != a["run_id"]
