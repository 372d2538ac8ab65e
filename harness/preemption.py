"""Save a checkpoint before submitit requeues a preempted or timed-out SLURM job.

submitit installs a handler for its preemption signal (USR2 unless SUBMITIT_PREEMPT_SIGNAL says
otherwise) that requeues the job and exits at once, wherever the program is. `install()` wraps
it: the signal only sets a flag; the training loop checks the flag after each optimizer step,
writes a checkpoint there, and then hands over to submitit's handler (requeue + exit). Outside
submitit (no handler installed) nothing changes.
"""

import os
import signal

_pending = None  # (signum, submitit's handler) once the signal has arrived


def _signal_number() -> int:
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return getattr(signal, name if name.startswith("SIG") else f"SIG{name}")


def install() -> bool:
    sig = _signal_number()
    original = signal.getsignal(sig)
    if not callable(original) or getattr(original, "_harness_wrapper", False):
        return False

    def defer(signum, frame):
        global _pending
        _pending = (signum, original)
        print(f"[harness] signal {signal.Signals(signum).name}: checkpoint at the next step, then requeue",
              flush=True)

    defer._harness_wrapper = True
    signal.signal(sig, defer)
    return True


def pending() -> bool:
    return _pending is not None


def hand_over() -> None:
    """Let submitit requeue the job and exit (raises SystemExit)."""
    signum, original = _pending
    original(signum, None)
