"""Where a rank-adaptive method (one whose class says `rank_adaptive`, e.g. AdaLoRA) put its final
ranks, from each record's `ranks.final` ({module: final rank}); whether that pays against uniform
ranks is harness.analysis.matched's comparison with its declared counterpart (AdaLoRA: LoRA):

- `summary` (allocation.csv), per rank-adaptive configuration at its best LR: the uniform rank the
  same total would give every module (final total / modules), the share of modules pruned to rank 0,
  the spread of the final ranks (coefficient of variation over modules), and whether the seeds
  chose the same allocation (mean Spearman rho over pairs of seeds). Then, per module group (the
  module name without its layer index, e.g. attention.self.query) and per layer, the mean final
  rank over seeds with a t 95% interval: `differs` where that interval excludes the uniform rank.
- `figure` (allocation.png): layer x module-group heatmaps of the mean final rank.
"""

import json
import re
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from harness.analysis.load import CONFIG_KEY
from harness.analysis.tables import _fmt

SUMMARY_COLUMNS = ["task", CONFIG_KEY, "label", "seeds", "modules", "uniform_rank", "share_zero", "rank_cv",
                   "seed_agreement_rho", "axis", "key", "mean_rank", "ci95_low", "ci95_high", "differs"]
_LAYER = re.compile(r"^(.*?)\.(\d+)\.(.+)$")  # <prefix>.<layer index>.<module path within the layer>


def split_module(name: str):
    """'bert.encoder.layer.3.attention.self.query' -> (3, 'attention.self.query'); no index -> (None, name)."""
    m = _LAYER.match(name)
    return (int(m.group(2)), m.group(3)) if m else (None, name)


def _final_ranks(run_dir) -> dict:
    record = json.loads((Path(run_dir) / "result.json").read_text())
    return (record.get("ranks") or {}).get("final") or {}


def seed_ranks(runs: pd.DataFrame, best: pd.DataFrame) -> dict:
    """{config_id: DataFrame (seeds x modules) of final ranks} for rank-adaptive configurations."""
    from harness.analysis.tables import at_lr, succeeded
    ok, out = succeeded(runs), {}
    adaptive = set(runs.loc[runs["rank_adaptive"].fillna(False).astype(bool), CONFIG_KEY])
    for _, b in best[best[CONFIG_KEY].isin(adaptive)].iterrows():
        rows = {r["seed"]: _final_ranks(r["dir"]) for _, r in at_lr(ok, b[CONFIG_KEY], b["lr"]).iterrows()}
        frame = pd.DataFrame({s: v for s, v in rows.items() if v}).T.sort_index()
        if len(frame):
            out[b[CONFIG_KEY]] = frame[sorted(frame.columns)]
    return out


def _interval(values) -> tuple:
    """t 95% interval over seeds; of zero width when every seed gave the same value (t_interval
    leaves that undefined, but the formula's width is 0)."""
    from harness.analysis.tables import t_interval
    values = np.asarray(values, float)
    if len(values) > 1 and np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    return t_interval(values)


def _agreement(frame: pd.DataFrame) -> float:
    rhos = [stats.spearmanr(frame.loc[a], frame.loc[b]).statistic for a, b in combinations(frame.index, 2)
            if frame.loc[a].nunique() > 1 and frame.loc[b].nunique() > 1]
    return float(np.mean(rhos)) if rhos else np.nan


def _grouped(frame: pd.DataFrame, axis: str) -> pd.DataFrame:
    """Seeds x groups: each seed's mean final rank over the modules of a group (axis 'module') or layer."""
    parts = {m: split_module(m) for m in frame.columns}
    key = {m: (f"layer {p[0]}" if p[0] is not None else "no layer") if axis == "layer" else p[1]
           for m, p in parts.items()}
    return frame.T.groupby(key).mean().T


