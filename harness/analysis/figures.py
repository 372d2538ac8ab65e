"""The sweep's figures, one function per file; each returns a matplotlib Figure.

Every figure draws a configuration in one style (`config_styles`: colour and marker keyed by its
label), so the same configuration looks the same in every panel, figure and task."""

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

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
# pareto_cost's other axes: (label, log scale); the params axis is PARAM_AXES[params]
COST_LABELS = {
    "seconds": ("train seconds per run (at the best LR, mean over seeds)", False),
    "memory": ("peak memory, MB (CUDA max allocated / process peak RSS)", False),
}

# tab10 x 7 markers: 10 and 7 are coprime, so (colour, marker) stays unique for 70 configurations
# and neighbours in the (alphabetical) order differ in both, which colour alone stops doing past 10.
COLORS = plt.get_cmap("tab10").colors
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
FRONT_LABEL, BASELINE_LABEL = "Pareto front", "constant predictor (reported split)"
LEGEND_LAST = (FRONT_LABEL, BASELINE_LABEL)
LEGEND_INCHES = 3.2  # one legend column beside a figure's panels
LEGEND_ROWS = 25  # past this many entries the legend takes a second column


def config_styles(labels) -> dict:
    """{label: {"color", "marker"}} for every label, assigned in sorted order (deterministic).
    Keyed by label, not config_id: the same method configuration on two tasks keeps its style."""
    names = sorted({str(x) for x in pd.Series(labels).dropna()})
    return {name: {"color": COLORS[k % len(COLORS)], "marker": MARKERS[k % len(MARKERS)]}
            for k, name in enumerate(names)}


def _style(styles: dict, label) -> dict:
    return styles.get(str(label), {"color": "k", "marker": "o"})


def _tasks(frame) -> list:
    return sorted(frame["task"].unique())


def _axes(n: int, width=5.5, height=4.2):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def _baseline_line(ax, values) -> None:
    """The constant predictor (majority class / mean target) as a dashed line, when recorded."""
    level = pd.Series(values, dtype=float).mean()
    if np.isfinite(level):
        ax.axhline(level, ls="--", color="grey", lw=1, label=BASELINE_LABEL)


def _legend(ax, fontsize) -> None:
    if ax.get_legend_handles_labels()[0]:  # an empty legend only warns
        ax.legend(fontsize=fontsize)


def _legend_columns(labels) -> int:
    return 1 if pd.Series(labels).nunique() + 2 <= LEGEND_ROWS else 2  # + front and constant predictor


def _figure_legend(fig, axes, ncol: int, fontsize=7) -> float:
    """One legend for the whole figure, right of the panels (labels deduplicated: a configuration
    appears in several panels). Returns the fraction of the width left to the panels."""
    handles, marks = {}, {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            # configurations first; the front and the constant predictor (no style of their own) last
            (marks if label in LEGEND_LAST else handles).setdefault(label, handle)
    handles.update(marks)
    right = 1 - LEGEND_INCHES * ncol / fig.get_figwidth()
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(right, 0.5),
                   fontsize=fontsize, ncol=ncol, frameon=False)
    return right


def _legend_figure(n: int, labels, width=5.5, height=4.2):
    """(fig, axes, legend columns): n panels in a row and room on the right for _figure_legend."""
    ncol = _legend_columns(labels)
    fig, axes = plt.subplots(1, n, figsize=(width * n + LEGEND_INCHES * ncol, height), squeeze=False)
    return fig, list(axes[0]), ncol


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.7, text, ha="center", va="center", transform=ax.transAxes, fontsize=9)


def _front_panel(ax, everything: pd.DataFrame, x: str, xlabel: str, log: bool, styles: dict, missing: str):
    """One configuration per point (reported metric, error bar = sd over seeds) against cost column
    x, the Pareto front (tables.pareto_front) as a step line with hollow squares, the constant
    predictor dashed. Points without a positive cost are not drawn (a log axis; 0 is no measurement)."""
    t = everything[tables.positive(everything[x])]
    for _, r in t.iterrows():
        style = _style(styles, r["label"])
        ax.errorbar([float(r[x])], [r["metric_mean"]], yerr=[0 if pd.isna(r["metric_sd"]) else r["metric_sd"]],
                    fmt=style["marker"], color=style["color"], capsize=3, label=r["label"])
    if len(t):
        f = tables.pareto_front(t, [x])
        # hollow squares mark the front: a one-point front draws no step
        ax.step(f[x].astype(float), f["metric_mean"], where="post", color="k", lw=1, alpha=0.6, marker="s",
                ms=10, mfc="none", label=FRONT_LABEL)
        if log:
            ax.set_xscale("log")
    else:
        _no_data(ax, missing)
    _baseline_line(ax, everything["baseline_metric"])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{everything['metric_name'].iloc[0]} (reported split, mean ± sd over seeds)")
    ax.grid(alpha=0.3)


def pareto(table: pd.DataFrame, params: str = "trainable", styles: dict = None):
    """Reported metric vs the chosen parameter count (log x); the non-dominated configurations
    joined; the constant predictor dashed."""
    x, xlabel = PARAM_AXES[params]
    styles = styles or config_styles(table["label"])
    fig, axes, ncol = _legend_figure(len(_tasks(table)), table["label"])
    for ax, task in zip(axes, _tasks(table)):
        _front_panel(ax, table[table["task"] == task], x, xlabel, True, styles,
                     f"no '{params}' counts in these records")
        ax.set_title(task)
    fig.tight_layout(rect=(0, 0, _figure_legend(fig, axes, ncol), 1))
    return fig


