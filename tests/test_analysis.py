"""harness.analysis on records written to disk: best LR is chosen on the selection split, failures
are listed apart and never averaged, flags reach their rows, every output file is written."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from harness import analysis
from harness.analysis import figures, tables
from harness.analysis.load import loss_at_prior, loss_never_fell
from harness.results import config_identity

BASE_LR = 5e-5
PRIOR_LOSS = 0.664  # BoolQ-like label entropy (nats)
BASELINE = {"predictor": "majority", "metric": "accuracy", "metrics": {"accuracy": 0.5}, "prior_loss": PRIOR_LOSS,
            "at_baseline": False}
FALLING = (0.7, 0.6, 0.5, 0.4)


def _config(*, method, kind, lr_mult, seed, knobs=None, max_length=128):
    return {"task": {"name": "sst2", "max_length": max_length}, "model": {"name": "minilm"},
            "train": {"base_lr": BASE_LR, "max_steps": 40, "seed": seed}, "eval": {"split_seed": 0},
            "method": {"label": method, "kind": kind, "lr_multiplier": lr_mult, **(knobs or {})}}


def _record(run_dir, *, method, kind, lr_mult, seed, select, report, adapter, status="success", reason=None,
            knobs=None, flags=(), losses=FALLING, baseline=BASELINE, new_schema=True, max_length=128):
    """A result.json + metrics.jsonl. new_schema=False writes an old record: no config_id, no
    stored/nonzero counts, no baseline (analysis must fall back)."""
    run_dir.mkdir(parents=True)
    config = _config(method=method, kind=kind, lr_mult=lr_mult, seed=seed, knobs=knobs, max_length=max_length)
    params = {"adapter": adapter, "head": 770, "trainable": adapter + 770, "adapter_pct_of_base": adapter / 2e7}
    record = {
        "run_id": f"{method}-{lr_mult}-{seed}-{json.dumps(knobs)}-{max_length}", "status": status, "seed": seed,
        "error": {"reason": reason, "message": f"{reason} happened"} if reason else None,
        "report_metric": "accuracy", "metrics": {"accuracy": report} if status == "success" else {},
        "evaluation": {"protocol": "split_val", "selection_score": select} if status == "success" else {},
        "params": params, "cost": {"train_seconds": 10.0, "peak_memory_mb": 1000.0, "tokens_per_second": 500.0},
        "inferred": {"lr": {"value": BASE_LR * lr_mult}}, "flags": list(flags),
        "provenance": {"git_sha": "abc123", "git_dirty": False, "device": "cpu"}, "config": config,
    }
    if new_schema:
        record["config_id"] = config_identity(config)
        params.update(stored=adapter + 770, nonzero=adapter - seed)  # nonzero varies per seed (pruning)
        if baseline is not None and status == "success":
            record["baseline"] = baseline
    (run_dir / "result.json").write_text(json.dumps(record))
    (run_dir / "metrics.jsonl").write_text("".join(
        json.dumps({"step": 10 * (i + 1), "train/loss": v}) + "\n" for i, v in enumerate(losses)))


def _tilt(seed, mult, centre):
    """Seed-dependent slope in log LR: each seed's optimum sits a little elsewhere."""
    return 0.01 * (seed - 2) * math.log10(mult / centre)


@pytest.fixture
def sweep(tmp_path):
    d = tmp_path / "sweep"
    for seed in (1, 2, 3):
        for mult, select, report in ((0.3, 0.70, 0.90), (1, 0.80, 0.80), (3, 0.75, 0.95)):
            # the 3x LR has the best *reported* score but not the best selection score
            _record(d / f"fullft-{mult}-{seed}", method="fullft", kind="fullft", lr_mult=mult, seed=seed,
                    select=select + _tilt(seed, mult, 1), report=report + seed / 100, adapter=20_000_000)
        for mult, select in ((3, 0.70), (10, 0.82), (30, 0.78)):
            _record(d / f"lora-{mult}-{seed}", method="lora", kind="lora", lr_mult=mult, seed=seed,
                    select=select + _tilt(seed, mult, 10), report=select + 0.01 * seed, adapter=300_000,
                    knobs={"r": 8, "target_modules": "all_linear"})
        # an old record (no config_id, counts or baseline): the plateau rule is the fallback
        _record(d / f"reft-{seed}", method="loreft", kind="reft", lr_mult=40, seed=seed, select=0.6, report=0.6,
                adapter=4614, knobs={"r": 1, "prefix_positions": 3, "suffix_positions": 0},
                losses=(0.69, 0.69, 0.70, 0.69), new_schema=False)
    _record(d / "lora-10-4", method="lora", kind="lora", lr_mult=10, seed=4, select=None, report=None,
            adapter=300_000, status="failed", reason="diverged", knobs={"r": 8, "target_modules": "all_linear"})
    (d / "lora-10-4" / "attempt-1").mkdir()  # set-aside history is never read
    return d


