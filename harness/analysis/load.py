"""Sweep directories -> one pandas row per run, read from the run records only (result.json,
metrics.jsonl). Job directories are the immediate children holding a result.json; set-aside
attempts (attempt-k/, superseded-k/) are history, not results, and are never read."""

import json
from pathlib import Path
from typing import Iterable, List

import pandas as pd

from harness.knobs import knob_label, knobs

CONFIG_COLUMNS = ["task", "model", "method", "knobs"]  # one method configuration (rows of table.md)


def job_dirs(sweep_dir: Path) -> List[Path]:
    return sorted(p.parent for p in Path(sweep_dir).glob("*/result.json"))


def _row(record: dict, run_dir: Path) -> dict:
    cfg = record["config"]
    method = cfg["method"]
    params, cost = record.get("params", {}), record.get("cost", {})
    evaluation = record.get("evaluation", {})
    metric = record.get("report_metric")
    inferred_lr = record.get("inferred", {}).get("lr", {}).get("value")
    error = record.get("error") or {}
    return {
        "dir": str(run_dir), "run_id": record["run_id"], "status": record["status"],
        "reason": error.get("reason"), "error": (error.get("message") or "").splitlines()[0] if error else None,
        "task": cfg["task"]["name"], "model": cfg["model"]["name"], "method": method["label"],
        "kind": method["kind"], "knobs": knob_label(method), **{f"knob_{k}": v for k, v in knobs(method).items()},
        "seed": record["seed"], "lr": inferred_lr, "base_lr": cfg["train"]["base_lr"],
        "lr_multiple": (inferred_lr / cfg["train"]["base_lr"]) if inferred_lr else None,
        "steps": cfg["train"]["max_steps"], "protocol": evaluation.get("protocol"),
        "metric_name": metric, "metric": record.get("metrics", {}).get(metric),
        # what LR selection may look at: the protocol's selection part, never the reported one
        "select_score": evaluation.get("selection_score", record.get("metrics", {}).get(metric)
                                       if evaluation.get("protocol") == "last" else None),
        "adapter_params": params.get("adapter"), "head_params": params.get("head"),
        "trainable_params": params.get("trainable"), "pct_of_base": params.get("adapter_pct_of_base"),
        "train_seconds": cost.get("train_seconds"), "peak_memory_mb": cost.get("peak_memory_mb"),
        "tokens_per_second": cost.get("tokens_per_second"), "flags": list(record.get("flags", [])),
        "git_sha": record.get("provenance", {}).get("git_sha"),
        "git_dirty": record.get("provenance", {}).get("git_dirty"),
        "device": record.get("provenance", {}).get("device"),
    }


def load_runs(sweep_dirs: Iterable[Path]) -> pd.DataFrame:
    rows = []
    for sweep_dir in sweep_dirs:
        for run_dir in job_dirs(sweep_dir):
            record = json.loads((run_dir / "result.json").read_text())
            rows.append(_row(record, run_dir))
    if not rows:
        raise FileNotFoundError(f"no run records (*/result.json) under {[str(d) for d in sweep_dirs]}")
    runs = pd.DataFrame(rows)
    runs["loss_flag"] = [loss_never_fell(Path(d)) if s == "success" else False
                         for d, s in zip(runs["dir"], runs["status"])]
    return runs


def events(run_dir: Path) -> List[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def loss_curve(run_dir: Path) -> pd.Series:
    points = {e["step"]: e["train/loss"] for e in events(run_dir) if isinstance(e.get("train/loss"), (int, float))}
    return pd.Series(points, dtype=float).sort_index()


def loss_never_fell(run_dir: Path, tolerance: float = 0.02) -> bool:
    """The ReFT-on-BoolQ plateau: the last quarter of the curve is no lower than its first window."""
    curve = loss_curve(run_dir)
    if len(curve) < 4:
        return False
    tail = curve.iloc[-max(1, len(curve) // 4):].mean()
    return bool(tail >= curve.iloc[0] * (1 - tolerance))


def rank_events(run_dir: Path):
    """(steps, {module: [rank per step]}) from the rank/<module> events."""
    rows = [e for e in events(run_dir) if any(k.startswith("rank/") for k in e)]
    modules = sorted({k[5:] for e in rows for k in e if k.startswith("rank/")} - {"total", "budget"})
    return [e["step"] for e in rows], {m: [e.get(f"rank/{m}") for e in rows] for m in modules}
