"""Had training plateaued when it stopped? A configuration still improving at its last evaluation
scores what its step budget allowed, not what the method can do, so a comparison or an LR ratio
read from it answers a budget question. Per configuration at its best LR, from each seed's
metrics.jsonl: the selection-split score at every evaluation (mean ± sd over seeds:
select_curves.png), and the per-seed gain over the last evaluation interval with its t 95%
interval (plateau.csv, a table.md section). `still_rising` when that interval lies above 0.
Beside it, the level the train loss settled at (mean over the last quarter of training, per seed,
with its t interval) and the constant predictor's loss: the plateau adapters#739 reports is a
LoReFT loss that stays near that prior while LoRA's falls, so whether rank or positions move the
plateau reads off this level across configurations.

With 3 seeds the interval is wide: "not rising" is the absence of evidence that more steps help,
not proof that they would not; the gain's mean and interval are printed so a reader can judge.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis.load import CONFIG_KEY, events, loss_curve, tail_mean

COLUMNS = [CONFIG_KEY, "task", "label", "metric_name", "seeds", "evals", "last_step", "previous_step",
           "last_mean", "best_step", "gain_mean", "gain_ci95_low", "gain_ci95_high", "still_rising",
           "loss_tail_mean", "loss_tail_ci95_low", "loss_tail_ci95_high", "prior_loss"]


def select_curve(run_dir: Path, metric: str) -> pd.Series:
    """step -> selection-split score of one run (split_val's select part; the one eval split under
    other protocols)."""
    keys = (f"eval/select/{metric}", f"eval/{metric}")
    points = {}
    for event in events(run_dir):
        key = next((k for k in keys if k in event), None)
        if key is not None and "step" in event:
            points[int(event["step"])] = float(event[key])
    return pd.Series(points, dtype=float).sort_index()


def _seed_curves(runs: pd.DataFrame, best: pd.Series) -> pd.DataFrame:
    """steps x seeds, the seeds at the configuration's best LR (steps all seeds evaluated)."""
    from harness.analysis.tables import at_lr, succeeded
    sel = at_lr(succeeded(runs), best[CONFIG_KEY], best["lr"])
    metric = best["metric_name"]
    curves = {seed: select_curve(Path(d), metric) for seed, d in zip(sel["seed"], sel["dir"])}
    frame = pd.DataFrame(curves)
    return frame.dropna() if len(frame.columns) else frame


def seed_curves(runs: pd.DataFrame, best: pd.DataFrame) -> dict:
    """{config_id: steps x seeds} at each configuration's best LR: every metrics.jsonl read once,
    for both `curves` and `table`."""
    return {b[CONFIG_KEY]: _seed_curves(runs, b) for _, b in best.iterrows()}


def loss_levels(runs: pd.DataFrame, best: pd.DataFrame) -> dict:
    """{config_id: (per-seed train-loss level over the last quarter, mean prior loss)} at each
    configuration's best LR."""
    from harness.analysis.tables import at_lr, succeeded
    levels = {}
    for _, b in best.iterrows():
        sel = at_lr(succeeded(runs), b[CONFIG_KEY], b["lr"])
        tails = [tail_mean(c) for c in (loss_curve(Path(d)) for d in sel["dir"]) if not c.empty]
        levels[b[CONFIG_KEY]] = (pd.Series(tails, dtype=float), float(sel["prior_loss"].astype(float).mean()))
    return levels


def curves(best: pd.DataFrame, frames: dict) -> pd.DataFrame:
    """One row per configuration and evaluation step: select_mean, select_sd, seeds."""
    rows = []
    for _, b in best.iterrows():
        frame = frames[b[CONFIG_KEY]]
        for step, values in frame.iterrows():
            rows.append({CONFIG_KEY: b[CONFIG_KEY], "task": b["task"], "label": b["label"], "step": step,
                         "select_mean": values.mean(), "select_sd": values.std(ddof=1) if len(values) > 1 else np.nan,
                         "seeds": len(values)})
    return pd.DataFrame(rows, columns=[CONFIG_KEY, "task", "label", "step", "select_mean", "select_sd", "seeds"])


