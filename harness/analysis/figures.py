"""The sweep's figures, one function per file; each returns a matplotlib Figure."""

from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis import tables
from harness.analysis.load import CONFIG_KEY, loss_curve, rank_events
from harness.analysis.tables import succeeded
from harness.plots import plt, rank_heatmap

# --params: which count is the Pareto plot's x axis (table column, axis label)
PARAM_AXES = {
    "trainable": ("adapter_params", "trainable adapter params at init (log; head excluded)"),
    "stored": ("stored_params", "params in the saved artifact (log; incl. any head copy)"),
    "nonzero": ("nonzero_params", "non-zero adapter entries after training (log; no head)"),
}


def _tasks(frame) -> list:
    return sorted(frame["task"].unique())


def _axes(n: int, width=5.5, height=4.2):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def _baseline_line(ax, values) -> None:
    """The constant predictor (majority class / mean target) as a dashed line, when recorded."""
    level = pd.Series(values, dtype=float).mean()
    if np.isfinite(level):
        ax.axhline(level, ls="--", color="grey", lw=1, label="constant predictor (reported split)")


def _frontier(t: pd.DataFrame, x: str) -> pd.DataFrame:
    """Non-dominated rows: better than every row with fewer parameters."""
    t = t.sort_values([x, "metric_mean"], ascending=[True, False])
    return t[t["metric_mean"] > t["metric_mean"].cummax().shift(fill_value=-np.inf)]


def _legend(ax, fontsize) -> None:
    if ax.get_legend_handles_labels()[0]:  # an empty legend only warns
        ax.legend(fontsize=fontsize)


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.7, text, ha="center", va="center", transform=ax.transAxes, fontsize=9)


def pareto(table: pd.DataFrame, params: str = "trainable"):
    """Reported metric vs the chosen parameter count (log x); the non-dominated configurations
    joined; the constant predictor dashed."""
    x, xlabel = PARAM_AXES[params]
    fig, axes = _axes(len(_tasks(table)))
    for ax, task in zip(axes, _tasks(table)):
        everything = table[table["task"] == task]
        t = everything[everything[x].astype(float) > 0]
        for method, g in t.groupby("method"):
            ax.errorbar(g[x].astype(float), g["metric_mean"], yerr=g["metric_sd"].fillna(0), fmt="o", capsize=3,
                        label=method)
            for _, r in g.iterrows():
                ax.annotate(r["knobs"], (r[x], r["metric_mean"]), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
        if len(t):
            f = _frontier(t, x)
            # hollow squares mark the frontier: a one-point frontier draws no step
            ax.step(f[x].astype(float), f["metric_mean"], where="post", color="k", lw=1, alpha=0.6, marker="s",
                    ms=10, mfc="none", label="frontier")
            ax.set_xscale("log")
        else:
            _no_data(ax, f"no '{params}' counts in these records")
        _baseline_line(ax, everything["baseline_metric"])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{everything['metric_name'].iloc[0]} (reported split, mean ± sd over seeds)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        _legend(ax, 7)
    fig.tight_layout()
    return fig


def _ratio_box(ax, ratio, task) -> None:
    if ratio is None:
        return
    text = tables.ratio_text(ratio["per_task"].get(task, {}))
    ax.text(0.02, 0.02, f"LoRA/FullFT optimal LR: {text}", transform=ax.transAxes, fontsize=8,
            bbox={"facecolor": "white", "alpha": 0.8})


def lr_sweep(curves: pd.DataFrame, ratio):
    """Selection-split score vs LR per configuration with >= 2 LRs (one point is no curve), with
    the constant predictor dashed and the fitted LoRA/FullFT ratio."""
    fig, axes = _axes(len(_tasks(curves)))
    for ax, task in zip(axes, _tasks(curves)):
        everything = curves[curves["task"] == task]
        t = everything[everything["lrs"] >= 2]
        for _, g in t.groupby(CONFIG_KEY):
            g = g.sort_values("lr")
            ax.errorbar(g["lr"], g["select_mean"], yerr=g["select_sd"].fillna(0), marker="o", capsize=2,
                        label=g["label"].iloc[0])
        if len(t):
            ax.set_xscale("log")
        else:
            _no_data(ax, "every configuration ran a single LR: no curve to draw")
        _baseline_line(ax, everything["baseline_metric"])
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("selection-split score (mean ± sd over seeds)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        _legend(ax, 6)
        _ratio_box(ax, ratio, task)
    fig.tight_layout()
    return fig


def loss_curves(runs: pd.DataFrame, best: pd.DataFrame):
    """Train loss per configuration at its best LR: mean over seeds, band = min..max."""
    ok = succeeded(runs)
    fig, axes = _axes(len(_tasks(best)))
    for ax, task in zip(axes, _tasks(best)):
        for _, b in best[best["task"] == task].iterrows():
            sel = tables.at_lr(ok, b[CONFIG_KEY], b["lr"])
            curves = pd.concat([loss_curve(Path(d)) for d in sel["dir"]], axis=1)
            if curves.empty:
                continue
            line, = ax.plot(curves.index, curves.mean(axis=1), label=f"{b['label']} (n={curves.shape[1]})")
            ax.fill_between(curves.index, curves.min(axis=1), curves.max(axis=1), color=line.get_color(), alpha=0.15)
        prior = ok.loc[ok["task"] == task, "prior_loss"].astype(float).mean()
        if np.isfinite(prior):
            ax.axhline(prior, ls="--", color="grey", lw=1, label="constant predictor's loss (class prior)")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("train loss (task cross-entropy / MSE)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        _legend(ax, 6)
    fig.tight_layout()
    return fig


def ranks(runs: pd.DataFrame):
    """AdaLoRA (or any rank-adaptive method): per-module rank over steps for the first seed of each
    configuration, and the final rank distribution over modules."""
    ok = succeeded(runs)
    adaptive = [(r, rank_events(Path(r["dir"]))) for _, r in ok.sort_values("seed").iterrows()]
    adaptive = [(r, ev) for r, ev in adaptive if ev[1] and len({tuple(v) for v in ev[1].values()}) > 0
                and r["rank_adaptive"]]
    seen, picked = set(), []
    for r, ev in adaptive:
        key = (r[CONFIG_KEY], r["lr"])
        if key not in seen:
            seen.add(key)
            picked.append((r, ev))
    if not picked:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no rank-adaptive (AdaLoRA) runs in this sweep", ha="center", va="center")
        return fig
    fig, axes = plt.subplots(len(picked), 2, figsize=(14, 4 * len(picked)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1]})
    for (r, (steps, per_module)), (ax_heat, ax_bar) in zip(picked, axes):
        modules = sorted(per_module)
        rank_heatmap(steps, modules, [per_module[m] for m in modules], ax=ax_heat,
                     title=f"{r['task']} {r['label']} lr {r['lr']:.1e} seed {r['seed']}")
        final = [per_module[m][-1] for m in modules]
        ax_bar.hist(final, bins=np.arange(0, max(final) + 2) - 0.5)
        ax_bar.set_xlabel("final rank")
        ax_bar.set_ylabel("modules")
        ax_bar.set_title("final rank distribution")
    fig.tight_layout()
    return fig
