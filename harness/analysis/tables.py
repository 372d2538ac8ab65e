"""Per-configuration table, best-LR selection, the LoRA/FullFT optimal-LR ratio, paired
comparisons, and the list of failed runs. Everything groups by `config_id`; `label` is display.

Selection rule: for each configuration, the best LR is the one with the highest mean *selection*
score over its tuning seeds (the protocol's select part under split_val); the reported metric (mean
± sd over all seeds) is then read at that LR. The tuning seeds are those run at every LR of the
configuration: all of them in a full grid; seed 1 alone when a study tunes on seed 1 and then runs
further seeds at the chosen LR only, so LRs are always compared on the same seeds (a 3-seed mean
against single-seed neighbours would favour whichever LR had the lucky draw). Failed runs never enter a mean: a configuration and LR with a
failed seed is marked, and the failures are listed apart. An optimum on the smallest or largest LR
tried is flagged (`lr_edge`): the true optimum may lie outside the grid.

Paired comparisons (studies have 3-5 seeds, so the statistics are the ones that stay honest at
small n): per comparison the mean paired difference, a paired t 95% interval, an exact sign-flip
permutation p-value (all 2^n flips for n <= 16; with n seeds it can never be below 2/2^n), Holm's
correction over the comparisons of one table, and a bootstrap interval only from 10 seeds on
(below that the bootstrap's interval is too narrow: it resamples from a handful of values).

LR ratio: the optimum of each configuration is fitted per seed (parabola in log10 LR through the
best grid point and its two neighbours; the best grid point when it lies on the grid's edge, and
such seeds are counted: lr_ratio.csv *_seeds_at_edge); the log of LoRA's optimum over FullFT's is taken per seed and a t
95% interval over seeds is reported on that log-ratio, then exponentiated. Only configurations
with >= 2 LRs enter; with a single LR the ratio is "not measured".

Pareto fronts (pareto.png, pareto_cost.png, pareto_front.csv): `pareto_front` keeps a row iff no
other row costs no more on every cost, scores no less and is strictly better on one; exact twins
keep one, chosen by label, so no dominated point and no order-dependent choice reaches a front.
"""

from typing import Optional

import numpy as np
import pandas as pd
from scipy import stats

from harness.analysis import retention
from harness.analysis.load import CONFIG_KEY, DISPLAY_COLUMNS, ROLE_COLUMNS

EXACT_SIGN_FLIP_MAX_N = 16  # 2^16 = 65,536 flips: enumerate; beyond, sample
RANDOM_SIGN_FLIPS = 100_000
BOOTSTRAP_MIN_N = 10
FEW_SEEDS = 5


def succeeded(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == "success"]


def failures(runs: pd.DataFrame) -> pd.DataFrame:
    cols = ["task", "method", "knobs", "config_id", "lr", "seed", "status", "reason", "error", "dir"]
    return runs[runs["status"] != "success"][cols].sort_values(["task", "method", "knobs", "seed"])


def at_lr(frame: pd.DataFrame, config_id: str, lr: float) -> pd.DataFrame:
    """The rows of one configuration at one LR (LRs compared with a float tolerance)."""
    return frame[(frame[CONFIG_KEY] == config_id) & np.isclose(frame["lr"].astype(float), lr)]


# ---- LR curves and best-LR selection -------------------------------------------------------------