def _build_table(sweep_dir):
    runs = analysis.load.load_runs([sweep_dir])
    return runs, tables.config_table(runs)


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
    assert lora["n"] == 3 and lora["reference"] == "fullft"
    # every seed's difference is the same here: no zero-width interval is claimed
    assert lora["sd_diff"] == pytest.approx(0, abs=1e-12) and math.isnan(lora["t_ci95_low"])
    assert math.isnan(lora["boot_ci95_low"])  # no bootstrap below 10 seeds
    assert "no spread: every seed's difference is the same" in tables._pair_cells(lora)


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


def test_records_copied_from_several_sweeps_keep_every_sweeps_commands(sweep, tmp_path):
    """Two sweep directories analysed together: runs/invocations.jsonl holds both sweeps' lines,
    not only the last one's, so the committed study still names every command that made it."""
    import shutil
    from harness.sweep_log import INVOCATIONS
    other = tmp_path / "other"
    shutil.copytree(sweep / "fullft-1-1", other / "fullft-1-1")
    (sweep / INVOCATIONS).write_text('{"event": "start", "invocation": "a", "argv": ["x", "+sweep=one"], "jobs": 1}\n')
    (other / INVOCATIONS).write_text('{"event": "start", "invocation": "b", "argv": ["x", "+sweep=two"], "jobs": 1}\n')
    analysis.write(analysis.build([sweep, other]), tmp_path / "out")
    lines = (tmp_path / "out" / "runs" / INVOCATIONS).read_text().splitlines()
    assert [json.loads(ln)["invocation"] for ln in lines] == ["a", "b"]
    analysis.write(analysis.build([sweep, other]), tmp_path / "out")  # again: no line twice
    assert len((tmp_path / "out" / "runs" / INVOCATIONS).read_text().splitlines()) == 2


def test_missing_sweep_is_a_one_line_error(tmp_path, capsys):
    from harness.analysis.__main__ import main
    assert main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# ---- grouping by config_id -------------------------------------------------------------------------

def test_rslora_sweep_gives_two_rows_with_unique_labels(tmp_path):
    d = tmp_path / "rslora"
    for rslora in (False, True):  # method.rslora=false,true: one knob apart, one row each
        _record(d / f"lora-{rslora}", method="lora", kind="lora", lr_mult=10, seed=1, select=0.8, report=0.8,
                adapter=300_000, knobs={"r": 8, "alpha": 16.0, "target_modules": "all_linear", "rslora": rslora})
    runs, table = _build_table(d)
    assert len(table) == 2 and table["label"].is_unique
    assert set(table["knobs"]) == {"r8 a16 all_linear", "r8 a16 all_linear rslora"}


def test_configs_one_non_knob_key_apart_get_the_key_in_brackets(tmp_path):
    d = tmp_path / "lengths"
    for seed in (1, 2):
        for max_length in (64, 128):
            _record(d / f"lora-{max_length}-{seed}", method="lora", kind="lora", lr_mult=10, seed=seed, select=0.8,
                    report=0.8, adapter=300_000, knobs={"r": 8, "target_modules": "all_linear"}, max_length=max_length)
    runs, table = _build_table(d)
    assert len(table) == 2 and (table["seeds"] == 2).all()
    assert sorted(table["label"]) == ["lora r8 all_linear [task.max_length=128]",
                                      "lora r8 all_linear [task.max_length=64]"]


def test_seeds_and_lrs_of_one_config_are_one_row(sweep):
    runs, table = _build_table(sweep)
    lora_runs = runs[runs["method"] == "lora"]
    assert lora_runs["config_id"].nunique() == 1  # 3 LRs x 4 seeds, one configuration
    assert len(table) == 3 and table["config_id"].is_unique
    lora = table[table["method"] == "lora"].iloc[0]
    assert lora["lrs_tried"] == 3 and lora["seeds"] == 3
    # an old record's recomputed config_id groups its seeds just as a stored one does
    assert runs[runs["method"] == "loreft"]["config_id"].nunique() == 1


