"""Does a method that learns less also forget less? Two answers from the records' retention probes
(harness.analysis.retention reads them), both per task and probe:

- `paired`: each configuration at its best LR against its comparison group's reference (full
  fine-tuning; tables._reference), paired by seed, on both axes at once: the difference in task
  score and the difference in probe drop, each with its t 95% interval and exact sign-flip p;
  p_holm adjusts the drop p-values over the whole table. "Learns less, forgets less" for one
  configuration is a negative score difference *and* a negative drop difference.
- `tradeoff`: across configurations (their seed means at the best LR), Spearman's rho between task
  score and drop. rho > 0: the configurations that score higher are the ones that forget more.
  Interval: Fisher z with Bonett & Wright's (2000) standard error for Spearman's rho,
  sqrt((1 + rho^2 / 2) / (n - 3)); p: permutation test on the ranks (exact below 9 configurations).
  Configurations are not a random sample of methods, so the interval describes these
  configurations, not every possible method.
"""

import numpy as np
import pandas as pd
from scipy import stats

from harness.analysis.load import CONFIG_KEY
from harness.analysis.retention import PREFIX, probes

PAIRED_COLUMNS = ["task", "probe", CONFIG_KEY, "method", "knobs", "label", "reference", "n",
                  "score_diff", "score_ci95_low", "score_ci95_high", "score_p_signflip",
                  "drop_diff", "drop_ci95_low", "drop_ci95_high", "drop_p_signflip", "drop_p_holm"]
TRADEOFF_COLUMNS = ["task", "model", "probe", "configs", "rho", "ci95_low", "ci95_high", "p_permutation"]
EXACT_PERMUTATION_MAX_N = 8  # 8! = 40,320 orderings: enumerate; beyond, sample


def _seed_frame(ok: pd.DataFrame, row: pd.Series, column: str) -> pd.DataFrame:
    from harness.analysis.tables import at_lr
    return at_lr(ok, row[CONFIG_KEY], row["lr"]).set_index("seed")[["metric", column]].dropna()


