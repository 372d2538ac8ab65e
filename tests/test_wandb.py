"""The offline W&B run, read back from its .wandb file: loss and rank series, the rank table and
heatmap, the summary (final metrics and param report), grouping by sweep, no secrets in the config."""

import json

import pytest

from conftest import run_tiny
from wandb_reader import history, kinds, records, summary

ADALORA = ("method=adalora", "method.init_r=6", "method.target_r=2", "method.tinit=2", "method.tfinal=2",
           "method.deltaT=2", "train.max_steps=10", "train.log_every=2", "train.eval_every=5")


@pytest.mark.timeout(200)
def test_offline_wandb_run_reads_back(use_mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    record = run_tiny(run_dir, "logger=wandb", *ADALORA)
    (wandb_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    rows = history(wandb_file)
    losses = {r["_step"]: r["train/loss"] for r in rows if "train/loss" in r}
    assert sorted(losses) == [2, 4, 6, 8, 10]
    local = {e["step"]: e["train/loss"] for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
             if "train/loss" in e}
    assert losses == pytest.approx(local)  # the same series as the local record
    rank_keys = {k for r in rows for k in r if k.startswith("rank/") and k not in ("rank/total", "rank/budget")}
    assert len(rank_keys) == 12  # every adapted module of the tiny BERT
    (end,) = [r for r in rows if "rank_heatmap/_type" in r]  # logged once, at finish
    assert end["rank_heatmap/_type"] == "image-file" and end["rank_history/_type"] == "table-file"
    assert end["rank_history/nrows"] == len([r for r in rows if "rank/total" in r]) * 12  # steps x modules
    assert any("train/tokens_per_second" in r for r in rows) and any("train/grad_norm" in r for r in rows)
    final = summary(wandb_file)
    assert final["final/accuracy"] == pytest.approx(record["metrics"]["accuracy"])
    assert final["params/adapter"] == record["params"]["adapter"]
    assert "exit" in kinds(wandb_file)  # finished cleanly


@pytest.mark.timeout(200)
def test_wandb_is_finished_when_the_run_fails(use_mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HARNESS_FAULT", "error@3")
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError):
        run_tiny(run_dir, "logger=wandb")
    (wandb_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    assert "exit" in kinds(wandb_file)


def test_config_sent_to_wandb_has_no_secrets():
    from harness.tracking import without_secrets
    cfg = {"logger": {"api_key": "x", "project": "p"}, "model": {"hf_token": "t", "name": "m"}, "list": [{"password": 1}]}
    assert without_secrets(cfg) == {"logger": {"project": "p"}, "model": {"name": "m"}, "list": [{}]}


def _run_ids(run_dir):
    """{offline run directory: (W&B run id, finished cleanly)}."""
    out = {}
    for f in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        ids = {r.run.run_id for r in records(f) if r.WhichOneof("record_type") == "run"}
        out[f.parent.name] = (ids, "exit" in kinds(f))
    return out


@pytest.mark.timeout(200)
def test_a_resumed_attempt_continues_the_same_wandb_run(use_mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    extra = ("logger=wandb", "train.max_steps=10", "train.log_every=2", "train.checkpoint_every=4")
    monkeypatch.setenv("HARNESS_FAULT", "error@6")
    with pytest.raises(RuntimeError, match="injected fault at step 6"):
        run_tiny(run_dir, *extra)
    monkeypatch.delenv("HARNESS_FAULT")
    record = run_tiny(run_dir, *extra)
    assert [a["resumed_from_step"] for a in record["attempts"]] == [0, 4]
    attempts = _run_ids(run_dir)
    assert len(attempts) == 2  # one offline directory per attempt ...
    ids = set().union(*(i for i, _ in attempts.values()))
    assert ids == {record["wandb_id"]}  # ... both of one W&B run, which the last attempt finishes
    assert list(attempts.values())[-1][1]