# ---- parameter counts -------------------------------------------------------------------------------

def test_count_columns_and_pareto_on_each_count(sweep):
    runs, table = _build_table(sweep)
    lora = table[table["method"] == "lora"].iloc[0]
    assert lora["adapter_params"] == 300_000 and lora["head_params"] == 770
    assert lora["stored_params"] == 300_770 and lora["nonzero_params"] == pytest.approx(300_000 - 2)  # seeds 1-3
    reft = table[table["method"] == "loreft"].iloc[0]
    assert math.isnan(reft["stored_params"]) and math.isnan(reft["nonzero_params"])  # old record: blank
    for params, column in (("trainable", "adapter_params"), ("stored", "stored_params"),
                           ("nonzero", "nonzero_params")):
        fig = figures.pareto(table, params)
        drawn = np.concatenate([c.lines[0].get_xdata() for c in fig.axes[0].containers])
        assert sorted(drawn) == sorted(table[column].dropna()), params
        figures.plt.close(fig)


def test_cli_params_flag_chooses_the_pareto_axis(sweep, tmp_path):
    from harness.analysis.__main__ import main
    assert main([str(sweep), "--out", str(tmp_path / "r"), "--params", "nonzero", "--no-records"]) == 0
    assert (tmp_path / "r" / "pareto.png").stat().st_size > 0
    assert analysis.build([sweep], params="stored").params == "stored"
    with pytest.raises(SystemExit):
        main([str(sweep), "--params", "bogus"])


# ---- paired statistics -------------------------------------------------------------------------------

def test_paired_t_interval_and_sign_flip_p_by_hand():
    s = tables.paired_stats([0.01, 0.02, 0.03])
    half = 4.302652729749462 * 0.01 / math.sqrt(3)  # t(0.975, df=2) x sd / sqrt(n)
    assert s["n"] == 3 and s["mean_diff"] == pytest.approx(0.02) and s["sd_diff"] == pytest.approx(0.01)
    assert (s["t_ci95_low"], s["t_ci95_high"]) == pytest.approx((0.02 - half, 0.02 + half))
    assert s["p_signflip"] == pytest.approx(2 / 8)  # only +++ and --- are as extreme
    assert math.isnan(s["boot_ci95_low"]) and math.isnan(s["boot_ci95_high"])
    # sums of ±1 ±2 ±3 (the zero flips alike): 6 of the 8 are at least |1 - 2 + 3| = 2 in size
    assert tables.sign_flip_p([0.01, -0.02, 0.03, 0.0]) == pytest.approx(6 / 8)
    many = tables.paired_stats(np.linspace(0.01, 0.02, 12))
    assert many["p_signflip"] == pytest.approx(2 / 2 ** 12) and many["boot_ci95_low"] > 0
    assert tables.sign_flip_p(np.full(20, 0.01)) < 1e-3  # random flips past 16 seeds


def test_holm_correction():
    adjusted = tables.holm([0.01, 0.04, 0.03, np.nan])
    # sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04; step-down keeps it monotone
    assert list(adjusted[:3]) == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adjusted[3])
    assert list(tables.holm([0.5, 0.9])) == pytest.approx([1.0, 1.0])  # capped at 1


def test_paired_table_has_holm_column_and_small_n_warning(sweep):
    report = analysis.build([sweep])
    pairs = report.pairs
    assert list(pairs["p_holm"]) == pytest.approx(list(tables.holm(pairs["p_signflip"])))
    assert "fewer than 5 paired seeds" in report.markdown and "2/2^n" in report.markdown
    assert "(n = 3 here: 0.25)" in report.markdown


def test_one_seed_prints_one_seed_and_no_nan(tmp_path):
    d = tmp_path / "one"
    _record(d / "fullft", method="fullft", kind="fullft", lr_mult=1, seed=1, select=0.8, report=0.8,
            adapter=20_000_000)
    _record(d / "lora", method="lora", kind="lora", lr_mult=10, seed=1, select=0.7, report=0.75, adapter=300_000,
            knobs={"r": 8})
    report = analysis.build([d])
    assert report.pairs.iloc[0]["n"] == 1
    assert "| 1 seed |" in report.markdown and "nan" not in report.markdown.lower()
    assert "not measured (single LR)" in report.markdown


