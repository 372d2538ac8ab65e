"""The sweep's own log, shared by every launcher: <sweep_dir>/sweep_log.jsonl gets one line per
job outcome (success, skipped, failed with its reason) and <sweep_dir>/invocations.jsonl one line
when a sweep command starts and one when it ends. Jobs on SLURM write to the same files, so the
progress line and the final summary count every launcher's jobs alike.
"""

import json
import os
import time
from pathlib import Path
from typing import List

INVOCATION_ENV = "HARNESS_SWEEP_INVOCATION"  # set by the sweeper; inherited by local and SLURM jobs
TOTAL_ENV = "HARNESS_SWEEP_TOTAL"
JOB_LOG, INVOCATIONS = "sweep_log.jsonl", "invocations.jsonl"


def append(path: Path, event: dict) -> None:
    """One line, one write (O_APPEND): concurrent jobs never interleave within a line."""
    line = (json.dumps(event, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read(path: Path, invocation: str = None) -> List[dict]:
    if not Path(path).is_file():
        return []
    events = [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]
    return [e for e in events if invocation is None or e.get("invocation") == invocation]


def log_outcome(sweep_dir: Path, job_num: int, run_dir: Path, outcome: str, seconds: float,
                run_id: str = None, name: str = None, reason: str = None, message: str = None) -> None:
    append(Path(sweep_dir) / JOB_LOG, {
        "invocation": os.environ.get(INVOCATION_ENV), "time": time.time(), "job": job_num,
        "dir": str(run_dir), "run_id": run_id, "name": name, "outcome": outcome, "seconds": round(seconds, 2),
        "reason": reason, "message": message})


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m{rem % 60:02d}s" if h else f"{rem // 60}m{rem % 60:02d}s"


def counts(events: List[dict]) -> dict:
    """Outcomes: success, skipped (already done), failed, held (another invocation was running it)."""
    out = {"success": 0, "skipped": 0, "failed": 0, "held": 0}
    for e in events:
        out[e["outcome"]] = out.get(e["outcome"], 0) + 1
    return out


def progress_line(sweep_dir: Path) -> str:
    """'[sweep] 5/22 jobs (3 ran, 1 skipped, 1 failed) | elapsed 4m12s | ETA 12m30s'."""
    invocation = os.environ.get(INVOCATION_ENV)
    total = int(os.environ.get(TOTAL_ENV, "0"))
    events = read(Path(sweep_dir) / JOB_LOG, invocation)
    starts = [e for e in read(Path(sweep_dir) / INVOCATIONS, invocation) if e.get("event") == "start"]
    c = counts(events)
    done = len(events)
    ran = [e["seconds"] for e in events if e["outcome"] not in ("skipped", "held")]
    elapsed = time.time() - starts[0]["time"] if starts else sum(ran)
    eta = (sum(ran) / len(ran)) * max(total - done, 0) if ran else 0.0
    return (f"[sweep] {done}/{total or '?'} jobs ({c['success']} ran, {c['skipped']} skipped, {c['failed']} failed)"
            f" | elapsed {_duration(elapsed)} | ETA {_duration(eta) if total else '?'}")


def summary(sweep_dir: Path, invocation: str, total: int, wall_seconds: float) -> str:
    events = read(Path(sweep_dir) / JOB_LOG, invocation)
    c = counts(events)
    lines = [f"[sweep] done in {_duration(wall_seconds)}: {total} jobs, {c['success']} succeeded,"
             f" {c['skipped']} skipped (already done), {c['failed']} failed"
             + (f", {c['held']} left to another invocation running them" if c["held"] else "")
             + (f", {total - len(events)} without an outcome (killed?)" if len(events) < total else "")
             + f" -> {sweep_dir}"]
    for e in events:
        if e["outcome"] == "failed":
            job = Path(e["dir"]).name  # the job's own overrides: two jobs of one name stay apart
            lines.append(f"[sweep]   failed ({e['reason']}): {e['name'] or job} [{job}]: {e['message']}")
        elif e["outcome"] == "held":
            lines.append(f"[sweep]   held: {e['dir']}: {e['message']}; run the sweep again once it has finished")
    return "\n".join(lines)