def table(best: pd.DataFrame, frames: dict, levels: dict = None) -> pd.DataFrame:
    """COLUMNS, one row per configuration evaluated at least twice (loss columns NaN without `levels`)."""
    from harness.analysis.tables import t_interval
    rows = []
    for _, b in best.iterrows():
        frame = frames[b[CONFIG_KEY]]
        if len(frame) < 2:
            continue
        gains = frame.iloc[-1] - frame.iloc[-2]
        low, high = t_interval(gains)
        tails, prior = (levels or {}).get(b[CONFIG_KEY], (pd.Series(dtype=float), np.nan))
        loss_low, loss_high = t_interval(tails) if len(tails) else (np.nan, np.nan)
        mean_curve = frame.mean(axis=1)
        rows.append({CONFIG_KEY: b[CONFIG_KEY], "task": b["task"], "label": b["label"],
                     "metric_name": b["metric_name"], "seeds": frame.shape[1], "evals": len(frame),
                     "last_step": int(frame.index[-1]), "previous_step": int(frame.index[-2]),
                     "last_mean": float(mean_curve.iloc[-1]), "best_step": int(mean_curve.idxmax()),
                     "gain_mean": float(gains.mean()), "gain_ci95_low": low, "gain_ci95_high": high,
                     "still_rising": bool(np.isfinite(low) and low > 0),
                     "loss_tail_mean": float(tails.mean()) if len(tails) else np.nan,
                     "loss_tail_ci95_low": loss_low, "loss_tail_ci95_high": loss_high, "prior_loss": prior})
    return pd.DataFrame(rows, columns=COLUMNS)


def markdown(plateaus: pd.DataFrame) -> str:
    """The table.md section ('' when no configuration was evaluated twice)."""
    from harness.analysis.tables import _fmt
    if plateaus.empty:
        return ""
    lines = ["", "## Plateau (selection-split score at the last two evaluations, at the best LR; gain = last -"
             " previous, per seed, 95% t interval)", "",
             "| task | configuration | seeds | steps | score at last eval | best eval step | gain over last interval |"
             " still rising | train loss, last quarter | constant predictor's loss |", "|" + "---|" * 10]
    for _, r in plateaus.iterrows():
        ci = "" if not np.isfinite(r["gain_ci95_low"]) else f" [{r['gain_ci95_low']:+.4f}, {r['gain_ci95_high']:+.4f}]"
        lines.append(f"| {r['task']} | {r['label']} | {r['seeds']} | {r['previous_step']}→{r['last_step']} |"
                     f" {r['last_mean']:.4f} | {r['best_step']} | {r['gain_mean']:+.4f}{ci} |"
                     f" {'yes' if r['still_rising'] else ''} | {_level(r)} | {_fmt(r['prior_loss'], '.4f')} |")
    return "\n".join(lines) + "\n"


def _level(r) -> str:
    from harness.analysis.tables import _fmt
    ci = "" if not np.isfinite(r["loss_tail_ci95_low"]) else f" [{r['loss_tail_ci95_low']:.4f}, {r['loss_tail_ci95_high']:.4f}]"
    return _fmt(r["loss_tail_mean"], ".4f") + ci if np.isfinite(r["loss_tail_mean"]) else ""


def figure(select_curves: pd.DataFrame, styles: dict = None):
    """Selection score over steps per configuration at its best LR (mean, band = ± sd), per task;
    None when no configuration was evaluated twice."""
    if select_curves.empty or select_curves.groupby(CONFIG_KEY).size().max() < 2:
        return None
    from harness.analysis.figures import _axes, _legend, _style, config_styles
    styles = styles or config_styles(select_curves["label"])
    tasks = sorted(select_curves["task"].unique())
    fig, axes = _axes(len(tasks))
    for ax, task in zip(axes, tasks):
        for label, g in select_curves[select_curves["task"] == task].groupby("label", sort=True):
            style = _style(styles, label)
            line, = ax.plot(g["step"], g["select_mean"], color=style["color"], marker=style["marker"], ms=4,
                            label=f"{label} (n={int(g['seeds'].min())})")
            sd = g["select_sd"].fillna(0)
            ax.fill_between(g["step"], g["select_mean"] - sd, g["select_mean"] + sd, color=line.get_color(), alpha=0.12)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("selection-split score (mean ± sd over seeds)")
        ax.set_title(f"{task}: has it plateaued?")
        ax.grid(alpha=0.3)
        _legend(ax, 6)
    fig.tight_layout()
    return fig