def lr_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean/sd of selection score and reported metric per configuration and LR; `lrs` = how many
    LRs the configuration has (curves and fits use only those with >= 2)."""
    ok = succeeded(runs)
    grouped = ok.groupby([CONFIG_KEY, "lr"], dropna=False)
    curves = grouped.agg(**{c: (c, "first") for c in DISPLAY_COLUMNS + ROLE_COLUMNS},
                         lr_multiple=("lr_multiple", "first"), metric_name=("metric_name", "first"),
                         select_mean=("select_score", "mean"), select_sd=("select_score", "std"),
                         metric_mean=("metric", "mean"), metric_sd=("metric", "std"),
                         baseline_metric=("baseline_metric", "mean"), seeds=("seed", "nunique")).reset_index()
    curves["lrs"] = curves.groupby(CONFIG_KEY)["lr"].transform("size")
    tuning = ok[[s in _tuning_seeds(runs).get(c, ()) for c, s in zip(ok[CONFIG_KEY], ok["seed"])]]
    tuned = tuning.groupby([CONFIG_KEY, "lr"], dropna=False).agg(
        tune_mean=("select_score", "mean"), tune_seeds=("seed", "nunique")).reset_index()
    curves = curves.merge(tuned, on=[CONFIG_KEY, "lr"], how="left")
    curves["tune_mean"] = curves["tune_mean"].fillna(curves["select_mean"])  # no shared seed: all seeds
    curves["tune_seeds"] = curves["tune_seeds"].fillna(curves["seeds"]).astype(int)
    return curves


def _tuning_seeds(runs: pd.DataFrame) -> dict:
    """Per configuration, the seeds attempted (failed or not) at every one of its LRs; a
    configuration with no such seed maps to all its seeds."""
    out = {}
    for config_id, mine in runs.dropna(subset=["lr"]).groupby(CONFIG_KEY):
        per_lr = [set(g["seed"]) for _, g in mine.groupby("lr")]
        shared = set.intersection(*per_lr)
        out[config_id] = shared or set(mine["seed"])
    return out


def best_lrs(runs: pd.DataFrame) -> pd.DataFrame:
    """One row of lr_curves per configuration: its LR with the best mean selection score over the
    tuning seeds (ties: the smaller LR)."""
    curves = lr_curves(runs).dropna(subset=["tune_mean"])
    ranked = curves.sort_values(["tune_mean", "lr"], ascending=[False, True], kind="stable")
    return ranked.drop_duplicates(CONFIG_KEY).sort_values(["task", CONFIG_KEY]).reset_index(drop=True)


def _tuned_on(row) -> str:
    """', tuned on 1 seed' when fewer seeds chose the LR than are reported at it; '' in a full grid."""
    k = row.get("tuning_seeds")
    return f", tuned on {k} seed{'s' if k > 1 else ''}" if k and k < row["seeds"] else ""


def lr_edge(lrs_tried, best_lr: float) -> str:
    """'low' / 'high' when the best LR is the smallest / largest of >= 2 LRs tried, else ''. LRs
    whose runs all failed count as tried: a diverged larger LR bounds the optimum from above."""
    grid = np.unique(np.asarray(lrs_tried, float))
    if len(grid) < 2:
        return ""
    if np.isclose(best_lr, grid.min()):
        return "low"
    return "high" if np.isclose(best_lr, grid.max()) else ""


# ---- the per-configuration table -----------------------------------------------------------------

def _count(mask, text: str, n: int) -> list:
    k = int(np.sum(mask))
    return [f"{text} ({k}/{n})"] if k else []


def _flags(rows: pd.DataFrame, failed: pd.DataFrame, edge: str) -> str:
    n = len(rows)
    out = (_count(["ranks_never_moved" in f for f in rows["flags"]], "ranks never moved", n)
           + _count(rows["at_baseline"], "at_baseline", n)
           + _count(rows["loss_at_prior"], "loss at class prior", n)
           + _count(rows["loss_never_fell"], "loss never fell", n))
    if edge:
        out.append(f"best LR at grid edge ({edge})")
    for reason, count in failed["reason"].value_counts().items():
        out.append(f"{reason} ({count} run{'s' if count > 1 else ''})")
    return "; ".join(out)


def _config_row(runs: pd.DataFrame, best: pd.Series) -> dict:
    mine = runs[runs[CONFIG_KEY] == best[CONFIG_KEY]]
    ok = succeeded(at_lr(mine, best[CONFIG_KEY], best["lr"]))
    first = ok.iloc[0]
    edge = lr_edge(mine["lr"].dropna(), best["lr"])
    return {
        CONFIG_KEY: best[CONFIG_KEY], **{c: best[c] for c in DISPLAY_COLUMNS},
        "budget": first.get("budget"),
        "adapter_params": int(first["adapter_params"]), "head_params": int(first["head_params"]),
        # stored/nonzero can differ per seed (AdaLoRA's final ranks): mean over the seeds shown
        "stored_params": ok["stored_params"].astype(float).mean(),
        "nonzero_params": ok["nonzero_params"].astype(float).mean(),
        "pct_of_base": first["pct_of_base"], "metric_name": first["metric_name"],
        "metric_mean": ok["metric"].mean(), "metric_sd": ok["metric"].std(ddof=1) if len(ok) > 1 else np.nan,
        "baseline_metric": ok["baseline_metric"].astype(float).mean(), "at_baseline": int(ok["at_baseline"].sum()),
        "seeds": ok["seed"].nunique(), "best_lr": best["lr"], "lr_multiple_of_fullft": best["lr_multiple"],
        "lrs_tried": mine["lr"].nunique(), "lr_edge": edge, "select_mean": best["select_mean"],
        "tuning_seeds": int(best["tune_seeds"]),
        "train_seconds": ok["train_seconds"].mean(), "peak_memory_mb": ok["peak_memory_mb"].mean(),
        "flags": _flags(ok, mine[mine["status"] != "success"], edge),
        **retention.table_columns(ok),  # mean/sd of each probe's before, after, drop (when recorded)
    }


def config_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (config_id), at its best LR."""
    table = pd.DataFrame([_config_row(runs, b) for _, b in best_lrs(runs).iterrows()])
    if not len(table):
        return table
    if table["budget"].isna().all():  # no budget-matched runs: the column would say nothing
        return table.drop(columns="budget").sort_values(["task", "adapter_params", "label"]).reset_index(drop=True)
    return table.sort_values(["task", "budget", "adapter_params", "label"]).reset_index(drop=True)