def cost_axes(params: str) -> dict:
    """{axis name: (table column, axis label, log x)} of pareto_cost and pareto_front.csv."""
    x, xlabel = PARAM_AXES[params]
    return {"params": (x, xlabel, True),
            **{axis: (tables.COST_COLUMNS[axis], *COST_LABELS[axis]) for axis in tables.COST_COLUMNS}}


def pareto_cost(table: pd.DataFrame, params: str = "trainable", styles: dict = None):
    """Reported metric against each cost (parameters per --params, train seconds, peak memory):
    one row of panels per task, one panel per cost, each with its own Pareto front; one legend."""
    styles = styles or config_styles(table["label"])
    tasks, axes_spec = _tasks(table), cost_axes(params)
    ncol = _legend_columns(table["label"])
    fig, grid = plt.subplots(len(tasks), len(axes_spec), squeeze=False,
                             figsize=(5.5 * len(axes_spec) + LEGEND_INCHES * ncol, 4.2 * len(tasks)))
    for row, task in zip(grid, tasks):
        for ax, (axis, (x, xlabel, log)) in zip(row, axes_spec.items()):
            _front_panel(ax, table[table["task"] == task], x, xlabel, log, styles,
                         f"no '{params if axis == 'params' else axis}' costs in these records")
            ax.set_title(f"{task}: score vs {axis}")
    right = _figure_legend(fig, grid.ravel(), ncol)
    fig.tight_layout(rect=(0, 0, right, 1))
    return fig


def expected_max(curves: pd.DataFrame, expected: pd.DataFrame, styles: dict = None):
    """Tuning-budget curves (harness.analysis.tuning): per configuration, the expected reported
    score of the trial the selection split picks among n random trials (LRs), n = 1..N."""
    styles = styles or config_styles(expected["label"])
    fig, axes, ncol = _legend_figure(len(_tasks(expected)), expected["label"])
    for ax, task in zip(axes, _tasks(expected)):
        t = expected[expected["task"] == task]
        for _, g in t.groupby(CONFIG_KEY, sort=False):
            style = _style(styles, g["label"].iloc[0])
            ax.plot(g["n"], g["expected_report"], marker=style["marker"], color=style["color"],
                    label=f"{g['label'].iloc[0]} (N={g['N'].iloc[0]})")
        _baseline_line(ax, curves.loc[curves["task"] == task, "baseline_metric"])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("tuning trials n (LRs drawn without replacement)")
        ax.set_ylabel(f"expected {t['metric_name'].iloc[0]} (reported split) of the trial\n"
                      "with the best selection score among n")
        ax.set_title(task)
        ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0, _figure_legend(fig, axes, ncol), 1))
    return fig


def _ratio_title(ax, ratio, task) -> None:
    """The panel's title, with the fitted ratio under it: above the axes, where neither the curves
    nor the legend can cover it."""
    text = "" if ratio is None else tables.ratio_text(ratio["per_task"].get(task, {}))
    lines = [task] + (textwrap.wrap(f"LoRA/FullFT optimal LR: {text}", 70) if text else [])
    ax.set_title("\n".join(lines), fontsize=9 if len(lines) > 1 else None)


def lr_sweep(curves: pd.DataFrame, ratio, styles: dict = None):
    """Selection-split score vs LR per configuration with >= 2 LRs (one point is no curve), with
    the constant predictor dashed and the fitted LoRA/FullFT ratio in each panel's title; one legend
    right of the panels, as in the Pareto figures (inside a panel it covered curves and the ratio)."""
    styles = styles or config_styles(curves["label"])
    fig, axes, ncol = _legend_figure(len(_tasks(curves)), curves.loc[curves["lrs"] >= 2, "label"])
    for ax, task in zip(axes, _tasks(curves)):
        everything = curves[curves["task"] == task]
        t = everything[everything["lrs"] >= 2]
        for _, g in t.groupby(CONFIG_KEY):
            g = g.sort_values("lr")
            style = _style(styles, g["label"].iloc[0])
            ax.errorbar(g["lr"], g["select_mean"], yerr=g["select_sd"].fillna(0), marker=style["marker"],
                        color=style["color"], capsize=2, label=g["label"].iloc[0])
        if len(t):
            ax.set_xscale("log")
        else:
            _no_data(ax, "every configuration ran a single LR: no curve to draw")
        _baseline_line(ax, everything["baseline_metric"])
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("selection-split score (mean ± sd over seeds)")
        ax.grid(alpha=0.3)
        _ratio_title(ax, ratio, task)
    fig.tight_layout(rect=(0, 0, _figure_legend(fig, axes, ncol), 1))
    return fig


def loss_curves(runs: pd.DataFrame, best: pd.DataFrame, styles: dict = None):
    """Train loss per configuration at its best LR: mean over seeds, band = min..max."""
    styles = styles or config_styles(best["label"])
    ok = succeeded(runs)
    fig, axes = _axes(len(_tasks(best)))
    for ax, task in zip(axes, _tasks(best)):
        for _, b in best[best["task"] == task].iterrows():
            sel = tables.at_lr(ok, b[CONFIG_KEY], b["lr"])
            curves = pd.concat([loss_curve(Path(d)) for d in sel["dir"]], axis=1)
            if curves.empty:
                continue
            style = _style(styles, b["label"])  # sparse markers: colours alone repeat past 10 configurations
            line, = ax.plot(curves.index, curves.mean(axis=1), color=style["color"], marker=style["marker"],
                            markevery=0.1, ms=4, label=f"{b['label']} (n={curves.shape[1]})")
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
