"""The run record: self-describing files in the run directory, written atomically.

  config.yaml     the resolved config
  metrics.jsonl   one JSON object per logged event (see tracking.JsonlSink)
  result.json     status, identity, metrics, params, cost, inferred settings, provenance
Analysis reads these files only.
"""

import hashlib
import json
import os
import tempfile
import time
import traceback
from pathlib import Path

SCHEMA_VERSION = 1
RECORD_FILES = ("result.json", "metrics.jsonl", "config.yaml")
# Groups that change how a run is observed, not what it computes: left out of the identity.
NOT_IDENTITY = ("logger",)


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file in the same directory, then rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def run_identity(resolved: dict) -> str:
    """Hash of the resolved config without output paths and observation-only groups."""
    core = {k: v for k, v in resolved.items() if k not in NOT_IDENTITY}
    return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_record(run_dir: Path):
    path = Path(run_dir) / "result.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def prepare_run_dir(run_dir: Path) -> str:
    """Refuse a directory that holds a successful run; move an earlier failed attempt aside.

    Returns a note for the log ('' when the directory was fresh). Nothing is deleted or overwritten.
    """
    from harness.errors import HarnessError
    run_dir = Path(run_dir)
    previous = read_record(run_dir)
    if previous is not None and previous.get("status") == "success":
        raise HarnessError(f"{run_dir} already holds a successful run ({previous.get('run_id')});"
                           " choose another hydra.run.dir")
    present = [f for f in RECORD_FILES if (run_dir / f).exists()]
    if not present:
        return ""
    k = 1
    while (run_dir / f"attempt-{k}").exists():
        k += 1
    aside = run_dir / f"attempt-{k}"
    aside.mkdir()
    for f in present:
        os.replace(run_dir / f, aside / f)
    return f"earlier attempt's files moved to {aside}"


class RunRecord:
    """Accumulates the record of one run and writes result.json at each status change."""

    def __init__(self, run_dir: Path, resolved: dict, labels: dict, overrides):
        self.path = Path(run_dir) / "result.json"
        self.started = time.time()
        self.data = {
            "schema_version": SCHEMA_VERSION,
            "status": "running",
            "error": None,
            "run_id": run_identity(resolved),
            "labels": labels,
            "seed": resolved["train"]["seed"],
            "overrides": list(overrides),
            "started_at": self.started,
            "finished_at": None,
            "report_metric": None,
            "metrics": {},
            "evaluation": {},
            "params": {},
            "cost": {},
            "inferred": {},
            "provenance": {},
            "data": {},
            "ranks": {},
            "method_report": {},
            "flags": [],
            "config": resolved,
        }

    def update(self, **fields) -> None:
        self.data.update(fields)

    def write(self) -> None:
        write_json_atomic(self.path, self.data)

    def finish(self, status: str, exc: BaseException = None) -> None:
        self.data["status"] = status
        self.data["finished_at"] = time.time()
        if exc is not None:
            self.data["error"] = {"type": type(exc).__name__, "message": str(exc),
                                  "reason": getattr(exc, "reason", "error"),
                                  "traceback": "".join(traceback.format_exception(exc))}
        self.write()