# ---- learned-nothing sentinel ------------------------------------------------------------------------

def test_at_baseline_flag_and_baseline_columns_reach_the_row(tmp_path):
    d = tmp_path / "base"
    for seed in (1, 2, 3):
        flags = ["at_baseline"] if seed < 3 else []
        _record(d / f"lora-{seed}", method="lora", kind="lora", lr_mult=10, seed=seed, select=0.6, report=0.6,
                adapter=300_000, knobs={"r": 8}, flags=flags,
                baseline={**BASELINE, "metrics": {"accuracy": 0.6 + seed / 100}})
    runs, table = _build_table(d)
    row = table.iloc[0]
    assert "at_baseline (2/3)" in row["flags"] and row["at_baseline"] == 2
    assert row["baseline_metric"] == pytest.approx(0.62)


def test_loss_at_prior_fires_on_a_flat_curve_at_the_prior_only():
    at_prior = pd.Series([0.70, 0.67, 0.66, 0.665, 0.66, 0.662, 0.661, 0.659])
    falling = pd.Series([0.69, 0.60, 0.50, 0.40, 0.35, 0.32, 0.31, 0.30])
    flat_low = pd.Series([0.30] * 8)  # flat, but far below the prior: it learned
    assert loss_at_prior(at_prior, PRIOR_LOSS)
    assert not loss_at_prior(falling, PRIOR_LOSS) and not loss_at_prior(flat_low, PRIOR_LOSS)
    assert loss_never_fell(flat_low)  # what the old plateau rule got wrong
    assert not loss_at_prior(at_prior, float("nan"))


def test_loss_at_prior_flag_in_the_table(tmp_path):
    d = tmp_path / "prior"
    for seed in (1, 2):
        _record(d / f"reft-{seed}", method="loreft", kind="reft", lr_mult=40, seed=seed, select=0.6, report=0.6,
                adapter=4614, knobs={"r": 1}, losses=(0.70, 0.68, 0.67, 0.665))
        _record(d / f"lora-{seed}", method="lora", kind="lora", lr_mult=10, seed=seed, select=0.8, report=0.8,
                adapter=300_000, knobs={"r": 8}, losses=(0.30, 0.30, 0.30, 0.30))  # flat, below the prior
    runs, table = _build_table(d)
    flags = table.set_index("method")["flags"]
    assert "loss at class prior (2/2)" in flags["loreft"]
    assert flags["lora"] == ""


# ---- LR analysis ----------------------------------------------------------------------------------------

def test_lrs_are_compared_on_the_seeds_they_share(tmp_path):
    """Tune on seed 1, then seeds 2-3 at the chosen LR only: LRs are ranked on seed 1 alone, so the
    chosen LR keeps its place even when its later seeds are worse than a neighbour's single seed."""
    d = tmp_path / "tuned"
    for mult, select in ((0.3, 0.70), (1, 0.80), (3, 0.78)):
        _record(d / f"fullft-{mult}-1", method="fullft", kind="fullft", lr_mult=mult, seed=1, select=select,
                report=select, adapter=20_000_000)
    for seed, select in ((2, 0.72), (3, 0.74)):  # the 3-seed mean at 1x (0.753) is below 3x's 0.78
        _record(d / f"fullft-1-{seed}", method="fullft", kind="fullft", lr_mult=1, seed=seed, select=select,
                report=select, adapter=20_000_000)
    runs, table = _build_table(d)
    full = table.iloc[0]
    assert full["best_lr"] == pytest.approx(BASE_LR) and full["seeds"] == 3
    assert full["metric_mean"] == pytest.approx((0.80 + 0.72 + 0.74) / 3)
    curves = tables.lr_curves(runs).set_index("lr_multiple")
    assert curves.loc[1, "tune_seeds"] == 1 and curves.loc[1, "tune_mean"] == pytest.approx(0.80)
    assert "3 tried, tuned on 1 seed)" in analysis.build([d]).markdown


