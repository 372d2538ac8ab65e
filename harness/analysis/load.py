"""Sweep directories -> one pandas row per run, read from the run records only (result.json,
metrics.jsonl). Job directories are the immediate children holding a result.json; set-aside
attempts (attempt-k/, superseded-k/) are history, not results, and are never read.

Runs are grouped by `config_id` (all seeds and LRs of one configuration share it, nothing else
does). The display label (`method` + knobs) is for people only; when two configurations of one
task would show the same label, the config keys that tell them apart are appended in brackets.
"""

import json
from pathlib import Path
from typing import Dict, Iterable, List

import numpy as np
import pandas as pd

from harness.analysis import retention
from harness.knobs import knob_label, knobs

CONFIG_KEY = "config_id"  # one method configuration = one row of table.md
DISPLAY_COLUMNS = ["task", "model", "method", "kind", "knobs", "label"]
# What the analysis asks of a configuration's method (its declarations, harness.methods.base), so
# that no table or figure names a method: the reference of comparisons, the LoRA of the LR ratio,
# rank-adaptive methods (rank figures) and the kind a method is compared with at a matched count.
ROLE_COLUMNS = ["full_finetuning", "in_lora_lr_ratio", "rank_adaptive", "matched_counterpart"]
MAX_DIFF_KEYS = 4  # past this many differing keys a bracket stops being readable


def job_dirs(sweep_dir: Path) -> List[Path]:
    return sorted(p.parent for p in Path(sweep_dir).glob("*/result.json"))


def config_id(record: dict) -> str:
    """The record's own config_id; older records lack it, so recompute it from their config."""
    if record.get("config_id"):
        return record["config_id"]
    from harness.results import config_identity
    return config_identity(record["config"])


def _roles(method: dict) -> dict:
    """ROLE_COLUMNS of a record's method config, as its method declares them (all False for a kind
    no longer registered)."""
    from harness.methods import METHODS
    if method.get("kind") not in METHODS:
        return {**dict.fromkeys(ROLE_COLUMNS, False), "matched_counterpart": None}
    cls = METHODS.get(method["kind"])
    return {"full_finetuning": cls.is_full_finetuning, "in_lora_lr_ratio": cls.in_lora_lr_ratio(method),
            "rank_adaptive": cls.rank_adaptive, "matched_counterpart": cls.matched_counterpart}


def _baseline_metric(record: dict) -> float:
    """The constant predictor's value of the report metric (NaN for records without a baseline)."""
    base = record.get("baseline") or {}
    values = base.get("metrics") or {}
    value = values.get(base.get("metric"), values.get(record.get("report_metric")))
    return np.nan if value is None else value


def _row(record: dict, run_dir: Path) -> dict:
    cfg = record["config"]
    method = cfg["method"]
    params, cost = record.get("params", {}), record.get("cost", {})
    evaluation = record.get("evaluation", {})
    metric = record.get("report_metric")
    inferred_lr = record.get("inferred", {}).get("lr", {}).get("value")
    error = record.get("error") or {}
    flags = list(record.get("flags", []))
    return {
        "dir": str(run_dir), "run_id": record["run_id"], "config_id": config_id(record), "status": record["status"],
        "reason": error.get("reason"), "error": (error.get("message") or "").splitlines()[0] if error else None,
        "task": cfg["task"]["name"], "model": cfg["model"]["name"], "method": method["label"],
        "kind": method["kind"], "knobs": knob_label(method),
        "budget": method.get("budget"),  # the budget a budget-matched sweep matched it to (else None)
        **{f"knob_{k}": v for k, v in knobs(method).items()},
        **_roles(method),
        "seed": record["seed"], "lr": inferred_lr, "base_lr": cfg["train"]["base_lr"],
        "lr_multiple": (inferred_lr / cfg["train"]["base_lr"]) if inferred_lr else None,
        "steps": cfg["train"]["max_steps"], "protocol": evaluation.get("protocol"),
        "metric_name": metric, "metric": record.get("metrics", {}).get(metric),
        # what LR selection may look at: the protocol's selection part, never the reported one
        "select_score": evaluation.get("selection_score", record.get("metrics", {}).get(metric)
                                       if evaluation.get("protocol") == "last" else None),
        "adapter_params": params.get("adapter"), "head_params": params.get("head"),
        "trainable_params": params.get("trainable"), "stored_params": params.get("stored", np.nan),
        "nonzero_params": params.get("nonzero", np.nan), "pct_of_base": params.get("adapter_pct_of_base"),
        "baseline_metric": _baseline_metric(record),
        "prior_loss": (record.get("baseline") or {}).get("prior_loss", np.nan),
        "at_baseline": "at_baseline" in flags,
        "train_seconds": cost.get("train_seconds"), "peak_memory_mb": cost.get("peak_memory_mb"),
        "tokens_per_second": cost.get("tokens_per_second"), "flags": flags,
        "git_sha": record.get("provenance", {}).get("git_sha"),
        "git_dirty": record.get("provenance", {}).get("git_dirty"),
        "device": record.get("provenance", {}).get("device"),
        **retention.columns(record),  # retention_<probe>_before/_after/_drop, when probes ran
    }


