"""Resumable training state in <run_dir>/checkpoint/, enough to continue exactly where a run stopped.

state.pt  trainable weights and every buffer, optimizer and LR-scheduler state, RNG states
          (python, numpy, torch CPU/CUDA), the loop's counters (step, epoch, batch within the
          epoch, tokens, timings, rank history), the evaluation protocol's state and the method's
          own state (AdaLoRA's importance scores and rank pattern).
meta.json run_id and step, readable without torch.
A new checkpoint is written beside the old one and renamed over it, so a kill at any moment leaves
either the old or the new one. It is deleted when the run succeeds.
"""

import json
import os
import random
import shutil
from pathlib import Path
from typing import Optional

from harness.results import write_json_atomic

CHECKPOINT_DIR = "checkpoint"


def read_meta(run_dir: Path) -> Optional[dict]:
    path = Path(run_dir) / CHECKPOINT_DIR / "meta.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _rng_state() -> dict:
    import numpy as np
    import torch
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import numpy as np
    import torch
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _model_state(model) -> dict:
    """Trainable parameters and persistent buffers (masks, running statistics); frozen weights are
    rebuilt from the base model and the seed."""
    params = dict(model.named_parameters())
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
            if k not in params or params[k].requires_grad}


class Checkpointer:
    """Saves every `every` steps (None: only when asked, e.g. on preemption) and restores."""

    def __init__(self, run_dir: Path, run_id: str, every: Optional[int]):
        self.dir = Path(run_dir) / CHECKPOINT_DIR
        self.run_id = run_id
        self.every = every

    def due(self, step: int, total: int) -> bool:
        return bool(self.every) and step % self.every == 0 and step < total

    def save(self, step: int, model, optimizer, scheduler, method, evaluator, loop_state: dict) -> None:
        import torch
        tmp = self.dir.with_name(CHECKPOINT_DIR + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        torch.save({"model": _model_state(model), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": _rng_state(), "loop": loop_state,
                    "evaluator": evaluator.state_dict(), "method": method.state_dict(model)}, tmp / "state.pt")
        write_json_atomic(tmp / "meta.json", {"run_id": self.run_id, "step": step})
        old = self.dir.with_name(CHECKPOINT_DIR + ".old")
        if self.dir.exists():
            os.replace(self.dir, old)
        os.replace(tmp, self.dir)
        shutil.rmtree(old, ignore_errors=True)

    def load(self, model, optimizer, scheduler, method, evaluator) -> dict:
        """Restore everything into freshly built objects; return the loop state."""
        import torch
        saved = torch.load(self.dir / "state.pt", map_location="cpu", weights_only=False)
        result = model.load_state_dict(saved["model"], strict=False)
        if result.unexpected_keys:
            raise RuntimeError(f"checkpoint holds tensors the model lacks: {result.unexpected_keys[:3]}")
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        evaluator.load_state_dict(saved["evaluator"])
        method.load_state_dict(model, saved["method"])
        _set_rng_state(saved["rng"])
        return saved["loop"]

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
