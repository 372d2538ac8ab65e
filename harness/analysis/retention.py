"""Retention (forgetting) in the analysis: columns, the table's section, retention.png and
retention_front.csv, from the records' `retention` field (harness/probes/runner.py). Records
without it add nothing: no column, no section, no file.

Per run: `retention_<probe>_before` / `_after` / `_drop` (drop > 0: the adapted model is worse
than the base model on the probe, whatever the probe's direction). Per configuration (at its best
LR, the seeds the table reports): mean and sd over seeds of each. The gain-vs-retention figure
puts each configuration at (task score, probe value after training), both mean ± sd over seeds,
with the base model's value as a dashed line. The front keeps the configurations no other beats
on task score (↑), retention (↑: the probe's value after training, in its good direction) and
stored parameters (↓) at once, per task, model and probe.
"""

from pathlib import Path
from typing import Dict, List

import numpy as np
import pandas as pd

PREFIX = "retention_"
VALUES = ("before", "after", "drop")
FRONT_COLUMNS = ["task", "model", "probe", "config_id", "label", "metric_name", "metric_mean", "metric_sd",
                 "after_mean", "after_sd", "drop_mean", "drop_sd", "before_mean", "higher_is_better",
                 "stored_params", "seeds"]


def columns(record: dict) -> Dict[str, float]:
    """A run's retention columns (load.py's row): before, after and drop of each probe that ran."""
    out = {}
    for probe, entry in (record.get("retention") or {}).items():
        if isinstance(entry, dict) and "skipped" not in entry:
            # a run that failed after "before" has no "after": NaN, never averaged in (tables use successes)
            out.update({f"{PREFIX}{probe}_{k}": np.nan if entry.get(k) is None else float(entry[k]) for k in VALUES})
    return out


def probes(frame: pd.DataFrame) -> List[str]:
    """The probes with columns in a runs frame or a table (sorted)."""
    suffix = "_after_mean" if any(c.endswith("_after_mean") for c in frame.columns) else "_after"
    return sorted(c[len(PREFIX):-len(suffix)] for c in frame.columns
                  if c.startswith(PREFIX) and c.endswith(suffix))


def table_columns(ok: pd.DataFrame) -> Dict[str, float]:
    """Mean and sd over the given runs (one configuration at its best LR) of each retention column."""
    out = {}
    for probe in probes(ok):
        for k in VALUES:
            values = ok[f"{PREFIX}{probe}_{k}"].astype(float).dropna()
            out[f"{PREFIX}{probe}_{k}_mean"] = values.mean() if len(values) else np.nan
            out[f"{PREFIX}{probe}_{k}_sd"] = values.std(ddof=1) if len(values) > 1 else np.nan
    return out


def higher_is_better(probe: str) -> bool:
    """The probe's declared direction (harness/probes); a probe no longer registered: higher."""
    from harness.probes import PROBES
    return PROBES.get(probe).higher_is_better if probe in PROBES else True


def _per_probe(table: pd.DataFrame, probe: str) -> pd.DataFrame:
    """The table's configurations that have this probe's values, with plain column names."""
    rename = {f"{PREFIX}{probe}_{k}_{s}": f"{k}_{s}" for k in VALUES for s in ("mean", "sd")}
    rows = table.rename(columns=rename)
    return rows[rows["after_mean"].notna()] if "after_mean" in rows else rows.iloc[:0]


def front(table: pd.DataFrame) -> pd.DataFrame:
    """FRONT_COLUMNS: per task, model and probe, the configurations on the Pareto front of (task
    score ↑, retention ↑, stored params ↓) (harness.analysis.tables.pareto_front, with retention as
    a cost in its bad direction: the loss itself, or minus a score)."""
    from harness.analysis.tables import pareto_front
    rows = []
    for probe in probes(table):
        sign = -1.0 if higher_is_better(probe) else 1.0
        per = _per_probe(table, probe).assign(probe=probe, higher_is_better=higher_is_better(probe))
        for _, group in per.groupby(["task", "model"]):
            best = pareto_front(group.assign(retention_cost=sign * group["after_mean"]),
                                ["stored_params", "retention_cost"])
            rows.append(best.sort_values("metric_mean", ascending=False)[FRONT_COLUMNS])
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=FRONT_COLUMNS)