# ---- cost-aware Pareto fronts ---------------------------------------------------------------------

# pareto_cost's cost axes besides parameters (which follow --params): table columns, per run at the best LR
COST_COLUMNS = {"seconds": "train_seconds", "memory": "peak_memory_mb"}
FRONT_COLUMNS = ["task", "axis", "cost_column", "cost", CONFIG_KEY, "label", "metric_name", "metric_mean",
                 "metric_sd", "seeds"]


def positive(values) -> pd.Series:
    """Costs that can sit on a (log) cost axis: finite and > 0 (a missing count, or 0, is no measurement)."""
    values = pd.to_numeric(pd.Series(values), errors="coerce").astype(float)
    return np.isfinite(values) & (values > 0)


def pareto_front(points: pd.DataFrame, costs, score: str = "metric_mean") -> pd.DataFrame:
    """The rows no other row dominates, sorted by cost. Row j dominates row i when j costs no more
    on every cost column, scores no less, and is strictly better somewhere. Rows equal on every cost
    and the score stand for each other: only the first by (label, config_id) is kept, so the front
    does not depend on row order. Rows with a missing cost or score are never on it and dominate
    nothing (they cannot be compared)."""
    costs = list(costs)
    keys = [k for k in ("label", CONFIG_KEY) if k in points.columns]
    pts = points.sort_values(keys, kind="stable") if keys else points
    values = pts[costs + [score]].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    finite = np.isfinite(values).all(axis=1)
    pts, c, s = pts[finite], values[finite, :-1], values[finite, -1]
    keep = []
    for i in range(len(pts)):
        no_worse = (c <= c[i]).all(axis=1) & (s >= s[i])
        better = (c < c[i]).any(axis=1) | (s > s[i])
        twin_before = ((c == c[i]).all(axis=1) & (s == s[i]))[:i].any()
        keep.append(not (no_worse & better).any() and not twin_before)
    return pts[np.array(keep, bool)].sort_values(costs + [score], kind="stable")


def cost_fronts(table: pd.DataFrame, param_column: str) -> pd.DataFrame:
    """FRONT_COLUMNS: the front members of each task on each cost axis taken alone (params =
    param_column, the --params choice; seconds; memory), cheapest first: what pareto_cost draws."""
    axes = {"params": param_column, **COST_COLUMNS}
    rows = []
    for task, group in table.groupby("task"):
        for axis, column in axes.items():
            front = pareto_front(group[positive(group[column]).to_numpy()], [column])
            rows += [{"task": task, "axis": axis, "cost_column": column, "cost": float(r[column]),
                      **{k: r[k] for k in FRONT_COLUMNS[4:]}} for _, r in front.iterrows()]
    return pd.DataFrame(rows, columns=FRONT_COLUMNS)


