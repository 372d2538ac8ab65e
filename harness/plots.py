"""Matplotlib figures shared by the W&B sink and harness.analysis."""

import sys

import matplotlib

if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")  # headless (sweeps, CI); a notebook keeps its inline backend
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def short_module(name: str) -> str:
    """'base_model.model.bert.encoder.layer.3.attention.self.query' -> 'L3.attention.self.query'."""
    parts = name.split(".")
    if "layer" in parts:
        i = parts.index("layer")
        return f"L{parts[i + 1]}." + ".".join(parts[i + 2:])
    return ".".join(parts[-3:])


def rank_heatmap(steps, modules, ranks, title="", ax=None):
    """Rank per module (rows) over steps (columns)."""
    own = ax is None
    fig, ax = plt.subplots(figsize=(10, max(3, 0.22 * len(modules)))) if own else (ax.figure, ax)
    data = np.array([[np.nan if v is None else v for v in row] for row in ranks], dtype=float)
    im = ax.imshow(data, aspect="auto", interpolation="nearest", cmap="viridis")
    ticks = np.linspace(0, len(steps) - 1, min(len(steps), 8)).astype(int)
    ax.set_xticks(ticks, [str(steps[i]) for i in ticks])
    ax.set_yticks(range(len(modules)), [short_module(m) for m in modules], fontsize=6)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("adapted module")
    ax.set_title(title or "rank per module")
    fig.colorbar(im, ax=ax, label="rank")
    if own:
        fig.tight_layout()
    return fig
