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
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

SCHEMA_VERSION = 1
RECORD_FILES = ("result.json", "metrics.jsonl", "config.yaml")
SET_ASIDE = ("attempt-", "superseded-")  # folders holding earlier attempts, never moved again
LOCK_FILE = ".lock"  # held by the process writing this run directory (RunLock)
# Groups that change how a run is observed, not what it computes: left out of every identity.
NOT_IDENTITY = ("logger",)
# Settings that cannot change what a run computes (display, threads, eval batching, checkpoint
# cadence, keeping the artifact, the budget a budget-matched sweep matched it to): left out of
# run_id and config_id, still recorded in `config`.
NON_SEMANTIC = {"train": ("progress", "num_threads", "eval_batch_size", "checkpoint_every", "save_artifact"),
                "method": ("budget",)}
# What varies *within* one configuration (its seeds and its LR grid): left out of config_id only.
# Methods add their own LR knobs and per-run paths through Method.identity_view.
PER_RUN = {"train": ("seed", "base_lr"), "eval": ("split_seed",), "method": ("lr", "lr_multiplier")}
# Settings only the retention probes read (harness/probes). They enter both identities only when
# eval.retention names a probe: a run without probes keeps the identity it had before probes
# existed, and a run with probes is never skipped because its probe-less twin succeeded.
PROBE_SETTINGS = {"eval": ("retention",), "model": ("pooling",)}


def _file_mode() -> int:
    """What open() would give a new file under the process umask (mkstemp's own 0600 would make
    records private while metrics.jsonl beside them is not)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file in the same directory, then rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
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


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _without(resolved: dict, drop: dict) -> dict:
    """A copy of resolved without the groups in NOT_IDENTITY and the {group: keys} in drop."""
    core = {}
    for group, value in resolved.items():
        if group in NOT_IDENTITY:
            continue
        if isinstance(value, dict) and group in drop:
            value = {k: v for k, v in value.items() if k not in drop[group]}
        core[group] = value
    return core


def without_inert_settings(resolved: dict) -> dict:
    """resolved without PROBE_SETTINGS when no probe runs (eval.retention empty or absent), and
    without task.label_scaling on a classification task (it only acts on regression targets, so a
    classification run keeps the identity it had before the setting existed)."""
    task = resolved.get("task")
    if isinstance(task, dict) and task.get("label_type") != "regression" and "label_scaling" in task:
        resolved = {**resolved, "task": {k: v for k, v in task.items() if k != "label_scaling"}}
    if (resolved.get("eval") or {}).get("retention"):
        return resolved
    return {group: {k: v for k, v in value.items() if k not in PROBE_SETTINGS[group]}
            if isinstance(value, dict) and group in PROBE_SETTINGS else value for group, value in resolved.items()}


def run_identity(resolved: dict, execution: Optional[dict] = None) -> str:
    """One run: the resolved config without observation-only groups and non-semantic settings,
    plus what device and precision resolved to (harness.runtime.execution). Output paths are not
    part of the config. Skip/resume in sweeps match on it."""
    return _hash(_with_execution(_without(without_inert_settings(resolved), NON_SEMANTIC), execution))


def _with_execution(core: dict, execution: Optional[dict]) -> dict:
    return {**core, "execution": execution} if execution else core


def config_identity(resolved: dict, execution: Optional[dict] = None) -> str:
    """One configuration (what tables group by): run_identity without the seed and the learning
    rate, so the seeds and LRs of a configuration share it and nothing else does. The method may
    rewrite its own part (LoRI-S: its LR ratio is an LR, its source run is named by that run's
    configuration, not by a per-seed path)."""
    from harness.methods import METHODS
    drop = {g: NON_SEMANTIC.get(g, ()) + PER_RUN.get(g, ()) for g in set(NON_SEMANTIC) | set(PER_RUN)}
    core = _without(without_inert_settings(resolved), drop)
    method = core.get("method")
    if isinstance(method, dict) and method.get("kind") in METHODS:
        core["method"] = METHODS.get(method["kind"]).identity_view(method)
    return _hash(_with_execution(core, execution))


def read_record(run_dir: Path):
    path = Path(run_dir) / "result.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def find_success(sweep_dir: Path, run_id: str) -> Optional[dict]:
    """The successful record of run_id anywhere in a sweep directory (not in set-aside folders)."""
    for path in sorted(Path(sweep_dir).rglob("result.json")):
        if any(part.startswith(SET_ASIDE) for part in path.relative_to(sweep_dir).parts):
            continue
        record = read_record(path.parent)
        if record and record.get("status") == "success" and record.get("run_id") == run_id:
            return {**record, "record_dir": str(path.parent)}
    return None


class RunLock:
    """Exclusive lock on a run directory: a POSIX record lock (fcntl.lockf, which NFS honours
    through lockd) on <run_dir>/.lock, held for the whole run and released by the OS if the process
    dies (kill -9 included). The file names its holder and exists only while a run holds it: release
    unlinks it before unlocking, and acquire re-checks that the file it locked is still the one at
    that path (the standard guard against locking a file another process just unlinked)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fh = None

    def acquire(self, wait_seconds: float = 0) -> bool:
        """True if this process now holds the lock; False if another process holds it (after up to
        wait_seconds). A file system without working locks is an error, never a silent 'held'."""
        import socket
        deadline = time.time() + wait_seconds
        while True:
            fh = open(self.path, "a+", encoding="utf-8")
            if self._try_lock(fh):
                if self._still_ours(fh):
                    break
                fh.close()  # unlinked by its previous holder between our open and our lock: retry
                continue
            fh.close()
            if time.time() >= deadline:
                return False
            time.sleep(min(5.0, max(0.1, deadline - time.time())))
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        self._fh = fh
        return True

    def _try_lock(self, fh) -> bool:
        import errno
        import fcntl
        try:
            fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            fh.close()
            from harness.errors import HarnessError
            raise HarnessError(f"cannot lock {self.path} ({exc.strerror}): this file system does not support"
                               " locks; put runs and sweeps on one that does") from exc

    def _still_ours(self, fh) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            return False

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown holder"
        except OSError:
            return "unknown holder"

    def release(self) -> None:
        """Unlink the lock file (still holding it), then unlock; a directory left empty (a refused
        run) is removed."""
        if self._fh is None:
            return
        self.path.unlink(missing_ok=True)
        self._fh.close()  # closing releases the lock
        self._fh = None
        run_dir = self.path.parent
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()