def test_best_lr_on_the_grid_edge_is_flagged(tmp_path):
    d = tmp_path / "edge"
    for seed in (1, 2):
        for mult, select in ((3, 0.6), (10, 0.7), (30, 0.8)):  # still rising at the largest LR
            _record(d / f"lora-{mult}-{seed}", method="lora", kind="lora", lr_mult=mult, seed=seed, select=select,
                    report=select, adapter=300_000, knobs={"r": 8})
        for mult, select in ((0.3, 0.8), (1, 0.7)):  # best at the smallest
            _record(d / f"fullft-{mult}-{seed}", method="fullft", kind="fullft", lr_mult=mult, seed=seed,
                    select=select, report=select, adapter=20_000_000)
    runs, table = _build_table(d)
    edges = table.set_index("method")
    assert edges.loc["lora", "lr_edge"] == "high" and "best LR at grid edge" in edges.loc["lora", "flags"]
    assert edges.loc["fullft", "lr_edge"] == "low"
    assert "a bound, not a fit" in analysis.build([d]).markdown


def test_optimum_is_fitted_around_the_peak_not_over_the_whole_grid():
    """A cliff at high LR (divergence, then the constant predictor) must not drag the vertex: the
    parabola goes through the best LR and its two neighbours only (the three-point vertex formula of
    successive parabolic interpolation, in log10 LR)."""
    lrs, scores = [1, 3, 10, 30, 100], [0.79, 0.815, 0.837, 0.61, 0.51]
    (x0, y0), (x1, y1), (x2, y2) = [(math.log10(lr), y) for lr, y in zip(lrs[1:4], scores[1:4])]
    vertex = x1 - 0.5 * ((x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)) / (
        (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0))
    assert tables._optimum(lrs, scores) == pytest.approx(10 ** vertex)
    assert 3 < 10 ** vertex < 10
    global_a, global_b, _ = np.polyfit(np.log10(lrs), scores, 2)
    assert 10 ** (-global_b / (2 * global_a)) < 3  # what a whole-grid fit would have said
    assert tables._optimum([1, 3, 10], [0.9, 0.8, 0.7]) == 1  # on the edge: the grid point itself
    assert tables._optimum([1, 3], [0.7, 0.8]) == 3


def test_lr_ratio_has_a_t_interval_over_seeds(tmp_path):
    d = tmp_path / "ratio"
    best_lora = {1: 10, 2: 10, 3: 30}  # per-seed LoRA optima; FullFT's is 1x on every seed
    for seed in (1, 2, 3):
        for mult in (10, 30):
            _record(d / f"lora-{mult}-{seed}", method="lora", kind="lora", lr_mult=mult, seed=seed,
                    select=0.8 if mult == best_lora[seed] else 0.7, report=0.8, adapter=300_000, knobs={"r": 8})
        for mult in (0.1, 1, 10):  # symmetric in log LR: the fitted parabola peaks at 1x
            _record(d / f"fullft-{mult}-{seed}", method="fullft", kind="fullft", lr_mult=mult, seed=seed,
                    select=0.8 if mult == 1 else 0.7, report=0.8, adapter=20_000_000)
    ratio = tables.lr_ratio(analysis.load.load_runs([d]))
    logs = np.log([10, 10, 30])
    half = 4.302652729749462 * logs.std(ddof=1) / math.sqrt(3)
    assert ratio["ratio"] == pytest.approx(3000 ** (1 / 3)) and ratio["seeds"] == 3
    assert ratio["ci95"] == pytest.approx((math.exp(logs.mean() - half), math.exp(logs.mean() + half)))
    report = analysis.build([d])
    assert "95% CI" in report.markdown
    ax = report.figures["lr_sweep"].axes[0]  # the ratio above the panel, the legend beside the panels:
    assert "LoRA/FullFT optimal LR: 14.4x (95% CI" in ax.get_title()  # neither covers the other
    assert ax.get_legend() is None and report.figures["lr_sweep"].legends


def test_a_seed_whose_best_lr_is_its_grid_edge_is_counted_and_noted(tmp_path):
    """Seed 3 peaks at the top of LoRA's grid while the configuration's best (over seeds) is inside
    it: the configuration-level edge flag stays empty, the per-seed count and the note do not."""
    d = tmp_path / "seed_edge"
    lora_scores = {1: (0.70, 0.82, 0.78), 2: (0.70, 0.82, 0.78), 3: (0.70, 0.78, 0.80)}
    for seed in (1, 2, 3):
        for mult, select in zip((3, 10, 30), lora_scores[seed]):
            _record(d / f"lora-{mult}-{seed}", method="lora", kind="lora", lr_mult=mult, seed=seed,
                    select=select, report=0.8, adapter=300_000, knobs={"r": 8})
        for mult in (0.1, 1, 10):
            _record(d / f"fullft-{mult}-{seed}", method="fullft", kind="fullft", lr_mult=mult, seed=seed,
                    select=0.8 if mult == 1 else 0.7, report=0.8, adapter=20_000_000)
    report = analysis.build([d])
    row = report.ratio["per_config"].iloc[0]
    assert row["lora_lr_edge"] == "" and row["fullft_lr_edge"] == ""
    assert row["lora_seeds_at_edge"] == 1 and row["fullft_seeds_at_edge"] == 0
    assert "some seeds' best LRs lie at their grid's edge" in report.markdown


