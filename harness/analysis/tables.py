"""Per-configuration table, best-LR selection, the LoRA/FullFT optimal-LR ratio, paired
comparisons with bootstrap confidence intervals, and the list of failed runs.

Selection rule: for each method configuration, the best LR is the one with the highest mean
*selection* score over seeds (the protocol's select part under split_val); the reported metric
(mean ± sd over seeds) is then read at that LR. Failed runs never enter a mean: a configuration
and LR with a failed seed is marked, and the failures are listed apart.
"""

from typing import Optional

import numpy as np
import pandas as pd

from harness.analysis.load import CONFIG_COLUMNS


def succeeded(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == "success"]


def failures(runs: pd.DataFrame) -> pd.DataFrame:
    cols = ["task", "method", "knobs", "lr", "seed", "status", "reason", "error", "dir"]
    return runs[runs["status"] != "success"][cols].sort_values(["task", "method", "knobs", "seed"])


def lr_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean/sd of selection score and reported metric per configuration and LR."""
    ok = succeeded(runs)
    grouped = ok.groupby(CONFIG_COLUMNS + ["lr", "lr_multiple"], dropna=False)
    return grouped.agg(select_mean=("select_score", "mean"), select_sd=("select_score", "std"),
                       metric_mean=("metric", "mean"), metric_sd=("metric", "std"),
                       seeds=("seed", "nunique")).reset_index()


def best_lrs(runs: pd.DataFrame) -> pd.DataFrame:
    curves = lr_curves(runs)
    idx = curves.groupby(CONFIG_COLUMNS, dropna=False)["select_mean"].idxmax()
    return curves.loc[idx.dropna().astype(int)].reset_index(drop=True)


def _flags(rows: pd.DataFrame, failed: pd.DataFrame) -> str:
    out = []
    n = len(rows)
    never_moved = sum("ranks_never_moved" in f for f in rows["flags"])
    if never_moved:
        out.append(f"ranks never moved ({never_moved}/{n})")
    flat = int(rows["loss_flag"].sum())
    if flat:
        out.append(f"loss never fell ({flat}/{n})")
    for reason, count in failed["reason"].value_counts().items():
        out.append(f"{reason} ({count} run{'s' if count > 1 else ''})")
    return "; ".join(out)


def config_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per method configuration, at its best LR."""
    best = best_lrs(runs)
    rows = []
    for _, b in best.iterrows():
        key = (runs[CONFIG_COLUMNS] == b[CONFIG_COLUMNS]).all(axis=1)
        at_lr = runs[key & np.isclose(runs["lr"].astype(float), b["lr"])]
        ok, failed = succeeded(at_lr), at_lr[at_lr["status"] != "success"]
        all_failed = runs[key & (runs["status"] != "success")]
        first = ok.iloc[0]
        rows.append({
            **{c: b[c] for c in CONFIG_COLUMNS},
            "adapter_params": int(first["adapter_params"]), "head_params": int(first["head_params"]),
            "pct_of_base": first["pct_of_base"], "metric_name": first["metric_name"],
            "metric_mean": ok["metric"].mean(), "metric_sd": ok["metric"].std(ddof=1) if len(ok) > 1 else np.nan,
            "seeds": ok["seed"].nunique(), "best_lr": b["lr"], "lr_multiple_of_fullft": b["lr_multiple"],
            "lrs_tried": runs[key]["lr"].nunique(), "select_mean": b["select_mean"],
            "train_seconds": ok["train_seconds"].mean(), "peak_memory_mb": ok["peak_memory_mb"].mean(),
            "flags": _flags(ok, all_failed),
        })
    table = pd.DataFrame(rows)
    return table.sort_values(["task", "adapter_params"]).reset_index(drop=True) if len(table) else table


def _optimum(lrs, scores) -> float:
    """Best LR: vertex of a parabola in log10(LR) when >= 3 points give a concave fit inside the
    grid, else the best grid point."""
    lrs, scores = np.asarray(lrs, float), np.asarray(scores, float)
    best = lrs[np.argmax(scores)]
    if len(lrs) >= 3:
        x = np.log10(lrs)
        a, b, _ = np.polyfit(x, scores, 2)
        if a < 0 and x.min() <= -b / (2 * a) <= x.max():
            return float(10 ** (-b / (2 * a)))
    return float(best)


def lr_ratio(runs: pd.DataFrame) -> Optional[dict]:
    """Fitted optimal LR of each LoRA configuration divided by FullFT's, per task; the geometric
    mean over configurations is the headline ratio (LoRA Without Regret reports ~10x)."""
    curves = lr_curves(runs)
    out = []
    for task, group in curves.groupby("task"):
        full = group[group["method"] == "fullft"]
        if full.empty:
            continue
        full_opt = _optimum(full["lr"], full["select_mean"])
        for (method, knobs), g in group[group["method"] == "lora"].groupby(["method", "knobs"]):
            out.append({"task": task, "knobs": knobs, "lora_opt_lr": _optimum(g["lr"], g["select_mean"]),
                        "fullft_opt_lr": full_opt, "lrs": len(g)})
    if not out:
        return None
    per = pd.DataFrame(out)
    per["ratio"] = per["lora_opt_lr"] / per["fullft_opt_lr"]
    return {"per_config": per, "ratio": float(np.exp(np.log(per["ratio"]).mean())),
            "single_lr": bool((per["lrs"] < 2).all())}