def _entries(run_dir: Path):
    """What a run directory holds, apart from its lock and earlier set-aside attempts."""
    return [e for e in run_dir.iterdir() if e.name != LOCK_FILE and not e.name.startswith(SET_ASIDE)]


@dataclass
class Preparation:
    """What to do in a run directory: 'fresh' (start), 'resume' (continue from its checkpoint) or
    'skip' (a sweep job whose successful record is already there)."""
    action: str
    note: str = ""
    previous: Optional[dict] = None
    resume_step: int = 0


def _move_aside(run_dir: Path, prefix: str) -> Path:
    """Move everything in run_dir except earlier set-aside folders into run_dir/<prefix>-k/."""
    k = 1
    while (run_dir / f"{prefix}-{k}").exists():
        k += 1
    aside = run_dir / f"{prefix}-{k}"
    aside.mkdir()
    for entry in _entries(run_dir):
        if entry != aside:
            os.replace(entry, aside / entry.name)
    return aside


def _truncate_events(path: Path, last_step: int) -> None:
    """Drop events logged after the checkpoint's step: the resumed run logs them again."""
    if path.is_file():
        kept = [ln for ln in path.read_text().splitlines(keepends=True) if _step_of(ln) <= last_step]
        write_text_atomic(path, "".join(ln if ln.endswith("\n") else ln + "\n" for ln in kept))


def _step_of(line: str) -> float:
    """The step of a logged event; a line torn by a kill (or blank) is dropped: infinity."""
    try:
        return json.loads(line).get("step", 0) if line.strip() else float("inf")
    except json.JSONDecodeError:
        return float("inf")


def prepare_run_dir(run_dir: Path, run_id: str, in_sweep: bool = False) -> Preparation:
    """Decide between fresh start, resume and skip. Nothing is deleted or overwritten: earlier
    attempts are moved into attempt-k/, a sweep job's stale success (older config) into superseded-k/."""
    from harness.checkpoint import find_loadable
    from harness.errors import HarnessError
    run_dir = Path(run_dir)
    previous = read_record(run_dir)
    if previous is not None and previous.get("status") == "success":
        if not in_sweep:
            raise HarnessError(f"{run_dir} already holds a successful run ({previous.get('run_id')});"
                               " choose another hydra.run.dir")
        if previous.get("run_id") == run_id:
            return Preparation("skip", previous=previous)
        aside = _move_aside(run_dir, "superseded")
        return Preparation("fresh", note=f"a success of another config ({previous.get('run_id')}) moved to {aside}")
    found = find_loadable(run_dir)  # unreadable checkpoints moved aside: the one load() will read
    meta = found.meta
    if meta and meta.get("run_id") == run_id and previous is not None and previous.get("run_id") == run_id:
        _truncate_events(run_dir / "metrics.jsonl", meta["step"])
        return Preparation("resume", note=found.note(f"resuming from {found.name}/ at step {meta['step']}"),
                           previous=previous, resume_step=meta["step"])
    if not _entries(run_dir):
        return Preparation("fresh")
    aside = _move_aside(run_dir, "attempt")
    return Preparation("fresh", note=found.note(("starting fresh; " if found.moved else "")
                                                + f"earlier attempt's files moved to {aside}"))


def failure_reason(exc: BaseException) -> str:
    """'diverged', 'oom', 'interrupted' (killed by a signal handler / Ctrl-C) or 'error'."""
    if getattr(exc, "reason", None):
        return exc.reason
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower():
        return "oom"
    if isinstance(exc, (SystemExit, KeyboardInterrupt)):
        return "interrupted"
    return "error"


class RunRecord:
    """Accumulates the record of one run and writes result.json at each status change."""

    def __init__(self, run_dir: Path, resolved: dict, labels: dict, overrides, execution: Optional[dict] = None):
        self.path = Path(run_dir) / "result.json"
        self.started = time.time()
        self.data = {
            "schema_version": SCHEMA_VERSION,
            "status": "running",
            "error": None,
            "run_id": run_identity(resolved, execution),
            "config_id": config_identity(resolved, execution),
            "execution": execution,
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
            "attempts": [{"started_at": self.started, "resumed_from_step": 0}],
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
                                  "reason": failure_reason(exc),
                                  "traceback": "".join(traceback.format_exception(exc))}
        self.write()