def load_runs(sweep_dirs: Iterable[Path]) -> pd.DataFrame:
    rows, configs = [], {}
    for sweep_dir in sweep_dirs:
        for run_dir in job_dirs(sweep_dir):
            record = json.loads((run_dir / "result.json").read_text())
            rows.append(_row(record, run_dir))
            # what device/precision resolved to is part of the configuration (harness.runtime.execution)
            configs.setdefault(rows[-1]["config_id"], {**record["config"], "execution": record.get("execution")})
    if not rows:
        raise FileNotFoundError(f"no run records (*/result.json) under {[str(d) for d in sweep_dirs]}")
    runs = _one_per_run(pd.DataFrame(rows))
    runs["knobs"] = unique_knobs(runs, configs)
    runs["label"] = (runs["method"] + " " + runs["knobs"]).str.strip()
    runs = runs.join(_loss_flags(runs))
    return runs


def _one_per_run(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: the same run_id found twice (overlapping sweeps analysed together) is one run,
    counted once. Two different runs of one configuration, LR and seed (e.g. differing only in
    eval.split_seed) would be paired as the same seed: refused, since no choice between them is fair."""
    runs = runs.drop_duplicates("run_id", keep="first").reset_index(drop=True)
    done = runs[runs["status"] == "success"]
    clash = done[done.duplicated([CONFIG_KEY, "lr", "seed"], keep=False)]
    if len(clash):
        first = clash.iloc[0]
        dirs = clash[(clash[CONFIG_KEY] == first[CONFIG_KEY]) & (clash["seed"] == first["seed"])]["dir"].tolist()
        raise ValueError(f"{len(clash)} successful runs share a configuration, LR and seed but not a run_id"
                         f" (e.g. {dirs[:2]}); analyse them apart or drop one")
    return runs


# ---- display labels: unique per config_id within one report -------------------------------------

def identity_view(config: dict) -> Dict[str, str]:
    """{dotted key: value as text} of what config_id hashes (harness.results.config_identity):
    the resolved config without observation-only groups, non-semantic settings, seed and LRs,
    the method part as its method sees itself. Mirrors config_identity; kept apart because that
    one returns only the hash."""
    from harness.methods import METHODS
    from harness.results import NON_SEMANTIC, NOT_IDENTITY, PER_RUN, without_inert_settings
    view = {}
    for group, value in without_inert_settings(config).items():
        if group in NOT_IDENTITY:
            continue
        if isinstance(value, dict):
            drop = tuple(NON_SEMANTIC.get(group, ())) + tuple(PER_RUN.get(group, ()))
            value = {k: v for k, v in value.items() if k not in drop}
        view[group] = value
    method = view.get("method")
    if isinstance(method, dict) and method.get("kind") in METHODS:
        view["method"] = METHODS.get(method["kind"]).identity_view(method)
    flat = pd.json_normalize(view, sep=".").iloc[0]
    return {k: json.dumps(v, default=str) if isinstance(v, (list, dict)) else str(v) for k, v in flat.items()}


def _differing_keys(views: pd.DataFrame) -> str:
    """'[rslora=True]' per config_id (index of views): the keys whose values differ between them."""
    differ = [k for k in views.columns if views[k].nunique(dropna=False) > 1]
    shown = differ[:MAX_DIFF_KEYS]
    more = ", …" if len(differ) > len(shown) else ""

    def bracket(cid, row):
        if not shown:  # same view, different id (e.g. a record whose stored config_id disagrees)
            return f"[config {cid[:8]}]"
        return "[" + ", ".join(f"{k.removeprefix('method.')}={row[k]}" for k in shown) + more + "]"

    labels = pd.Series({cid: bracket(cid, row) for cid, row in views.iterrows()})
    if labels.duplicated(keep=False).any():  # the keys shown do not tell them apart: the id does
        labels = pd.Series({cid: f"{text[:-1]}; config {cid[:8]}]" for cid, text in labels.items()})
    return labels


def unique_knobs(runs: pd.DataFrame, configs: Dict[str, dict]) -> pd.Series:
    """The knob label of each run, with the differing config keys appended where two config_ids
    of one task would otherwise share `method knobs` (the table shows task, method and knobs)."""
    ids = runs.drop_duplicates(CONFIG_KEY)[[CONFIG_KEY, "task", "method", "knobs"]]
    suffix = {}
    for _, group in ids.groupby(["task", "method", "knobs"], dropna=False):
        if len(group) > 1:
            views = pd.DataFrame([identity_view(configs[c]) for c in group[CONFIG_KEY]], index=group[CONFIG_KEY])
            suffix.update(_differing_keys(views.fillna("(absent)")))
    extra = runs[CONFIG_KEY].map(lambda c: suffix.get(c, ""))
    return (runs["knobs"] + " " + extra).str.strip()


# ---- loss curves and the learned-nothing flags -----------------------------------------------------

def events(run_dir: Path) -> List[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def loss_curve(run_dir: Path) -> pd.Series:
    points = {e["step"]: e["train/loss"] for e in events(run_dir) if isinstance(e.get("train/loss"), (int, float))}
    return pd.Series(points, dtype=float).sort_index()


def tail_mean(curve: pd.Series) -> float:
    return curve.iloc[-max(1, len(curve) // 4):].mean()


def loss_at_prior(curve: pd.Series, prior_loss: float, absolute: float = 0.02, relative: float = 0.03) -> bool:
    """The run learned no more than the class prior: the mean train loss over the last quarter of
    the curve is within max(absolute, relative x prior) of the best constant predictor's loss
    (BoolQ: ≈0.66 against a prior entropy of 0.664). A loss well below the prior does not fire,
    however flat its curve, which is what the plateau rule below got wrong."""
    if curve.empty or not np.isfinite(prior_loss):
        return False
    return bool(abs(tail_mean(curve) - prior_loss) <= max(absolute, relative * prior_loss))


def loss_never_fell(curve: pd.Series, tolerance: float = 0.02) -> bool:
    """Fallback for records without a baseline: the last quarter of the curve is no lower than its
    first window."""
    if len(curve) < 4:
        return False
    return bool(tail_mean(curve) >= curve.iloc[0] * (1 - tolerance))


def _loss_flags(runs: pd.DataFrame) -> pd.DataFrame:
    """loss_at_prior where the record has a prior loss, else loss_never_fell; False for failed runs."""
    rows = []
    for run_dir, status, prior in zip(runs["dir"], runs["status"], runs["prior_loss"].astype(float)):
        curve = loss_curve(Path(run_dir)) if status == "success" else pd.Series(dtype=float)
        has_prior = np.isfinite(prior)
        rows.append({"loss_at_prior": has_prior and loss_at_prior(curve, prior),
                     "loss_never_fell": (not has_prior) and loss_never_fell(curve)})
    return pd.DataFrame(rows, index=runs.index)


def rank_events(run_dir: Path):
    """(steps, {module: [rank per step]}) from the rank/<module> events."""
    rows = [e for e in events(run_dir) if any(k.startswith("rank/") for k in e)]
    modules = sorted({k[5:] for e in rows for k in e if k.startswith("rank/")} - {"total", "budget"})
    return [e["step"] for e in rows], {m: [e.get(f"rank/{m}") for e in rows] for m in modules}
