"""Device, precision, threads and seeding: chosen once per run, printed with the reason, recorded."""

import contextlib
import os
import random
from dataclasses import dataclass, field

from harness.errors import HarnessError


@dataclass
class Runtime:
    device: str
    precision: str  # fp32 | bf16 (autocast)
    inferred: dict = field(default_factory=dict)  # setting -> {"value", "reason"}

    def autocast(self):
        import torch
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.split(":")[0], dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def keep_fp32(self, model, names) -> list:
        """Under bf16 autocast, run the modules whose own name is in `names` (the task head) in fp32:
        logits, hence the loss and every metric (STS-B's correlations included), are then computed
        from fp32 values instead of bf16-rounded ones (~3 significant digits). The head is a tiny share
        of the step. Found after the method is applied, so peft's wrapper around the head is what is
        wrapped (wrapping the original first would leave a copy pointing at it). Returns the paths."""
        if self.precision != "bf16":
            return []
        wrapped = []
        for path, module in model.named_modules():
            if path.split(".")[-1] in names and not any(path.startswith(w + ".") for w in wrapped):
                module.forward = _fp32_forward(module.forward, self.device.split(":")[0])
                wrapped.append(path)
        return wrapped

    def to_device(self, batch: dict) -> dict:
        if self.device == "cpu":
            return batch
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}


def _fp32_forward(forward, device_type: str):
    import torch

    def fp32(x):
        return x.float() if torch.is_tensor(x) and x.is_floating_point() else x

    def run_in_fp32(*args, **kwargs):
        with torch.autocast(device_type=device_type, enabled=False):
            return forward(*[fp32(a) for a in args], **{k: fp32(v) for k, v in kwargs.items()})
    return run_in_fp32


def _choose_device(requested: str):
    import torch
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda", f"auto: CUDA available ({torch.cuda.get_device_name(0)})"
        return "cpu", "auto: CUDA not available"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"train.device={requested} but CUDA is not available on this machine")
    if requested != "cpu" and not requested.startswith("cuda"):
        raise HarnessError(f"train.device must be auto, cpu, cuda or cuda:N (got '{requested}')")
    return requested, "set by train.device"


# CPU features that execute bf16 matmuls natively (oneDNN uses them; elsewhere bf16 is emulated and
# slower than fp32). On this team's AMD EPYC a bf16 matmul is ~3x an fp32 one and a LoRA step ~1.6x.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = "/proc/cpuinfo"


def cpu_bf16_flags() -> list:
    """The native-bf16 flags this CPU advertises (Linux /proc/cpuinfo; [] where it cannot be read)."""
    try:
        with open(CPUINFO) as fh:
            text = fh.read()
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return [f for f in CPU_BF16_FLAGS if f in flags]


def _choose_precision(requested: str, device: str):
    import torch
    if requested == "auto":
        if device.startswith("cuda"):
            if torch.cuda.is_bf16_supported():
                return "bf16", "auto: bf16 autocast on a bf16-capable GPU (weights stay fp32)"
            return "fp32", "auto: GPU without bf16"
        flags = cpu_bf16_flags()
        if flags:
            return "bf16", f"auto: CPU supports bf16 ({', '.join(flags)}): autocast, weights stay fp32"
        return "fp32", (f"auto: CPU lacks native bf16 (none of {', '.join(CPU_BF16_FLAGS)} in {CPUINFO}),"
                        " where bf16 would be emulated and slower")
    if requested == "bf16" and device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        raise HarnessError("train.precision=bf16 but this GPU does not support bf16")
    return requested, "set by train.precision"


def execution(train_cfg) -> dict:
    """What train.device / train.precision resolve to here ('auto' included): part of both
    identities, so a CPU fp32 run and a GPU bf16 run of one config are never the same run or
    configuration (a GPU sweep does not skip a job because a CPU run of it succeeded)."""
    device, _ = _choose_device(train_cfg.device)
    precision, _ = _choose_precision(train_cfg.precision, device)
    return {"device_type": device.split(":")[0], "precision": precision}


def seed_everything(seed: int, deterministic: bool) -> None:
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def setup_runtime(train_cfg) -> Runtime:
    import torch
    device, device_why = _choose_device(train_cfg.device)
    precision, precision_why = _choose_precision(train_cfg.precision, device)
    slurm_cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if train_cfg.num_threads is not None:
        torch.set_num_threads(train_cfg.num_threads)
        threads_why = "set by train.num_threads"
    elif slurm_cpus:
        torch.set_num_threads(int(slurm_cpus))  # SLURM does not confine torch's default to the allocation
        threads_why = "SLURM_CPUS_PER_TASK"
    else:
        threads_why = "torch default"
    seed_everything(train_cfg.seed, train_cfg.deterministic)
    rt = Runtime(device=device, precision=precision)
    rt.inferred = {
        "device": {"value": device, "reason": device_why},
        "precision": {"value": precision, "reason": precision_why},
        "cpu_threads": {"value": torch.get_num_threads(), "reason": threads_why},
    }
    return rt
