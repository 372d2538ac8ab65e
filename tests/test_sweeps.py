"""Named sweeps: each expands to its asserted job count, runs under the basic launcher, skips what
succeeded, resumes what was killed, and records failures without stopping."""

import copy
import functools
import json
import os
import signal
from pathlib import Path

import pytest
from omegaconf import open_dict

from conftest import CONF, cli, cli_in_process, compose
from harness.config import method_preset, validate
from harness.methods import METHODS
from harness.methods.adalora import schedule
from harness.sweeper import plan

# Counts asserted, so a sweep whose grid silently changes fails here.
EXPECTED_JOBS = {"lora_vs_reft": 11, "lr_ratio": 25, "forgetting": 30, "forgetting_confirm": 20, "adalora_allocation": 36, "adalora_allocation_confirm": 16, "lori_sparsity": 32, "lori_sparsity_confirm": 20, "reft_capacity": 46, "reft_capacity_confirm": 22, "boolq_budget": 4, "rank_sweep": 9, "adalora_budget": 4, "lori": 4,
                 "glue_suite": 9, "smoke": 8, "throughput_accuracy": 18, "budget_matched": 23, "budget_matched_confirm": 30}


def _jobs(name, *overrides):
    return [job for block in plan(name, list(overrides)) for job in block]


def test_every_sweep_file_is_counted():
    assert sorted(p.stem for p in (CONF / "sweep").glob("*.yaml")) == sorted(EXPECTED_JOBS)


@pytest.mark.parametrize("name", sorted(EXPECTED_JOBS))
def test_sweep_expands_and_every_job_validates(name):
    jobs = _jobs(name)
    assert len(jobs) == EXPECTED_JOBS[name]
    assert len({tuple(sorted(j)) for j in jobs}) == len(jobs), "duplicate jobs"
    for job in jobs:
        cfg = compose(*job)
        if cfg.method.kind != "lori_s":  # LoRI-S needs its sweep's LoRI-D run: checked when it runs
            validate(cfg)


def test_gpu_profile_and_command_line_axes_scale_the_grid():
    assert len(_jobs("lora_vs_reft", "profile=gpu")) == 11 * 3 * 3  # 3 seeds x 3 LRs
    assert len(_jobs("lora_vs_reft", "task=sst2,rte,boolq")) == 33
    assert len(_jobs("lora_vs_reft", "hydra.sweeper.values.lora_ranks=[8]")) == 1 + 2 + 4
    cfg = compose(*_jobs("lora_vs_reft", "profile=gpu")[0])
    assert cfg.model.name == "roberta_base" and cfg.train.max_steps == 2000


def test_learning_rates_interpolate_the_method_anchor():
    """LRs are multiples of the FullFT LR, centred on each method's lr_multiplier (held once)."""
    anchors = {m: method_preset(m)["lr_multiplier"] for m in ("fullft", "lora", "loreft")}
    for job in _jobs("lora_vs_reft", "profile=gpu"):
        cfg = compose(*job)
        assert cfg.method.lr_multiplier / anchors[cfg.method.label] in (0.3, 1, 3)
    adalora = compose(*_jobs("adalora_budget")[0])
    assert adalora.train.max_steps == 400  # the cpu profile; the schedule follows it
    assert schedule(adalora.method, adalora.train.max_steps) == {"tinit": 40, "tfinal": 120, "deltaT": 20}


METHOD_YAMLS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def _method_node(method):
    return compose(f"method={method}").method


@pytest.mark.parametrize("name", sorted(EXPECTED_JOBS))
def test_every_sweep_accepts_every_method(name):
    """Method defaults fit every sweep's budget: `+sweep=NAME method=M` validates for every M (each
    job of the sweep with its method replaced). A method that continues a finished run (LoRI-S:
    a LoRI-D run) is checked when it runs. Each job is composed once and given each method's node
    (composed once): the same config as composing the job with `method=M`, since neither a sweep
    nor its profile sets method keys (the job's own method overrides are dropped), at one
    composition per job and per method instead of one per pair."""
    jobs = _jobs(name)
    # the first 3 jobs without their method overrides; identical ones compose to the same config
    for job in dict.fromkeys(tuple(o for o in job if not o.startswith(("method", "+method"))) for job in jobs[:3]):
        composed = compose(*job)
        for method in METHOD_YAMLS:
            if METHODS.get(method_preset(method)["kind"]).source_run_kind:
                continue
            cfg = copy.deepcopy(composed)
            with open_dict(cfg):
                cfg.method = _method_node(method)
            validate(cfg)


def _records(sweep_dir: Path):
    """{job dir name: record} for the job directories of a sweep (not set-aside attempts)."""
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/result.json")}


def _smoke(sweep_dir, *extra, env=None, timeout=240):
    return cli("+sweep=smoke", f"hydra.sweep.dir={sweep_dir}", *extra, env=env, timeout=timeout)