def markdown(table: pd.DataFrame) -> str:
    """The table's retention section ('' without retention)."""
    from harness.analysis.tables import knobs_cell
    names = probes(table)
    if not names:
        return ""
    lines = ["", "## Retention (probe on the base model before training vs the adapted model after; drop > 0 ="
             " forgot; mean ± sd over seeds at the best LR)", "",
             "| task | method | knobs | probe | base (before) | after | drop | seeds |", "|" + "---|" * 8]
    for probe in names:
        for _, r in _per_probe(table, probe).iterrows():
            lines.append(f"| {r['task']} | {r['method']} | {knobs_cell(r)} | {probe} | {r['before_mean']:.4f} |"
                         f" {_pm(r['after_mean'], r['after_sd'])} | {_pm(r['drop_mean'], r['drop_sd'], '+.4f')} |"
                         f" {r['seeds']} |")
    return "\n".join(lines) + "\n"


def _pm(mean: float, sd: float, spec: str = ".4f") -> str:
    return format(mean, spec) + ("" if not np.isfinite(sd) else f" ± {sd:.4f}")


def figures(table: pd.DataFrame, styles: dict = None) -> dict:
    """{'retention': figure} (gain vs retention), or {} when no record has retention."""
    names = probes(table)
    if not names:
        return {}
    from harness.plots import plt
    tasks = sorted(table["task"].unique())
    on_front = front(table)
    fig, axes = plt.subplots(len(names), len(tasks), figsize=(5.5 * len(tasks) + 3, 4.2 * len(names)),
                             squeeze=False)
    for row, probe in zip(axes, names):
        per = _per_probe(table, probe)
        for ax, task in zip(row, tasks):
            mine = on_front[(on_front["probe"] == probe) & (on_front["task"] == task)]
            _panel(ax, per[per["task"] == task], mine, probe, task, styles or {})
    handles = {}
    for ax in axes.flat:
        handles.update(dict(zip(*reversed(ax.get_legend_handles_labels()))))
    right = 1 - 3 / fig.get_figwidth()
    fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(right, 0.5), fontsize=7,
               frameon=False)
    fig.tight_layout(rect=(0, 0, right, 1))
    return {"retention": fig}


def _panel(ax, per: pd.DataFrame, on_front: pd.DataFrame, probe: str, task: str, styles: dict) -> None:
    for _, r in per.iterrows():
        style = styles.get(str(r["label"]), {"color": None, "marker": "o"})
        ax.errorbar([r["metric_mean"]], [r["after_mean"]], xerr=[_zero(r["metric_sd"])], yerr=[_zero(r["after_sd"])],
                    fmt=style["marker"], color=style["color"], capsize=3, label=r["label"])
    if len(on_front):  # hollow squares: no configuration beats these on score, retention and stored params
        ax.plot(on_front["metric_mean"], on_front["after_mean"], ls="none", marker="s", ms=12, mfc="none", color="k",
                alpha=0.6, label="front (score, retention, stored params)")
    base = per["before_mean"].astype(float).mean() if len(per) else np.nan
    if np.isfinite(base):
        ax.axhline(base, ls="--", color="grey", lw=1, label="base model (before training)")
    else:
        ax.text(0.5, 0.5, f"no {probe} values for {task}", ha="center", va="center", transform=ax.transAxes)
    direction = "higher" if higher_is_better(probe) else "lower"
    metric = per["metric_name"].iloc[0] if len(per) else "task metric"
    ax.set_xlabel(f"{metric} (reported split, mean ± sd over seeds)")
    ax.set_ylabel(f"{probe} after training ({direction} is better)")
    ax.set_title(f"{task}: gain vs retention")
    ax.grid(alpha=0.3)


def _zero(sd) -> float:
    return 0.0 if not np.isfinite(float(sd)) else float(sd)


def write(table: pd.DataFrame, figs: dict, out_dir: Path) -> List[Path]:
    """retention.png and retention_front.csv when the records have retention; [] (and any stale
    copies of an earlier analysis removed) when not."""
    out_dir = Path(out_dir)
    png, csv = out_dir / "retention.png", out_dir / "retention_front.csv"
    if "retention" not in figs:
        png.unlink(missing_ok=True)
        csv.unlink(missing_ok=True)
        return []
    figs["retention"].savefig(png, dpi=120)
    csv.write_text(front(table).to_csv(index=False))
    return [png, csv]
