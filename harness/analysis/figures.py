"""The sweep's figures, one function per file; each returns a matplotlib Figure."""

from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis.load import loss_curve, rank_events
from harness.analysis.tables import succeeded
from harness.plots import plt, rank_heatmap


def _tasks(frame) -> list:
    return sorted(frame["task"].unique())


def _axes(n: int, width=5.5, height=4.2):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def _label(row) -> str:
    return f"{row['method']} {row['knobs']}".strip()


def pareto(table: pd.DataFrame):
    """Reported metric vs adapter parameters (log x); the non-dominated configurations joined."""
    fig, axes = _axes(len(_tasks(table)))
    for ax, task in zip(axes, _tasks(table)):
        t = table[table["task"] == task].sort_values("adapter_params")
        for method, g in t.groupby("method"):
            ax.errorbar(g["adapter_params"], g["metric_mean"], yerr=g["metric_sd"].fillna(0), fmt="o", capsize=3,
                        label=method)
            for _, r in g.iterrows():
                ax.annotate(r["knobs"], (r["adapter_params"], r["metric_mean"]), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
        front, best = [], -np.inf
        for _, r in t.iterrows():  # ascending params: on the frontier if better than all cheaper ones
            if r["metric_mean"] > best:
                front.append(r)
                best = r["metric_mean"]
        f = pd.DataFrame(front)
        ax.step(f["adapter_params"], f["metric_mean"], where="post", color="k", lw=1, alpha=0.6, label="frontier")
        ax.set_xscale("log")
        ax.set_xlabel("trainable adapter parameters (log scale; head excluded)")
        ax.set_ylabel(f"{t['metric_name'].iloc[0]} (reported split, mean ± sd over seeds)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def lr_sweep(curves: pd.DataFrame, ratio):
    """Selection-split score vs LR per configuration, with the fitted LoRA/FullFT ratio."""
    fig, axes = _axes(len(_tasks(curves)))
    for ax, task in zip(axes, _tasks(curves)):
        t = curves[curves["task"] == task]
        for (method, knobs), g in t.groupby(["method", "knobs"]):
            g = g.sort_values("lr")
            ax.errorbar(g["lr"], g["select_mean"], yerr=g["select_sd"].fillna(0), marker="o", capsize=2,
                        label=f"{method} {knobs}".strip(), ls="-" if len(g) > 1 else "none")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("selection-split score (mean ± sd over seeds)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
        if ratio is not None:
            r = ratio["per_config"]
            r = r[r["task"] == task]
            if len(r):
                ax.text(0.02, 0.02, f"LoRA/FullFT optimal LR: {np.exp(np.log(r['ratio']).mean()):.1f}x"
                        + (" (anchors only)" if ratio["single_lr"] else ""),
                        transform=ax.transAxes, fontsize=9, bbox={"facecolor": "white", "alpha": 0.8})
    fig.tight_layout()
    return fig


def loss_curves(runs: pd.DataFrame, best: pd.DataFrame):
    """Train loss per configuration at its best LR: mean over seeds, band = min..max."""
    ok = succeeded(runs)
    fig, axes = _axes(len(_tasks(best)))
    for ax, task in zip(axes, _tasks(best)):
        for _, b in best[best["task"] == task].iterrows():
            sel = ok[(ok["task"] == task) & (ok["method"] == b["method"]) & (ok["knobs"] == b["knobs"])
                     & np.isclose(ok["lr"].astype(float), b["lr"])]
            curves = pd.concat([loss_curve(Path(d)) for d in sel["dir"]], axis=1)
            if curves.empty:
                continue
            line, = ax.plot(curves.index, curves.mean(axis=1), label=f"{_label(b)} (n={curves.shape[1]})")
            ax.fill_between(curves.index, curves.min(axis=1), curves.max(axis=1), color=line.get_color(), alpha=0.15)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("train loss (task cross-entropy / MSE)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def ranks(runs: pd.DataFrame):
    """AdaLoRA (or any rank-adaptive method): per-module rank over steps for the first seed of each
    configuration, and the final rank distribution over modules."""
    ok = succeeded(runs)
    adaptive = [(r, rank_events(Path(r["dir"]))) for _, r in ok.sort_values("seed").iterrows()]
    adaptive = [(r, ev) for r, ev in adaptive if ev[1] and len({tuple(v) for v in ev[1].values()}) > 0
                and r["kind"] == "adalora"]
    seen, picked = set(), []
    for r, ev in adaptive:
        key = (r["task"], r["knobs"], r["lr"])
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
                     title=f"{r['task']} adalora {r['knobs']} lr {r['lr']:.1e} seed {r['seed']}")
        final = [per_module[m][-1] for m in modules]
        ax_bar.hist(final, bins=np.arange(0, max(final) + 2) - 0.5)
        ax_bar.set_xlabel("final rank")
        ax_bar.set_ylabel("modules")
        ax_bar.set_title("final rank distribution")
    fig.tight_layout()
    return fig
