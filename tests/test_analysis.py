"""harness.analysis on records written to disk: best LR is chosen on the selection split, failures
are listed apart and never averaged, flags reach their rows, every output file is written."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from harness import analysis
from harness.analysis import tables

BASE_LR = 5e-5


def _record(run_dir, *, method, kind, lr_mult, seed, select, report, adapter, status="success", reason=None,
            knobs=None, flags=(), losses=(0.7, 0.6, 0.5, 0.4)):
    run_dir.mkdir(parents=True)
    record = {
        "run_id": f"{method}-{lr_mult}-{seed}-{json.dumps(knobs)}", "status": status, "seed": seed,
        "error": {"reason": reason, "message": f"{reason} happened"} if reason else None,
        "report_metric": "accuracy", "metrics": {"accuracy": report} if status == "success" else {},
        "evaluation": {"protocol": "split_val", "selection_score": select} if status == "success" else {},
        "params": {"adapter": adapter, "head": 770, "trainable": adapter + 770, "adapter_pct_of_base": adapter / 2e7},
        "cost": {"train_seconds": 10.0, "peak_memory_mb": 1000.0, "tokens_per_second": 500.0},
        "inferred": {"lr": {"value": BASE_LR * lr_mult}}, "flags": list(flags),
        "provenance": {"git_sha": "abc123", "git_dirty": False, "device": "cpu"},
        "config": {"task": {"name": "sst2"}, "model": {"name": "minilm"}, "train": {"base_lr": BASE_LR, "max_steps": 40},
                   "method": {"label": method, "kind": kind, **(knobs or {})}},
    }
    (run_dir / "result.json").write_text(json.dumps(record))
    (run_dir / "metrics.jsonl").write_text("".join(
        json.dumps({"step": 10 * (i + 1), "train/loss": v}) + "\n" for i, v in enumerate(losses)))


@pytest.fixture
def sweep(tmp_path):
    d = tmp_path / "sweep"
    for seed in (1, 2, 3):
        for mult, select, report in ((0.3, 0.70, 0.90), (1, 0.80, 0.80), (3, 0.75, 0.95)):
            # the 3x LR has the best *reported* score but not the best selection score
            _record(d / f"fullft-{mult}-{seed}", method="fullft", kind="fullft", lr_mult=mult, seed=seed,
                    select=select, report=report + seed / 100, adapter=20_000_000)
        for mult, select in ((3, 0.70), (10, 0.82), (30, 0.78)):
            _record(d / f"lora-{mult}-{seed}", method="lora", kind="lora", lr_mult=mult, seed=seed, select=select,
                    report=select + 0.01 * seed, adapter=300_000, knobs={"r": 8, "target_modules": "all_linear"})
        _record(d / f"reft-{seed}", method="loreft", kind="reft", lr_mult=40, seed=seed, select=0.6, report=0.6,
                adapter=4614, knobs={"r": 1, "prefix_positions": 3, "suffix_positions": 0},
                losses=(0.69, 0.69, 0.70, 0.69))
    _record(d / "lora-10-4", method="lora", kind="lora", lr_mult=10, seed=4, select=None, report=None,
            adapter=300_000, status="failed", reason="diverged", knobs={"r": 8, "target_modules": "all_linear"})
    (d / "lora-10-4" / "attempt-1").mkdir()  # set-aside history is never read
    return d


def test_best_lr_is_chosen_on_the_selection_split(sweep):
    table = tables.config_table(analysis.load.load_runs([sweep]))
    full = table[table["method"] == "fullft"].iloc[0]
    assert full["best_lr"] == pytest.approx(BASE_LR)  # not 3x, whose reported score is higher
    assert full["metric_mean"] == pytest.approx(0.82)  # mean of 0.81, 0.82, 0.83 at that LR
    assert full["metric_sd"] == pytest.approx(0.01)
    lora = table[table["method"] == "lora"].iloc[0]
    assert lora["lr_multiple_of_fullft"] == pytest.approx(10) and lora["seeds"] == 3
    assert lora["knobs"] == "r8 all_linear"


def test_failures_listed_apart_and_flags_shown(sweep):
    runs = analysis.load.load_runs([sweep])
    table = tables.config_table(runs)
    lora = table[table["method"] == "lora"].iloc[0]
    assert lora["seeds"] == 3 and "diverged (1 run)" in lora["flags"]  # the failed seed is not averaged
    reft = table[table["method"] == "loreft"].iloc[0]
    assert "loss never fell (3/3)" in reft["flags"]
    failed = tables.failures(runs)
    assert list(failed["reason"]) == ["diverged"]


def test_lr_ratio_and_paired_comparison(sweep):
    runs = analysis.load.load_runs([sweep])
    ratio = tables.lr_ratio(runs)
    assert not ratio["single_lr"] and 5 < ratio["ratio"] < 20  # optimum near 10x
    pairs = tables.paired(runs)
    lora = pairs[pairs["method"] == "lora"].iloc[0]
    assert lora["paired_seeds"] == 3
    assert lora["ci95_low"] <= lora["mean_diff"] <= lora["ci95_high"]


def test_bootstrap_interval_covers_the_mean():
    low, high = tables.bootstrap_ci(np.array([0.01, 0.02, 0.03, 0.05]))
    assert low < 0.0275 < high and low > 0
    assert all(math.isnan(x) for x in tables.bootstrap_ci([0.1]))


def test_cli_writes_every_file(sweep, tmp_path):
    from harness.analysis.__main__ import main
    out = tmp_path / "results"
    assert main([str(sweep), "--out", str(out)]) == 0
    for name in ("table.md", "table.csv", "runs.csv", "paired.csv", "failed.csv", "lr_ratio.csv", "study.json",
                 "pareto.png", "lr_sweep.png", "loss_curves.png", "ranks.png"):
        assert (out / name).stat().st_size > 0, name
    assert len(pd.read_csv(out / "table.csv")) == 3
    text = (out / "table.md").read_text()
    assert "Failed or unfinished runs" in text and "diverged" in text and "LoRA/FullFT optimal-LR ratio" in text
    copied = sorted(p.parent.name for p in (out / "runs").glob("*/result.json"))
    assert len(copied) == 22 and "attempt-1" not in copied
    again = analysis.build([out / "runs"])  # the committed copies re-analyse to the same table
    assert again.table.equals(analysis.build([sweep]).table)


def test_missing_sweep_is_a_one_line_error(tmp_path, capsys):
    from harness.analysis.__main__ import main
    assert main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
