"""harness.analysis.plateau: the selection score over evaluations at the best LR, the gain over
the last interval with its t interval, `still_rising` only when that interval lies above 0, and
the files and figure the report writes from them."""

import json

import numpy as np
import pytest

from harness import analysis
from harness.analysis import plateau, tables
from harness.analysis.load import load_runs
from test_analysis import PRIOR_LOSS, _record


def _evals(run_dir, scores, metric="accuracy"):
    """Append eval events (split_val's select part) at steps 100, 200, ... to a run's metrics.jsonl."""
    with open(run_dir / "metrics.jsonl", "a") as f:
        for k, score in enumerate(scores, start=1):
            f.write(json.dumps({"step": 100 * k, f"eval/select/{metric}": score, f"eval/report/{metric}": 0.5}) + "\n")


def _sweep(tmp_path):
    d = tmp_path / "sweep"
    rising = {1: [0.60, 0.70, 0.80], 2: [0.62, 0.71, 0.83], 3: [0.61, 0.69, 0.79]}  # +0.10, +0.12, +0.10
    flat = {1: [0.70, 0.80, 0.81], 2: [0.72, 0.82, 0.80], 3: [0.71, 0.81, 0.815]}  # +0.01, -0.02, +0.005
    for seed in (1, 2, 3):
        _record(d / f"fullft-{seed}", method="fullft", kind="fullft", lr_mult=1, seed=seed, select=0.8, report=0.8,
                adapter=20_000_000)
        _evals(d / f"fullft-{seed}", flat[seed])
        _record(d / f"lora-{seed}", method="lora", kind="lora", lr_mult=10, seed=seed, select=0.8, report=0.8,
                adapter=300_000, knobs={"r": 8}, losses=(0.70, 0.69, 0.69, 0.68 + seed / 100))  # stuck at the prior
        _evals(d / f"lora-{seed}", rising[seed])
    return d


def test_gain_over_the_last_interval_and_still_rising(tmp_path):
    runs = load_runs([_sweep(tmp_path)])
    best = tables.best_lrs(runs)
    frames = plateau.seed_curves(runs, best)
    table = plateau.table(best, frames).set_index("label")
    lora, full = table.loc["lora r8"], table.loc["fullft"]
    assert lora["gain_mean"] == pytest.approx((0.10 + 0.12 + 0.10) / 3) and lora["still_rising"]
    assert (lora["previous_step"], lora["last_step"], lora["evals"], lora["seeds"]) == (200, 300, 3, 3)
    assert full["gain_mean"] == pytest.approx((0.01 - 0.02 + 0.005) / 3) and not full["still_rising"]
    assert full["gain_ci95_low"] < 0 < full["gain_ci95_high"]
    assert full["best_step"] == 200 and full["last_mean"] == pytest.approx(np.mean([0.81, 0.80, 0.815]))
    curves = plateau.curves(best, frames)
    assert len(curves) == 6 and set(curves["seeds"]) == {3}


def test_loss_level_over_the_last_quarter_beside_the_prior(tmp_path):
    runs = load_runs([_sweep(tmp_path)])
    best = tables.best_lrs(runs)
    table = plateau.table(best, plateau.seed_curves(runs, best), plateau.loss_levels(runs, best)).set_index("label")
    lora, full = table.loc["lora r8"], table.loc["fullft"]
    assert full["loss_tail_mean"] == pytest.approx(0.4)  # FALLING's last quarter (one of four points)
    assert lora["loss_tail_mean"] == pytest.approx(0.70) and lora["prior_loss"] == pytest.approx(PRIOR_LOSS)
    assert lora["loss_tail_ci95_low"] < 0.70 < lora["loss_tail_ci95_high"]
    assert np.isnan(plateau.table(best, plateau.seed_curves(runs, best)).loc[0, "loss_tail_mean"])


def test_report_writes_plateau_and_draws_the_curves(tmp_path):
    report = analysis.build([_sweep(tmp_path)])
    assert "## Plateau" in report.markdown and "| sst2 | lora r8 | 3 | 200→300 |" in report.markdown
    written = {p.name for p in analysis.write(report, tmp_path / "out", with_records=False)}
    assert {"plateau.csv", "select_curves.png"} <= written


def test_runs_evaluated_once_have_no_plateau_row_and_no_figure(tmp_path):
    d = tmp_path / "once"
    for seed in (1, 2):
        _record(d / f"lora-{seed}", method="lora", kind="lora", lr_mult=10, seed=seed, select=0.8, report=0.8,
                adapter=300_000, knobs={"r": 8})
        _evals(d / f"lora-{seed}", [0.8])
    out = tmp_path / "out"
    out.mkdir()
    (out / "select_curves.png").write_text("stale")
    report = analysis.build([d])
    assert report.plateaus.empty and "## Plateau" not in report.markdown
    assert "select_curves" in report.skipped
    analysis.write(report, out, with_records=False)
    assert not (out / "select_curves.png").exists()  # an earlier analysis's figure is not these runs'