def test_single_lr_ratio_is_not_measured_and_not_drawn(tmp_path):
    d = tmp_path / "single"
    for seed in (1, 2):
        _record(d / f"fullft-{seed}", method="fullft", kind="fullft", lr_mult=1, seed=seed, select=0.8, report=0.8,
                adapter=20_000_000)
        for mult in (3, 10):
            _record(d / f"lora-{mult}-{seed}", method="lora", kind="lora", lr_mult=mult, seed=seed, select=0.7,
                    report=0.7, adapter=300_000, knobs={"r": 8})
    report = analysis.build([d])
    assert report.ratio["single_lr"] and "not measured (single LR)" in report.markdown
    drawn = [c.get_label() for c in report.figures["lr_sweep"].axes[0].containers]
    assert drawn == ["lora r8"]  # FullFT's single point is no curve


def test_a_run_found_in_two_sweeps_counts_once_and_a_seed_clash_is_refused(sweep, tmp_path):
    import shutil
    other = tmp_path / "overlap"
    other.mkdir()
    shutil.copytree(sweep / "fullft-1-1", other / "fullft-1-1")  # the same run, analysed twice
    both = analysis.load.load_runs([sweep, other])
    assert len(both) == len(analysis.load.load_runs([sweep]))
    pairs = tables.paired(both)
    assert (pairs["n"] <= 3).all()  # seeds are not multiplied by the duplicate
    clash = tmp_path / "clash"
    clash.mkdir()
    shutil.copytree(sweep / "fullft-1-1", clash / "fullft-1-1-again")
    record = json.loads((clash / "fullft-1-1-again/result.json").read_text())
    record["run_id"] = "another-run-same-config-lr-seed"
    (clash / "fullft-1-1-again/result.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="share a configuration, LR and seed"):
        analysis.load.load_runs([sweep, clash])


def test_pooled_ratio_averages_the_same_configurations_in_every_seed(tmp_path):
    """Seed 3 ran only configuration r 8: a per-seed mean over r 4 and r 8 for seeds 1-2 beside r 8
    alone for seed 3 would set different averages side by side. The pool keeps the seeds that ran
    the most-measured configuration (1-3) and the configurations all of them ran (r 8 only), and says
    so; the per-configuration rows still use every seed each one has."""
    d = tmp_path / "uneven"
    best = {(4, 1): 3, (4, 2): 3, (8, 1): 30, (8, 2): 10, (8, 3): 30}  # per-seed LoRA optima (x FullFT)
    for (r, seed), opt in best.items():
        for mult in (3, 10, 30):
            _record(d / f"lora-r{r}-{mult}-{seed}", method="lora", kind="lora", lr_mult=mult, seed=seed,
                    select=0.8 if mult == opt else 0.7, report=0.8, adapter=300_000 * r, knobs={"r": r})
    for seed in (1, 2, 3):
        for mult in (0.1, 1, 10):
            _record(d / f"fullft-{mult}-{seed}", method="fullft", kind="fullft", lr_mult=mult, seed=seed,
                    select=0.8 if mult == 1 else 0.7, report=0.8, adapter=20_000_000)
    ratio = tables.lr_ratio(analysis.load.load_runs([d]))
    r8 = ratio["per_config"].set_index("knobs").loc["r8"]
    assert ratio["seeds"] == 3 and ratio["configs"] == 1 and ratio["configs_total"] == 2
    assert ratio["ratio"] == pytest.approx(r8["ratio"])  # the pool is r 8 over its three seeds
    assert ratio["ratio"] == pytest.approx(math.exp(np.mean(np.log([30, 10, 30]))), rel=0.05)
    assert "1 of 2 configurations, those measured in every pooled seed" in analysis.build([d]).markdown