def summary(best: pd.DataFrame, ranks: dict) -> pd.DataFrame:
    rows = []
    for _, b in best[best[CONFIG_KEY].isin(ranks)].iterrows():
        frame = ranks[b[CONFIG_KEY]]
        uniform = float(frame.sum(axis=1).mean() / frame.shape[1])
        common = {"task": b["task"], CONFIG_KEY: b[CONFIG_KEY], "label": b["label"], "seeds": len(frame),
                  "modules": frame.shape[1], "uniform_rank": uniform,
                  "share_zero": float((frame == 0).mean(axis=1).mean()),
                  "rank_cv": float((frame.std(axis=1, ddof=0) / frame.mean(axis=1)).mean()),
                  "seed_agreement_rho": _agreement(frame)}
        for axis in ("module", "layer"):
            grouped = _grouped(frame, axis)
            for key in grouped.columns:
                low, high = _interval(grouped[key])
                rows.append({**common, "axis": axis, "key": key, "mean_rank": float(grouped[key].mean()),
                             "ci95_low": low, "ci95_high": high,
                             "differs": bool(np.isfinite(low) and (high < uniform or low > uniform))})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def markdown(summary_frame: pd.DataFrame) -> str:
    if summary_frame.empty:
        return ""
    lines = ["", "## Rank allocation (rank-adaptive configurations at their best LR)", "",
             "Uniform rank = the same final total spread evenly over the modules; a group *differs* when"
             " the 95% t interval of its mean final rank over seeds excludes the uniform rank; seed"
             " agreement = mean Spearman rho between seeds' per-module final ranks.", "",
             "| task | configuration | seeds | modules | uniform rank | modules at rank 0 | rank CV |"
             " seed agreement rho | module groups above / below uniform | layers above / below uniform |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def side(rows, uniform, sign) -> str:
        chosen = rows[rows["differs"] & (np.sign(rows["mean_rank"] - uniform) == sign)]
        return ", ".join(f"{k} {v:.1f}" for k, v in chosen[["key", "mean_rank"]].itertuples(index=False)) or "none"

    for cid, g in summary_frame.groupby(CONFIG_KEY, sort=False):
        r, mods, layers = g.iloc[0], g[g["axis"] == "module"], g[g["axis"] == "layer"]
        u = r["uniform_rank"]
        lines.append(f"| {r['task']} | {r['label']} | {r['seeds']} | {r['modules']} | {u:.2f} |"
                     f" {r['share_zero']:.0%} | {r['rank_cv']:.2f} | {_fmt(r['seed_agreement_rho'], '.2f')} |"
                     f" above: {side(mods, u, 1)}; below: {side(mods, u, -1)} |"
                     f" above: {side(layers, u, 1)}; below: {side(layers, u, -1)} |")
    return "\n".join(lines) + "\n"


def figure(best: pd.DataFrame, ranks: dict):
    """One heatmap per rank-adaptive configuration: layers (rows) x module groups (columns)."""
    from harness.plots import plt
    if not ranks:
        return None
    labels = best.set_index(CONFIG_KEY)["label"]
    fig, axes = plt.subplots(1, len(ranks), figsize=(4.2 * len(ranks), 3.6), squeeze=False)
    for ax, (cid, frame) in zip(axes[0], ranks.items()):
        mean = frame.mean()
        parts = pd.DataFrame([split_module(m) for m in mean.index], index=mean.index, columns=["layer", "group"])
        grid = pd.concat([parts, mean.rename("rank")], axis=1).pivot_table(index="layer", columns="group",
                                                                           values="rank", aggfunc="mean")
        image = ax.imshow(grid.to_numpy(float), aspect="auto", cmap="viridis")
        ax.set_xticks(range(grid.shape[1]), [g.replace("attention.", "att.") for g in grid.columns],
                      rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(grid.shape[0]), [str(i) for i in grid.index], fontsize=7)
        ax.set_ylabel("layer")
        ax.set_title(f"{labels.get(cid, cid)}\nmean final rank, {len(frame)} seed(s)", fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