def test_smoke_sweep_runs_then_skips_everything(use_mirror, smoke_sweep):
    sweep_dir, first = smoke_sweep  # the session's smoke sweep (conftest): a real `+sweep=smoke` process
    assert first.returncode == 0, first.stderr[-2000:]
    records = _records(sweep_dir)
    assert len(records) == 8 and all(r["status"] == "success" for r in records.values())
    assert len({r["run_id"] for r in records.values()}) == 8
    assert "[sweep] done in" in first.stdout and "8 succeeded" in first.stdout
    assert "[sweep] 8/8 jobs" in first.stdout  # the sweep-level progress line

    stamps = {d: r["finished_at"] for d, r in records.items()}
    again = _smoke(sweep_dir)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "0 succeeded, 8 skipped" in again.stdout
    assert {d: r["finished_at"] for d, r in _records(sweep_dir).items()} == stamps  # nothing re-run


def test_kill_9_mid_sweep_then_rerun_resumes(use_mirror, tmp_path):
    sweep_dir = tmp_path / "smoke"
    # job order: fullft s1, fullft s2, lora r2 s1, ... ; the lora r2 s1 run is killed at step 15,
    # after its checkpoint at step 10
    killed = _smoke(sweep_dir, env={"HARNESS_FAULT": "kill@15:sst2-lora-tiny_bert-s1"})
    assert killed.returncode == -signal.SIGKILL
    before = _records(sweep_dir)
    victim = "method.r=2,method=lora,train.seed=1"
    assert before[victim]["status"] == "running"  # killed: no chance to write anything else
    assert (sweep_dir / victim / "checkpoint" / "meta.json").is_file()
    finished = {d: r["finished_at"] for d, r in before.items() if r["status"] == "success"}
    assert len(finished) == 2

    # rerun with settings that do not change what a job computes: the same job directories
    rerun = _smoke(sweep_dir, "train.num_threads=1", "train.progress=false", "logger=none")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    after = _records(sweep_dir)
    assert len(after) == 8 and all(r["status"] == "success" for r in after.values())
    assert all(after[d]["finished_at"] == t for d, t in finished.items())  # finished jobs not re-run
    assert "2 skipped" in rerun.stdout
    resumed = after[victim]
    assert [a["resumed_from_step"] for a in resumed["attempts"]] == [0, 10]
    assert not (sweep_dir / victim / "checkpoint").exists()  # removed once the run succeeded
    assert not any(p.name.startswith("attempt-") for p in (sweep_dir / victim).iterdir())
    steps = [e["step"] for e in map(json.loads, (sweep_dir / victim / "metrics.jsonl").read_text().splitlines())
             if "train/loss" in e]
    assert steps == [5, 10, 15, 20]  # each logged once: events after the checkpoint were dropped


def test_failures_are_recorded_and_the_sweep_goes_on(use_mirror, tmp_path):
    sweep_dir = tmp_path / "smoke"
    faults = "nan@7:sst2-fullft-tiny_bert-s1,error@7:sst2-loreft-tiny_bert-s2,oom@3:sst2-lora-tiny_bert-s2"
    run = _smoke(sweep_dir, env={"HARNESS_FAULT": faults})
    assert run.returncode == 1  # all jobs ran, but the exit status says some failed
    assert run.stderr.strip().splitlines()[-1].startswith("harness: error: 4 of 8 sweep jobs failed")
    records = _records(sweep_dir)
    assert len(records) == 8
    reasons = {d: r["error"]["reason"] for d, r in records.items() if r["status"] == "failed"}
    assert reasons == {"method=fullft,train.seed=1": "diverged", "method=loreft,train.seed=2": "error",
                       "method.r=2,method=lora,train.seed=2": "oom", "method.r=4,method=lora,train.seed=2": "oom"}
    assert sum(r["status"] == "success" for r in records.values()) == 4
    assert "4 succeeded, 0 skipped (already done), 4 failed" in run.stdout
    assert "failed (oom)" in run.stdout and "failed (diverged)" in run.stdout

    retry = _smoke(sweep_dir)  # the failed jobs are re-run (their failed attempt kept aside)
    assert retry.returncode == 0, retry.stderr[-2000:]
    assert all(r["status"] == "success" for r in _records(sweep_dir).values())
    assert (sweep_dir / "method=fullft,train.seed=1" / "attempt-1" / "result.json").is_file()


def test_bad_value_in_a_grid_stops_before_anything_runs(use_mirror, tmp_path):
    # the CLI's entry point in this process (a sweep's up-front check in a real process:
    # tests/test_bad_input.py::test_sweep_refuses_an_added_key_up_front)
    sweep_dir = tmp_path / "smoke"
    run = cli_in_process("+sweep=smoke", f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.values.lora_ranks=[2,0]")
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "method.r must be >= 1 (got 0)" in lines[0] and "sweep job" in lines[0]
    assert not list(sweep_dir.glob("*/result.json"))
