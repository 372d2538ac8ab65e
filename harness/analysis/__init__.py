"""Sweep analysis: run records -> tables, plots and paired comparisons (reads result.json and
metrics.jsonl only). `python -m harness.analysis SWEEP...` writes results/<name>/; notebooks call
`build()` and show what it returns."""

from harness.analysis.report import FIGURES, Report, build, write

__all__ = ["FIGURES", "Report", "build", "write", "resolve_sweep"]


def resolve_sweep(spec: str, sweeps_root: str = "sweeps"):
    """A sweep directory, or a sweep name under sweeps/."""
    from pathlib import Path
    path = Path(spec)
    if path.is_dir():
        return path
    named = Path(sweeps_root) / spec
    if named.is_dir():
        return named
    raise FileNotFoundError(f"no sweep directory '{spec}' (nor {named})")