# ---- the LoRA/FullFT optimal-LR ratio ------------------------------------------------------------

def _optimum(lrs, scores) -> float:
    """Best LR: vertex of the parabola in log10(LR) through the best grid point and its two
    neighbours, else (best on the grid's edge, or fewer than 3 LRs) the best grid point. Local, not
    a fit to the whole grid: an LR curve is far from a parabola (a cliff where training diverges, a
    floor at the constant predictor), and a global fit lets those points drag the vertex away from
    the peak (LoRA r1 on SST-2: 10x on the grid, 1.3x from a global fit)."""
    order = np.argsort(np.asarray(lrs, float), kind="stable")
    x, y = np.log10(np.asarray(lrs, float)[order]), np.asarray(scores, float)[order]
    i = int(np.argmax(y))
    if i == 0 or i == len(x) - 1:
        return float(10 ** x[i])
    a, b, _ = np.polyfit(x[i - 1:i + 2], y[i - 1:i + 2], 2)
    if a >= 0:  # flat top (ties with a neighbour): no vertex to trust
        return float(10 ** x[i])
    return float(10 ** (-b / (2 * a)))  # between the neighbours: the middle point is the highest


def optima_per_seed(runs: pd.DataFrame, config_id: str) -> pd.Series:
    """{seed: fitted optimal LR} of one configuration, for the seeds that ran >= 2 LRs."""
    ok = succeeded(runs[runs[CONFIG_KEY] == config_id]).dropna(subset=["select_score", "lr"])
    by_seed = {seed: _optimum(g["lr"], g["select_score"]) for seed, g in ok.groupby("seed") if g["lr"].nunique() >= 2}
    return pd.Series(by_seed, dtype=float)


def seeds_at_edge(runs: pd.DataFrame, config_id: str) -> int:
    """How many seeds' best grid LR is the smallest or largest LR that seed tried. There the seed's
    optimum is its grid point, a bound, and the ratio through it is biased toward the grid: the
    configuration-level edge flag (on the mean over seeds) can miss it."""
    ok = succeeded(runs[runs[CONFIG_KEY] == config_id]).dropna(subset=["select_score", "lr"])
    tried = runs[runs[CONFIG_KEY] == config_id].dropna(subset=["lr"])
    return sum(bool(lr_edge(tried[tried["seed"] == seed]["lr"], g.loc[g["select_score"].idxmax(), "lr"]))
               for seed, g in ok.groupby("seed") if g["lr"].nunique() >= 2)


def t_interval(values, level: float = 0.95):
    """Student-t interval for the mean of values: (nan, nan) below 2 values, and when every value is
    the same (a zero-width interval would claim a certainty that identical seeds do not give: the
    same grid point for every seed, or every run predicting the majority class)."""
    values = np.asarray(values, float)
    if len(values) < 2:
        return (np.nan, np.nan)
    mean, sem = values.mean(), stats.sem(values)
    if sem == 0:
        return (np.nan, np.nan)
    return tuple(stats.t.interval(level, df=len(values) - 1, loc=mean, scale=sem))


def _full_finetuning_reference(best_task: pd.DataFrame) -> Optional[pd.Series]:
    """The task's full fine-tuning configuration (the best by selection score if there are several)."""
    full = best_task[best_task["full_finetuning"]]
    return None if full.empty else full.loc[full["select_mean"].idxmax()]


