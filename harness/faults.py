"""Fault injection for tests of failure isolation and resume (never set in normal use).

HARNESS_FAULT="<kind>@<step>[:<match>],..." fires inside the training loop after optimizer step
<step> of every run whose name (task-method-model-s<seed>) contains <match>:
  nan    the step's loss becomes NaN (-> the divergence check, reason 'diverged')
  error  RuntimeError('injected fault')
  oom    torch.OutOfMemoryError (-> reason 'oom')
  kill   SIGKILL to this process (a real `kill -9`: nothing is cleaned up)
  slow   sleep <step> milliseconds after every step (stretches a run for time-limit tests)
It is read from the environment, not the config, so it never changes a run's identity: the same
command without the variable is the same job, which is what the resume tests need.
"""

import os
import signal
import time
from dataclasses import dataclass
from typing import List

KINDS = ("nan", "error", "oom", "kill", "slow")


@dataclass
class Fault:
    kind: str
    step: int
    match: str = ""


def parse(spec: str) -> List[Fault]:
    faults = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        head, _, match = item.partition(":")
        kind, _, step = head.partition("@")
        if kind not in KINDS or not step.isdigit():
            raise ValueError(f"HARNESS_FAULT item '{item}' is not <{'|'.join(KINDS)}>@<int>[:<match>]")
        faults.append(Fault(kind, int(step), match))
    return faults


class Injector:
    def __init__(self, run_name: str, spec: str = None):
        spec = os.environ.get("HARNESS_FAULT", "") if spec is None else spec
        self.faults = [f for f in parse(spec) if f.match in run_name]
        if self.faults:
            print(f"[harness] fault injection armed: {self.faults}")

    def after_step(self, step: int, loss):
        """Called once per optimizer step with the step's loss tensor; returns the (maybe poisoned) loss."""
        for f in self.faults:
            if f.kind == "slow":
                time.sleep(f.step / 1000)
            elif f.step == step:
                loss = self._fire(f, step, loss)
        return loss

    @staticmethod
    def _fire(fault: Fault, step: int, loss):
        import torch
        if fault.kind == "nan":
            return loss * float("nan")
        if fault.kind == "error":
            raise RuntimeError(f"injected fault at step {step}")
        if fault.kind == "oom":
            raise torch.OutOfMemoryError(f"injected out-of-memory at step {step}")
        os.kill(os.getpid(), signal.SIGKILL)
        return loss