def paired(runs: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """PAIRED_COLUMNS, one row per (probe, configuration other than its group's reference)."""
    from harness.analysis import tables
    ok, rows = tables.succeeded(runs), []
    for probe in probes(runs):
        column = f"{PREFIX}{probe}_drop"
        for task, group in tables._comparison_groups(best, runs):
            ref = tables._reference(group)
            theirs = _seed_frame(ok, ref, column)
            if theirs.empty:
                continue  # the reference ran without this probe
            for _, b in group[group[CONFIG_KEY] != ref[CONFIG_KEY]].iterrows():
                mine = _seed_frame(ok, b, column)
                common = mine.index.intersection(theirs.index).sort_values()
                if len(common) == 0:
                    continue
                rows.append({"task": task, "probe": probe, CONFIG_KEY: b[CONFIG_KEY], "method": b["method"],
                             "knobs": b["knobs"], "label": b["label"], "reference": ref["label"], "n": len(common),
                             **_diff("score", mine.loc[common, "metric"] - theirs.loc[common, "metric"]),
                             **_diff("drop", mine.loc[common, column] - theirs.loc[common, column])})
    pairs = pd.DataFrame(rows, columns=[c for c in PAIRED_COLUMNS if c != "drop_p_holm"])
    pairs["drop_p_holm"] = tables.holm(pairs["drop_p_signflip"]) if len(pairs) else []
    return pairs[PAIRED_COLUMNS]


def _diff(name: str, diffs: pd.Series) -> dict:
    """tables.paired_stats (the paired comparisons' own statistics), under this table's names."""
    from harness.analysis.tables import paired_stats
    st = paired_stats(diffs)
    return {f"{name}_diff": st["mean_diff"], f"{name}_ci95_low": st["t_ci95_low"],
            f"{name}_ci95_high": st["t_ci95_high"], f"{name}_p_signflip": st["p_signflip"]}


def spearman(x, y, seed: int = 0) -> dict:
    """rho, its Fisher-z (Bonett-Wright) 95% interval and a permutation p over the pairings."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": np.nan, "ci95_low": np.nan, "ci95_high": np.nan, "p_permutation": np.nan}
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    rho = float(np.corrcoef(rx, ry)[0, 1])
    half = stats.norm.ppf(0.975) * np.sqrt((1 + rho ** 2 / 2) / (n - 3))
    z = np.arctanh(np.clip(rho, -0.999999, 0.999999))
    resamples = np.inf if n <= EXACT_PERMUTATION_MAX_N else 100_000
    centred_y = ry - ry.mean()

    def rank_corr(a, axis=-1):  # Pearson on ranks, vectorized over permutations (100k: well under a second)
        a = np.moveaxis(a, axis, -1)
        centred = a - a.mean(axis=-1, keepdims=True)
        return (centred @ centred_y) / np.sqrt((centred ** 2).sum(axis=-1) * (centred_y ** 2).sum())

    result = stats.permutation_test((rx,), rank_corr, permutation_type="pairings", vectorized=True,
                                    n_resamples=resamples, alternative="two-sided", rng=np.random.default_rng(seed))
    return {"rho": rho, "ci95_low": float(np.tanh(z - half)), "ci95_high": float(np.tanh(z + half)),
            "p_permutation": float(result.pvalue)}


def tradeoff(table: pd.DataFrame) -> pd.DataFrame:
    """TRADEOFF_COLUMNS: per task, model and probe, rho(task score, drop) over the configurations."""
    rows = []
    for probe in probes(table):
        drop = f"{PREFIX}{probe}_drop_mean"
        for (task, model), group in table.dropna(subset=[drop]).groupby(["task", "model"]):
            rows.append({"task": task, "model": model, "probe": probe, "configs": len(group),
                         **spearman(group["metric_mean"], group[drop])})
    return pd.DataFrame(rows, columns=TRADEOFF_COLUMNS)


def _ci(mean, low, high, spec="+.4f") -> str:
    inner = "" if not np.isfinite(low) else f" [{low:{spec}}, {high:{spec}}]"
    return f"{mean:{spec}}{inner}"


def markdown(pairs: pd.DataFrame, trade: pd.DataFrame) -> str:
    """The 'learns less, forgets less' section ('' without retention)."""
    if pairs.empty and trade.empty:
        return ""
    lines = ["", "## Learns less, forgets less? (drop > 0 = forgot; 95% t intervals over seeds)", ""]
    for _, t in trade.iterrows():
        lines.append(f"- {t['task']} / {t['probe']}: Spearman rho(task score, drop) over {t['configs']}"
                     f" configurations = {_ci(t['rho'], t['ci95_low'], t['ci95_high'], '+.2f')}"
                     f" (permutation p = {t['p_permutation']:.3g}); rho > 0: the better scorers forgot more")
    if len(pairs):
        lines += ["", "| task | probe | method | knobs | vs | seeds | score diff [CI] | drop diff [CI] |"
                  " drop p (Holm) | learns less & forgets less |", "|" + "---|" * 10]
        for _, r in pairs.iterrows():
            both = r["score_ci95_high"] < 0 and r["drop_ci95_high"] < 0
            lines.append(f"| {r['task']} | {r['probe']} | {r['method']} | {r['knobs']} | {r['reference']} | {r['n']} |"
                         f" {_ci(r['score_diff'], r['score_ci95_low'], r['score_ci95_high'])} |"
                         f" {_ci(r['drop_diff'], r['drop_ci95_low'], r['drop_ci95_high'])} |"
                         f" {r['drop_p_holm']:.3g} | {'yes (both intervals below 0)' if both else ''} |")
    return "\n".join(lines) + "\n"


def write(pairs: pd.DataFrame, trade: pd.DataFrame, out_dir) -> list:
    """retention_paired.csv and retention_tradeoff.csv when there is retention; [] (and any stale
    copies of an earlier analysis removed) when not."""
    from pathlib import Path
    paths = [Path(out_dir) / "retention_paired.csv", Path(out_dir) / "retention_tradeoff.csv"]
    if pairs.empty and trade.empty:
        for stale in paths:
            stale.unlink(missing_ok=True)
        return []
    for path, frame in zip(paths, (pairs, trade)):
        path.write_text(frame.to_csv(index=False))
    return paths