def _ratio_rows(runs: pd.DataFrame, best_task: pd.DataFrame, full: pd.Series):
    """Per LoRA configuration of one task: its row and its per-seed log-ratios."""
    full_opt = optima_per_seed(runs, full[CONFIG_KEY])
    full_lrs = runs[runs[CONFIG_KEY] == full[CONFIG_KEY]]["lr"].nunique()
    rows, logs = [], []
    for _, lora in best_task[best_task["in_lora_lr_ratio"]].iterrows():
        lora_opt = optima_per_seed(runs, lora[CONFIG_KEY])
        seeds = lora_opt.index.intersection(full_opt.index)
        log_ratio = np.log(lora_opt[seeds]) - np.log(full_opt[seeds])
        low, high = t_interval(log_ratio)
        rows.append({"task": lora["task"], CONFIG_KEY: lora[CONFIG_KEY], "label": lora["label"],
                     "knobs": lora["knobs"], "lrs": runs[runs[CONFIG_KEY] == lora[CONFIG_KEY]]["lr"].nunique(),
                     "fullft_lrs": full_lrs, "seeds": len(seeds),
                     "lora_opt_lr": np.exp(np.log(lora_opt[seeds]).mean()) if len(seeds) else np.nan,
                     "fullft_opt_lr": np.exp(np.log(full_opt[seeds]).mean()) if len(seeds) else np.nan,
                     "ratio": np.exp(log_ratio.mean()) if len(seeds) else np.nan,
                     "ci95_low": np.exp(low), "ci95_high": np.exp(high),
                     "anchor_ratio": lora["lr"] / full["lr"],
                     "lora_lr_edge": lr_edge(runs[runs[CONFIG_KEY] == lora[CONFIG_KEY]]["lr"].dropna(), lora["lr"]),
                     "fullft_lr_edge": lr_edge(runs[runs[CONFIG_KEY] == full[CONFIG_KEY]]["lr"].dropna(), full["lr"]),
                     "lora_seeds_at_edge": seeds_at_edge(runs, lora[CONFIG_KEY]),
                     "fullft_seeds_at_edge": seeds_at_edge(runs, full[CONFIG_KEY])})
        logs += [{"task": lora["task"], CONFIG_KEY: lora[CONFIG_KEY], "seed": s, "log_ratio": v}
                 for s, v in log_ratio.items()]
    return rows, logs


def pooled_ratio(log_ratios: pd.DataFrame) -> dict:
    """Geometric-mean ratio over seeds of each seed's mean log-ratio across configurations, with a
    t 95% interval over seeds ({} when nothing was measured). Every pooled seed averages the same
    configurations: a seed that measured both tasks and one that measured one would otherwise be
    averages of different things set side by side. So the pool takes the seeds of a configuration
    measured in the most seeds, and the configurations measured in every one of those seeds;
    'configs' of 'configs_total' says how many that kept."""
    if log_ratios.empty:
        return {}
    seeds_of = log_ratios.groupby(CONFIG_KEY)["seed"].apply(frozenset)

    def block(seeds):  # most seeds, then most configurations kept, then the lowest seeds
        return len(seeds), sum(seeds <= other for other in seeds_of), [-s for s in sorted(seeds)]
    pooled_seeds = max(seeds_of, key=block)
    kept = [config for config, seeds in seeds_of.items() if pooled_seeds <= seeds]
    pooled = log_ratios[log_ratios[CONFIG_KEY].isin(kept) & log_ratios["seed"].isin(pooled_seeds)]
    per_seed = pooled.groupby("seed")["log_ratio"].mean()
    low, high = t_interval(per_seed)
    return {"ratio": float(np.exp(per_seed.mean())), "ci95": (float(np.exp(low)), float(np.exp(high))),
            "seeds": len(per_seed), "configs": len(kept), "configs_total": len(seeds_of)}


def lr_ratio(runs: pd.DataFrame) -> Optional[dict]:
    """Fitted optimal LR of each LoRA configuration over FullFT's, per task (LoRA Without Regret
    reports ~10x). None when no task has both; else per_config (every LoRA configuration, NaN
    ratio when not measured), log_ratios (per seed), the pooled headline and per-task summaries."""
    best = best_lrs(runs)
    rows, logs = [], []
    for _, group in best.groupby("task"):
        full = _full_finetuning_reference(group)
        if full is not None:
            r, lg = _ratio_rows(runs, group, full)
            rows, logs = rows + r, logs + lg
    if not rows:
        return None
    log_ratios = pd.DataFrame(logs, columns=["task", CONFIG_KEY, "seed", "log_ratio"])
    per_task = {task: pooled_ratio(g) for task, g in log_ratios.groupby("task")}
    return {"per_config": pd.DataFrame(rows), "log_ratios": log_ratios, "per_task": per_task,
            **pooled_ratio(log_ratios), "single_lr": log_ratios.empty}


