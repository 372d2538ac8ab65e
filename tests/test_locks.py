"""Two invocations on one sweep (or one run directory) at once: never two writers on a run.

A second invocation of a running sweep shares the work: it skips the jobs the first holds (their
run directories are locked), runs the others, and says which it left and why; every job ends with
one success record, each loss step logged once, nothing left `running`."""

import json
import os
import subprocess
import sys

from conftest import REPO, cli
from harness.results import RunLock


def _start(*args, env):
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **env})


def test_two_concurrent_sweeps_into_one_directory(use_mirror, tmp_path):
    sweep_dir = tmp_path / "smoke"
    env = {"HARNESS_DATA_DIR": str(use_mirror), "HARNESS_FAULT": "slow@50"}  # 20 steps x 50 ms per job
    procs = [_start("+sweep=smoke", f"hydra.sweep.dir={sweep_dir}", env=env) for _ in range(2)]
    outs = [p.communicate(timeout=400) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
    records = {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/result.json")}
    assert len(records) == 8 and all(r["status"] == "success" for r in records.values())
    for name in records:
        steps = [json.loads(ln)["step"] for ln in (sweep_dir / name / "metrics.jsonl").read_text().splitlines()
                 if "train/loss" in ln]
        assert steps == [5, 10, 15, 20], (name, steps)  # each step once: one writer per run
        assert not list((sweep_dir / name).glob("attempt-*")), "a live run was moved aside"
    events = [json.loads(ln) for ln in (sweep_dir / "sweep_log.jsonl").read_text().splitlines()]
    ran = [e for e in events if e["outcome"] == "success"]
    assert len(ran) == 8 and len({e["dir"] for e in ran}) == 8  # each job ran exactly once
    assert {e["outcome"] for e in events} <= {"success", "skipped", "held"}
    held = [e for e in events if e["outcome"] == "held"]
    summaries = "".join(o[0] for o in outs)
    if held:  # the invocation that left a job to the other one says so
        assert "left to another invocation running them" in summaries and "held:" in summaries


def test_a_run_directory_in_use_is_refused(use_mirror, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = RunLock(run_dir)
    other = subprocess.Popen([sys.executable, "-c", "import sys,time; sys.path.insert(0, sys.argv[2]);"
                              " from harness.results import RunLock; l=RunLock(sys.argv[1]); assert l.acquire();"
                              " print('held', flush=True); time.sleep(60)", str(run_dir), str(REPO)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        assert not holder.acquire()
        proc = cli("model=tiny_bert", "logger=none", f"hydra.run.dir={run_dir}",
                   env={"HARNESS_DATA_DIR": str(use_mirror)})
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and "is in use by another process (pid" in lines[0], proc.stderr
        assert [p.name for p in run_dir.iterdir()] == [".lock"]  # nothing written
    finally:
        other.kill()
        other.wait()
    assert holder.acquire()  # released when the holder died
    holder.release()
    assert not run_dir.exists()  # only the lock was there: removed with it


def test_a_file_system_without_locks_is_an_error_not_a_held_run(tmp_path, monkeypatch):
    """ENOLCK (NFS without lockd) must not read as 'another process holds it': every job would be
    skipped as held and the sweep would exit 0 having trained nothing."""
    import errno
    import fcntl

    import pytest

    from harness.errors import HarnessError

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "lockf", no_locks)
    with pytest.raises(HarnessError, match="does not support locks"):
        RunLock(tmp_path).acquire()


def test_two_concurrent_invocations_of_a_staged_sweep_both_reach_the_later_stage(use_mirror, tmp_path):
    """Tiny budget-matched sweep: stage 1 = LoRA, LoReFT, lori_d; stage 2 = LoRI-S on that lori_d run.
    An invocation whose stage-1 jobs were left to the other waits for them instead of stopping, so
    one pass of both leaves every job done (two finishing together once both stopped short)."""
    from test_budget import RUN
    sweep_dir = tmp_path / "staged"
    env = {"HARNESS_DATA_DIR": str(use_mirror), "HARNESS_FAULT": "slow@200"}  # both hold stage-1 jobs
    procs = [_start("+sweep=budget_matched", f"hydra.sweep.dir={sweep_dir}", *RUN, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=400) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
    records = [json.loads(p.read_text()) for p in sweep_dir.glob("*/result.json")]
    assert sorted(r["config"]["method"]["label"] for r in records) == ["lora", "loreft", "lori_d", "lori_s"]
    assert all(r["status"] == "success" for r in records)
    assert "not launched" not in "".join(o[0] for o in outs)
