"""What `python -m harness --help` adds to Hydra's help: the named sweeps with their job counts.

Hydra renders the help from `hydra.help.template` (conf/config.yaml), which reads this text through
the `${harness_sweeps:}` resolver. The counts come from harness.sweeper.plan, the expansion a sweep
itself launches, so they are never typed anywhere. They are computed before Hydra starts and only
when --help is asked for (plan composes with its own Hydra instance), so a normal run pays nothing.
"""

from pathlib import Path
from typing import List, Optional

SWEEP_DIR = Path(__file__).resolve().parent.parent / "conf" / "sweep"
HELP_FLAGS = ("--help", "-h")
_text: Optional[str] = None


def wanted(argv: List[str]) -> bool:
    """True when Hydra is going to print the application help."""
    return any(arg in HELP_FLAGS for arg in argv)


def sweep_names() -> List[str]:
    return sorted(p.stem for p in SWEEP_DIR.glob("*.yaml"))


def _uses_profile(name: str) -> bool:
    """Does the sweep take its budget from conf/profile/ (so that `profile=gpu` applies)?"""
    from omegaconf import OmegaConf
    defaults = OmegaConf.to_container(OmegaConf.load(SWEEP_DIR / f"{name}.yaml")).get("defaults") or []
    return any(isinstance(d, dict) and any(str(k).lstrip("/") == "profile" for k in d) for d in defaults)


def _count(name: str, overrides=()) -> int:
    from harness.sweeper import plan
    return sum(len(block) for block in plan(name, list(overrides)))


def _gpu_count(name: str) -> str:
    """The count under profile=gpu, or why it cannot be had here: a budget-matched sweep is solved on
    the profile's model, whose config may need the hub."""
    from harness.cli_errors import describe
    try:
        return str(_count(name, ["profile=gpu"]))
    except Exception as exc:  # noqa: BLE001 - the default count above still stands
        return f"not expanded here: {describe(exc)[0]}"


def sweep_table() -> str:
    """One line per file in conf/sweep: its name, its job count, and its count under profile=gpu."""
    from harness.cli_errors import describe
    names = sweep_names()
    width = max(map(len, names), default=0)
    lines = []
    for name in names:
        try:
            text = f"{_count(name)} jobs"
        except Exception as exc:  # noqa: BLE001 - a broken sweep file must not hide the help
            text = f"cannot be expanded: {describe(exc)[0]}"
        else:
            if _uses_profile(name):
                text += f" (profile=gpu: {_gpu_count(name)})"
        lines.append(f"  {name.ljust(width)}  {text}")
    return "\n".join(lines)


def prepare() -> None:
    """Compute the sweep table now (before Hydra starts)."""
    global _text
    _text = sweep_table()


def _resolve() -> str:
    if _text is not None:
        return _text
    # Resolved without --help (e.g. `--cfg hydra --resolve`): names only, no second Hydra inside this one.
    return "\n".join(f"  {name}  (python -m harness.sweeper {name} prints its jobs and their count)"
                     for name in sweep_names())


def register() -> None:
    from omegaconf import OmegaConf
    OmegaConf.register_new_resolver("harness_sweeps", _resolve, replace=True)