def ratio_text(summary: dict) -> str:
    """'9.8x (95% CI 7.1-13.4x over 3 seeds)', or why there is no number."""
    if not summary:
        return "not measured (single LR)"
    low, high = summary["ci95"]
    if np.isfinite(low):
        spread = f"95% CI {low:.1f}-{high:.1f}x over {summary['seeds']} seeds"
    elif summary["seeds"] > 1:
        spread = f"every one of {summary['seeds']} seeds has the same optimum (grid resolution): no interval"
    else:
        spread = f"{summary['seeds']} seed, no interval"
    subset = summary.get("configs_total", summary["configs"]) > summary["configs"]
    coverage = (f"; {summary['configs']} of {summary['configs_total']} configurations, those measured in"
                f" every pooled seed" if subset else "")
    return f"{summary['ratio']:.1f}x ({spread}{coverage})"


# ---- paired comparisons --------------------------------------------------------------------------

def bootstrap_ci(values, n_boot: int = 10000, seed: int = 0, level: float = 0.95):
    values = np.asarray(values, float)
    if len(values) < 2:
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n_boot, len(values)), replace=True).mean(axis=1)
    return tuple(np.quantile(means, [(1 - level) / 2, (1 + level) / 2]))


def sign_flip_p(diffs, seed: int = 0) -> float:
    """Two-sided permutation p of mean(diffs) = 0 under random signs: exact (all 2^n flips) for
    n <= 16, else 100k random flips. NaN below 2 values (one value cannot be tested)."""
    diffs = np.asarray(diffs, float)
    if len(diffs) < 2:
        return np.nan
    n_resamples = np.inf if len(diffs) <= EXACT_SIGN_FLIP_MAX_N else RANDOM_SIGN_FLIPS
    result = stats.permutation_test((diffs,), np.mean, permutation_type="samples", vectorized=True,
                                    n_resamples=n_resamples, alternative="two-sided",
                                    rng=np.random.default_rng(seed))
    return float(result.pvalue)


def holm(p_values) -> pd.Series:
    """Holm's step-down adjustment over the non-missing p-values (missing stay missing)."""
    p = pd.Series(p_values, dtype=float)
    ordered = p.dropna().sort_values(kind="stable")
    m = len(ordered)
    adjusted = (ordered * (m - np.arange(m))).cummax().clip(upper=1.0)
    return adjusted.reindex(p.index)


def paired_stats(diffs) -> dict:
    """n, mean and sd of the paired differences, t interval, sign-flip p, bootstrap (n >= 10)."""
    diffs = np.asarray(diffs, float)
    low, high = t_interval(diffs)
    boot = bootstrap_ci(diffs) if len(diffs) >= BOOTSTRAP_MIN_N else (np.nan, np.nan)
    return {"n": len(diffs), "mean_diff": diffs.mean() if len(diffs) else np.nan,
            "sd_diff": diffs.std(ddof=1) if len(diffs) > 1 else np.nan,
            "t_ci95_low": low, "t_ci95_high": high, "p_signflip": sign_flip_p(diffs),
            "boot_ci95_low": boot[0], "boot_ci95_high": boot[1]}


def _reference(group: pd.DataFrame) -> pd.Series:
    """Full fine-tuning (the best one if several), else the best configuration by selection score."""
    ref_rows = group[group["full_finetuning"]]
    ref_rows = ref_rows if len(ref_rows) else group
    return ref_rows.loc[ref_rows["select_mean"].idxmax()]


def _scores_by_seed(ok: pd.DataFrame, best: pd.Series) -> pd.Series:
    return at_lr(ok, best[CONFIG_KEY], best["lr"]).set_index("seed")["metric"]


