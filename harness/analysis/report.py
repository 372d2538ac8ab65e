"""Sweep directories -> results/<sweep>/: table.md/.csv, runs.csv, paired.csv, failed.csv,
pareto.png, lr_sweep.png, loss_curves.png, ranks.png and study.json (commands, git SHA, wall time);
plateau.csv + select_curves.png (selection score over steps at the best LR, and whether it was still
rising at the last evaluation: harness.analysis.plateau);
pareto_cost.png + pareto_front.csv (score against params, train seconds and peak memory) and
expected_max.png/.csv (tuning-budget curves, harness.analysis.tuning; only when a configuration has
>= 2 LRs); retention.png + retention_front.csv (gain vs retention, harness.analysis.retention;
only when the records have retention probes) + retention_paired.csv and retention_tradeoff.csv
(does a method that learns less forget less? harness.analysis.retention_stats);
allocation.csv + allocation.png (where rank-adaptive methods put their final ranks:
harness.analysis.allocation; only with rank-adaptive runs); matched_paired.csv (a method against its
declared counterpart at the nearest non-zero count, e.g. AdaLoRA and LoRI-S against LoRA:
harness.analysis.matched; only when such a pair exists).

`params` picks the Pareto plot's x axis: `trainable` (default) = adapter parameters trainable at
init, head excluded. It is the default because it is the budget a method's config fixes and the
one that sets optimizer memory and gradient work, every record has it (old ones too), and it
treats the head alike for every method. `stored` (the saved artifact, head copy included where a
method saves it) and `nonzero` (adapter entries left non-zero after training: AdaLoRA's pruned
ranks, LoRI-S's masks) answer "what does it cost to keep/ship" and are drawn on request; records
written before those counts existed have no point on those axes."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import pandas as pd

from harness.analysis import allocation, figures, matched, plateau, retention, retention_stats, tables, tuning
from harness.analysis.load import load_runs
from harness.sweep_log import INVOCATIONS, read

FIGURES = ("pareto", "lr_sweep", "loss_curves", "select_curves", "ranks", "allocation", "pareto_cost",
           "expected_max")


@dataclass
class Report:
    name: str
    sweep_dirs: List[Path]
    runs: pd.DataFrame
    table: pd.DataFrame
    curves: pd.DataFrame
    pairs: pd.DataFrame
    failed: pd.DataFrame
    ratio: dict
    study: dict
    params: str = "trainable"
    markdown: str = ""
    figures: Dict[str, object] = field(default_factory=dict)
    fronts: pd.DataFrame = None  # pareto_front.csv
    expected_max: pd.DataFrame = None  # expected_max.csv (tuning-budget curves)
    skipped: Dict[str, str] = field(default_factory=dict)  # figure -> why it was not drawn
    retention_pairs: pd.DataFrame = None  # retention_paired.csv (each configuration vs FullFT, by seed)
    tradeoff: pd.DataFrame = None  # retention_tradeoff.csv (rho of task score and drop)
    plateaus: pd.DataFrame = None  # plateau.csv (gain over the last evaluation interval)
    allocation: pd.DataFrame = None  # allocation.csv (rank-adaptive final ranks against uniform)
    matched_pairs: pd.DataFrame = None  # matched_paired.csv (vs the declared counterpart at the nearest count)


def _study(sweep_dirs, runs: pd.DataFrame) -> dict:
    """How the results were produced: every sweep command with its wall time, and the code version."""
    invocations = []
    for d in sweep_dirs:
        events = read(Path(d) / INVOCATIONS)
        ends = {e["invocation"]: e for e in events if e.get("event") == "end"}
        for e in events:
            if e.get("event") == "start":
                end = ends.get(e["invocation"], {})
                invocations.append({"sweep_dir": str(d), "command": " ".join(["python -m harness", *e["argv"][1:]]),
                                    "jobs": e["jobs"], "wall_seconds": end.get("wall_seconds"),
                                    "success": end.get("success"), "skipped": end.get("skipped"),
                                    "failed": end.get("failed")})
    return {"invocations": invocations,
            "wall_seconds_total": sum(i["wall_seconds"] or 0 for i in invocations),
            "git_shas": sorted({s for s in runs["git_sha"].dropna()}),
            "any_dirty": bool(runs["git_dirty"].fillna(False).any()),
            "devices": sorted({d for d in runs["device"].dropna()}),
            "runs": int(len(runs)), "succeeded": int((runs["status"] == "success").sum())}


def build(sweep_dirs, name: str = None, params: str = "trainable") -> Report:
    if params not in figures.PARAM_AXES:
        raise ValueError(f"params must be one of {sorted(figures.PARAM_AXES)} (got '{params}')")
    sweep_dirs = [Path(d) for d in sweep_dirs]
    name = name or sweep_dirs[0].name
    runs = load_runs(sweep_dirs)
    ok = tables.succeeded(runs)
    if ok.empty:
        raise ValueError(f"no successful run in {[str(d) for d in sweep_dirs]}; failures:\n"
                         f"{tables.failures(runs).to_string()}")
    table, curves = tables.config_table(runs), tables.lr_curves(runs)
    report = Report(name=name, sweep_dirs=sweep_dirs, runs=runs, table=table, curves=curves,
                    pairs=tables.paired(runs), failed=tables.failures(runs), ratio=tables.lr_ratio(runs),
                    study=_study(sweep_dirs, runs), params=params)
    s = report.study
    notes = [f"{s['succeeded']} of {s['runs']} runs succeeded; git {', '.join(sha[:10] for sha in s['git_shas'])}"
             + (" (uncommitted changes in some runs)" if s["any_dirty"] else "") + f"; device {', '.join(s['devices'])}",
             "metric = the task's report metric on the protocol's reported split; best LR chosen on the"
             " selection split (mean over the seeds run at every LR); adapter params (trainable at init) and nonzero (after"
             " training) exclude the task head (shown apart); stored = the saved artifact, with a head copy"
             " where the method saves one; baseline = the constant predictor (majority class / mean target)"
             f" on the reported split; Pareto x axis: {params} parameters"]
    report.markdown = tables.markdown(table, report.pairs, report.failed, report.ratio, f"Sweep: {name}", notes)
    report.markdown += retention.markdown(table)  # only when the records have retention
    best, styles = tables.best_lrs(runs), figures.config_styles(runs["label"])  # one style per configuration
    report.retention_pairs, report.tradeoff = retention_stats.paired(runs, best), retention_stats.tradeoff(table)
    report.markdown += retention_stats.markdown(report.retention_pairs, report.tradeoff)
    eval_frames = plateau.seed_curves(runs, best)  # each run's metrics.jsonl read once
    report.plateaus = plateau.table(best, eval_frames, plateau.loss_levels(runs, best))
    report.markdown += plateau.markdown(report.plateaus)
    final_ranks = allocation.seed_ranks(runs, best)
    report.allocation = allocation.summary(best, final_ranks)
    report.markdown += allocation.markdown(report.allocation)
    report.matched_pairs = matched.pairs(runs, best)
    report.markdown += matched.markdown(report.matched_pairs)
    report.fronts = tables.cost_fronts(table, figures.PARAM_AXES[params][0])
    report.expected_max = tuning.expected_max_table(curves)
    report.figures = {"pareto": figures.pareto(table, params, styles),
                      "lr_sweep": figures.lr_sweep(curves, report.ratio, styles),
                      "loss_curves": figures.loss_curves(runs, best, styles), "ranks": figures.ranks(runs),
                      "pareto_cost": figures.pareto_cost(table, params, styles)}
    if final_ranks:
        report.figures["allocation"] = allocation.figure(best, final_ranks)
    else:
        report.skipped["allocation"] = "no rank-adaptive run"
    select_curves = plateau.figure(plateau.curves(best, eval_frames), styles)
    if select_curves is None:
        report.skipped["select_curves"] = "no configuration was evaluated at two or more steps"
    else:
        report.figures["select_curves"] = select_curves
    skip = tuning.skip_reason(report.expected_max)
    if skip:
        report.skipped["expected_max"] = skip
    else:
        report.figures["expected_max"] = figures.expected_max(curves, report.expected_max, styles)
    report.figures.update(retention.figures(table, styles))  # gain vs retention, when recorded
    for fig in report.figures.values():
        figures.plt.close(fig)  # detached from pyplot: shown only where the caller displays it
    return report


RECORD_COPY = ("result.json", "metrics.jsonl", "config.yaml")


def copy_records(report: Report, out_dir: Path) -> Path:
    """The run records themselves (no checkpoints, artifacts or W&B files) in <out>/runs/<job>/, so
    a committed study can be re-analysed: `python -m harness.analysis results/NAME/runs`."""
    import shutil
    runs_dir = Path(out_dir) / "runs"
    for run_dir in report.runs["dir"]:
        target = runs_dir / Path(run_dir).name
        if Path(run_dir).resolve() == target.resolve():
            continue  # analysing the copies themselves
        target.mkdir(parents=True, exist_ok=True)
        for f in RECORD_COPY:
            if (Path(run_dir) / f).is_file():
                shutil.copy2(Path(run_dir) / f, target / f)
    # every sweep's commands, not the last one's: the union of their lines (and of a copy already there)
    sources = [runs_dir] + [Path(d) for d in report.sweep_dirs if Path(d).resolve() != runs_dir.resolve()]
    lines = []
    for d in sources:
        if (d / INVOCATIONS).is_file():
            lines += [ln for ln in (d / INVOCATIONS).read_text().splitlines() if ln.strip() and ln not in lines]
    if lines:
        (runs_dir / INVOCATIONS).write_text("\n".join(lines) + "\n")
    return runs_dir


def write(report: Report, out_dir: Path, with_records: bool = True) -> List[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [copy_records(report, out_dir)] if with_records else []

    def put(fname, text):
        (out_dir / fname).write_text(text)
        written.append(out_dir / fname)

    put("table.md", report.markdown)
    put("table.csv", report.table.to_csv(index=False))
    put("runs.csv", report.runs.drop(columns=["flags"]).assign(flags=report.runs["flags"].map(";".join))
        .to_csv(index=False))
    put("paired.csv", report.pairs.to_csv(index=False))
    put("failed.csv", report.failed.to_csv(index=False))
    if report.ratio is not None:
        put("lr_ratio.csv", report.ratio["per_config"].to_csv(index=False))
    put("study.json", json.dumps(report.study, indent=2) + "\n")
    put("pareto_front.csv", report.fronts.to_csv(index=False))
    put("plateau.csv", report.plateaus.to_csv(index=False))
    for fname, frame in (("allocation.csv", report.allocation), ("matched_paired.csv", report.matched_pairs)):
        if frame is not None and len(frame):
            put(fname, frame.to_csv(index=False))
        else:
            (out_dir / fname).unlink(missing_ok=True)  # an earlier analysis's file is not these runs'
    if "expected_max" in report.skipped:
        for stale in ("expected_max.png", "expected_max.csv"):  # an earlier analysis's curves are not these runs'
            (out_dir / stale).unlink(missing_ok=True)
        print(f"expected_max.png/.csv not written: {report.skipped['expected_max']}")
    else:
        put("expected_max.csv", report.expected_max.to_csv(index=False))
    for key in FIGURES:
        if key not in report.figures:
            (out_dir / f"{key}.png").unlink(missing_ok=True)  # skipped: an earlier analysis's copy is not these runs'
            continue
        path = out_dir / f"{key}.png"
        report.figures[key].savefig(path, dpi=120)
        written.append(path)
    written += retention.write(report.table, report.figures, out_dir)  # retention.png, retention_front.csv
    written += retention_stats.write(report.retention_pairs, report.tradeoff, out_dir)
    return written