def bootstrap_ci(values, n_boot: int = 10000, seed: int = 0, level: float = 0.95):
    values = np.asarray(values, float)
    if len(values) < 2:
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n_boot, len(values)), replace=True).mean(axis=1)
    return tuple(np.quantile(means, [(1 - level) / 2, (1 + level) / 2]))


def paired(runs: pd.DataFrame, reference: str = "fullft") -> pd.DataFrame:
    """Each configuration (at its best LR) minus the reference configuration, paired by seed."""
    best = best_lrs(runs)
    ok = succeeded(runs)
    rows = []
    for task, group in best.groupby("task"):
        ref_rows = group[group["method"] == reference]
        if ref_rows.empty:
            ref_rows = group.loc[[group["select_mean"].idxmax()]]
        ref = ref_rows.iloc[0]

        def by_seed(b):
            sel = ok[(ok[CONFIG_COLUMNS] == b[CONFIG_COLUMNS]).all(axis=1) & np.isclose(ok["lr"].astype(float), b["lr"])]
            return sel.set_index("seed")["metric"]

        ref_scores = by_seed(ref)
        for _, b in group.iterrows():
            if (b[CONFIG_COLUMNS] == ref[CONFIG_COLUMNS]).all():
                continue
            scores = by_seed(b)
            common = sorted(set(scores.index) & set(ref_scores.index))
            diffs = (scores[common] - ref_scores[common]).to_numpy()
            low, high = bootstrap_ci(diffs)
            rows.append({"task": task, "method": b["method"], "knobs": b["knobs"],
                         "reference": f"{ref['method']} {ref['knobs']}".strip(), "paired_seeds": len(common),
                         "mean_diff": diffs.mean() if len(diffs) else np.nan, "ci95_low": low, "ci95_high": high})
    return pd.DataFrame(rows)


def _fmt_params(n) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(int(n))


def markdown(table: pd.DataFrame, pairs: pd.DataFrame, failed: pd.DataFrame, ratio: Optional[dict],
             title: str, notes=()) -> str:
    lines = [f"# {title}", ""]
    lines += [f"- {n}" for n in notes]
    if ratio is not None:
        how = ("only one LR per method was run, so this is the ratio of the anchors, not a fitted optimum"
               if ratio["single_lr"] else "optimal LRs fitted on the selection split")
        lines.append(f"- LoRA/FullFT optimal-LR ratio: **{ratio['ratio']:.1f}x** (geometric mean over "
                     f"{len(ratio['per_config'])} LoRA configurations; {how})")
    lines += ["", "| task | method | knobs | adapter params | head | % of base | metric | mean ± sd | seeds |"
              " best LR (x FullFT) | train s | peak MB | flags |", "|" + "---|" * 13]
    for _, r in table.iterrows():
        sd = "" if np.isnan(r["metric_sd"]) else f" ± {r['metric_sd']:.3f}"
        lines.append(f"| {r['task']} | {r['method']} | {r['knobs']} | {_fmt_params(r['adapter_params'])} |"
                     f" {int(r['head_params'])} | {r['pct_of_base']:.3f} | {r['metric_name']} |"
                     f" {r['metric_mean']:.3f}{sd} | {r['seeds']} | {r['best_lr']:.2e} ({r['lr_multiple_of_fullft']:g}x;"
                     f" {r['lrs_tried']} tried) | {r['train_seconds']:.0f} | {r['peak_memory_mb']:.0f} | {r['flags']} |")
    if len(pairs):
        lines += ["", "## Paired differences (same seeds, metric at each configuration's best LR)", "",
                  "| task | method | knobs | vs | seeds | mean diff | 95% bootstrap CI |", "|" + "---|" * 7]
        for _, p in pairs.iterrows():
            lines.append(f"| {p['task']} | {p['method']} | {p['knobs']} | {p['reference']} | {p['paired_seeds']} |"
                         f" {p['mean_diff']:+.3f} | [{p['ci95_low']:+.3f}, {p['ci95_high']:+.3f}] |")
    lines += ["", "## Failed or unfinished runs (never averaged in)", ""]
    if failed.empty:
        lines.append("None.")
    else:
        lines += ["| task | method | knobs | lr | seed | status | reason | error |", "|" + "---|" * 8]
        for _, f in failed.iterrows():
            lines.append(f"| {f['task']} | {f['method']} | {f['knobs']} | {f['lr']} | {f['seed']} | {f['status']} |"
                         f" {f['reason']} | {f['error']} |")
    return "\n".join(lines) + "\n"