def _comparison_groups(best: pd.DataFrame, runs: pd.DataFrame):
    """(task, configurations compared with each other): per task; in a budget-matched sweep per
    (task, budget), since only configurations matched to one budget make a fair pair. There, a
    configuration with no budget (the lori_d run LoRI-S continues) is compared with nothing."""
    budget = runs.drop_duplicates(CONFIG_KEY).set_index(CONFIG_KEY)["budget"] if "budget" in runs else None
    if budget is None or budget.isna().all():
        yield from best.groupby("task")
        return
    keyed = best.assign(_budget=best[CONFIG_KEY].map(budget))
    for (task, _), group in keyed.dropna(subset=["_budget"]).groupby(["task", "_budget"]):
        yield task, group.drop(columns="_budget")


def paired(runs: pd.DataFrame) -> pd.DataFrame:
    """Each configuration (at its best LR) minus its group's reference configuration, paired by
    seed (groups: _comparison_groups); p_holm adjusts the sign-flip p over every comparison."""
    best, ok = best_lrs(runs), succeeded(runs)
    rows = []
    for task, group in _comparison_groups(best, runs):
        ref = _reference(group)
        ref_scores = _scores_by_seed(ok, ref)
        for _, b in group[group[CONFIG_KEY] != ref[CONFIG_KEY]].iterrows():
            scores = _scores_by_seed(ok, b)
            common = scores.index.intersection(ref_scores.index).sort_values()
            rows.append({"task": task, CONFIG_KEY: b[CONFIG_KEY], "method": b["method"], "knobs": b["knobs"],
                         "label": b["label"], "reference": ref["label"], "reference_config_id": ref[CONFIG_KEY],
                         **paired_stats(scores[common] - ref_scores[common])})
    pairs = pd.DataFrame(rows)
    if len(pairs):
        pairs.insert(pairs.columns.get_loc("p_signflip") + 1, "p_holm", holm(pairs["p_signflip"]))
        budget = runs.drop_duplicates(CONFIG_KEY).set_index(CONFIG_KEY).get("budget")
        if budget is not None and budget.notna().any():  # budget-matched: say which budget each pair is at
            pairs.insert(1, "budget", pairs[CONFIG_KEY].map(budget))
    return pairs


# ---- markdown --------------------------------------------------------------------------------------

def _fmt_params(n) -> str:
    if n is None or not np.isfinite(n):
        return ""
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(int(n))


def _fmt(x, spec: str = ".3f") -> str:
    return "" if x is None or not np.isfinite(x) else format(x, spec)


def _edge_note(per_config: pd.DataFrame) -> str:
    measured = per_config.dropna(subset=["ratio"])
    edges = (measured["lora_lr_edge"] != "") | (measured["fullft_lr_edge"] != "")
    if edges.any():
        return "; some best LRs lie at the grid's edge, so there the ratio is a bound, not a fit"
    seeds = (measured["lora_seeds_at_edge"] > 0) | (measured["fullft_seeds_at_edge"] > 0)
    return ("; some seeds' best LRs lie at their grid's edge (lr_ratio.csv, *_seeds_at_edge): those seeds'"
            " ratios are bounds, not fits" if seeds.any() else "")


def _ratio_lines(ratio: Optional[dict]) -> list:
    if ratio is None:
        return []
    if ratio["single_lr"]:
        return ["- LoRA/FullFT optimal-LR ratio: **not measured (single LR)**: FullFT or every LoRA"
                " configuration ran one LR, so only the anchors' ratio is known (lr_ratio.csv, anchor_ratio)"]
    head = (f"- LoRA/FullFT optimal-LR ratio: **{ratio_text(ratio)}**; optimum fitted per seed on the selection"
            f" split (parabola in log LR through the best LR and its two neighbours, else the best LR), t interval over seeds on the"
            f" log-ratio, pooled over {ratio['configs']} LoRA configuration(s) with >= 2 LRs"
            f"{_edge_note(ratio['per_config'])}")
    per_task = [f"  - {task}: {ratio_text(summary)}" for task, summary in ratio["per_task"].items()]
    return [head] + (per_task if len(per_task) > 1 else [])


def knobs_cell(row: pd.Series) -> str:
    """A configuration's knobs as tables show them, led by its budget where it was budget-matched."""
    budget = row.get("budget")
    return row["knobs"] if budget is None or pd.isna(budget) else f"budget {_fmt_params(budget)}: {row['knobs']}"


def _table_lines(table: pd.DataFrame) -> list:
    lines = ["| task | method | knobs | adapter params | stored | nonzero | head | % of base | metric | mean ± sd |"
             " baseline | seeds | best LR (x FullFT) | train s | peak MB | flags |", "|" + "---|" * 16]
    for _, r in table.iterrows():
        sd = "" if np.isnan(r["metric_sd"]) else f" ± {r['metric_sd']:.3f}"
        lines.append(f"| {r['task']} | {r['method']} | {knobs_cell(r)} | {_fmt_params(r['adapter_params'])} |"
                     f" {_fmt_params(r['stored_params'])} | {_fmt_params(r['nonzero_params'])} |"
                     f" {int(r['head_params'])} | {r['pct_of_base']:.3f} | {r['metric_name']} |"
                     f" {r['metric_mean']:.3f}{sd} | {_fmt(r['baseline_metric'])} | {r['seeds']} |"
                     f" {r['best_lr']:.2e} ({r['lr_multiple_of_fullft']:g}x; {r['lrs_tried']} tried{_tuned_on(r)}) |"
                     f" {r['train_seconds']:.0f} | {r['peak_memory_mb']:.0f} | {r['flags']} |")
    return lines


def _pair_cells(p: pd.Series) -> str:
    """interval | sign-flip p | Holm p | bootstrap interval; '1 seed' and blanks where n is too small."""
    if p["n"] == 0:
        return "no common seed | | | "
    if p["n"] == 1:
        return "1 seed | | | "
    boot = f"[{p['boot_ci95_low']:+.3f}, {p['boot_ci95_high']:+.3f}]" if np.isfinite(p["boot_ci95_low"]) else ""
    t = (f"[{p['t_ci95_low']:+.3f}, {p['t_ci95_high']:+.3f}]" if np.isfinite(p["t_ci95_low"])
         else "no spread: every seed's difference is the same")
    return f"{t} | {p['p_signflip']:.3g} | {p['p_holm']:.3g} | {boot}"


def _paired_lines(pairs: pd.DataFrame) -> list:
    if pairs.empty:
        return []
    lines = ["", "## Paired differences (same seeds, metric at each configuration's best LR)", ""]
    small = pairs.loc[(pairs["n"] > 0) & (pairs["n"] < FEW_SEEDS), "n"]
    if len(small):
        n = int(small.min())
        lines += [f"> **Warning: fewer than {FEW_SEEDS} paired seeds: intervals are wide, p-values coarse; the"
                  f" smallest possible sign-flip p with n seeds is 2/2^n** (n = {n} here: {2 / 2 ** n:.3g}).", ""]
    lines += ["| task | configuration | vs | n | mean diff | 95% t CI | sign-flip p | Holm p |"
              f" 95% bootstrap CI (n ≥ {BOOTSTRAP_MIN_N}) |", "|" + "---|" * 9]
    for _, p in pairs.iterrows():
        diff = f"{p['mean_diff']:+.3f}" if p["n"] else ""
        label = p["label"] if pd.isna(p.get("budget")) else f"budget {_fmt_params(p['budget'])}: {p['label']}"
        lines.append(f"| {p['task']} | {label} | {p['reference']} | {p['n']} | {diff} | {_pair_cells(p)} |")
    return lines


def _failed_lines(failed: pd.DataFrame) -> list:
    lines = ["", "## Failed or unfinished runs (never averaged in)", ""]
    if failed.empty:
        return lines + ["None."]
    lines += ["| task | method | knobs | lr | seed | status | reason | error |", "|" + "---|" * 8]
    for _, f in failed.iterrows():
        lines.append(f"| {f['task']} | {f['method']} | {f['knobs']} | {f['lr']} | {f['seed']} | {f['status']} |"
                     f" {f['reason']} | {f['error']} |")
    return lines


def markdown(table: pd.DataFrame, pairs: pd.DataFrame, failed: pd.DataFrame, ratio: Optional[dict],
             title: str, notes=()) -> str:
    lines = [f"# {title}", ""] + [f"- {n}" for n in notes] + _ratio_lines(ratio)
    lines += [""] + _table_lines(table) + _paired_lines(pairs) + _failed_lines(failed)
    return "\n".join(lines) + "\n"
