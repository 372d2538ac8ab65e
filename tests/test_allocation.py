"""harness.analysis.allocation (where a rank-adaptive method put its final ranks: against the
uniform rank of the same total, per module group and layer, with seed agreement) and
harness.analysis.matched (a method against its declared counterpart at the nearest non-zero count),
checked by hand."""

import json

import numpy as np
import pytest

from harness import analysis
from harness.analysis import allocation, matched, tables
from harness.analysis.load import load_runs
from test_analysis import _record

MODULES = ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.intermediate.dense",
           "bert.encoder.layer.1.attention.self.query", "bert.encoder.layer.1.intermediate.dense"]
FINAL = {1: [0, 4, 1, 3], 2: [1, 3, 0, 4], 3: [1, 4, 1, 2]}  # 8 ranks over 4 modules: uniform 2


def _with_ranks(run_dir, ranks):
    path = run_dir / "result.json"
    record = json.loads(path.read_text())
    record["ranks"] = {"initial_total": 48, "final_total": sum(ranks), "final": dict(zip(MODULES, ranks))}
    path.write_text(json.dumps(record))


def _sweep(tmp_path, adaptive=True):
    d = tmp_path / "sweep"
    for seed in (1, 2, 3):
        _record(d / f"fullft-{seed}", method="fullft", kind="fullft", lr_mult=1, seed=seed, select=0.9, report=0.9,
                adapter=20_000_000)
        for r, scores in ((1, (0.79, 0.80, 0.80)), (2, (0.70, 0.70, 0.70))):
            _record(d / f"lora-r{r}-{seed}", method="lora", kind="lora", lr_mult=10, seed=seed,
                    select=scores[seed - 1], report=scores[seed - 1], adapter=41_472 * r,
                    knobs={"r": r, "target_modules": "all_linear"})
        # nearer in count, but another kind or other modules: not AdaLoRA's fixed-rank twin
        _record(d / f"lora-att-{seed}", method="lora", kind="lora", lr_mult=10, seed=seed, select=0.5, report=0.5,
                adapter=40_000, knobs={"r": 4, "target_modules": "attention"})
        _record(d / f"vera-{seed}", method="vera", kind="vera", lr_mult=10, seed=seed, select=0.5, report=0.5,
                adapter=40_000, knobs={"r": 256, "target_modules": "all_linear"})
        if adaptive:
            score = (0.82, 0.83, 0.84)[seed - 1]
            _record(d / f"adalora-{seed}", method="adalora", kind="adalora", lr_mult=20, seed=seed, select=score,
                    report=score, adapter=40_000, knobs={"target_r": 1, "target_modules": "all_linear"})
            _with_ranks(d / f"adalora-{seed}", FINAL[seed])
    return d


def test_final_ranks_against_uniform_by_group_and_layer(tmp_path):
    runs = load_runs([_sweep(tmp_path)])
    best = tables.best_lrs(runs)
    ranks = allocation.seed_ranks(runs, best)
    assert len(ranks) == 1
    frame = next(iter(ranks.values()))
    assert frame.shape == (3, 4) and list(frame.loc[2]) == FINAL[2]  # one row per seed, columns by module name
    out = allocation.summary(best, ranks).set_index(["axis", "key"])
    first = out.iloc[0]
    assert first["uniform_rank"] == 2 and first["share_zero"] == pytest.approx((0.25 + 0.25 + 0) / 3)
    assert first["seeds"] == 3 and first["modules"] == 4
    # Spearman = Pearson on ranks, by hand: seed 1 ranks (1, 4, 2, 3), seed 2 (2, 3, 1, 4), seed 3
    # (1.5, 4, 1.5, 3); 1 vs 2: 1 - 6 * 4 / (4 * 15) = 0.6; 1 vs 3: 4.5 / sqrt(5 * 4.5); 2 vs 3: 3.5 / sqrt(5 * 4.5)
    assert first["seed_agreement_rho"] == pytest.approx((0.6 + 4.5 / np.sqrt(22.5) + 3.5 / np.sqrt(22.5)) / 3)
    assert first["rank_cv"] == pytest.approx((2 * np.std([0, 4, 1, 3]) + np.std([1, 4, 1, 2])) / 2 / 3)
    query, ffn = out.loc[("module", "attention.self.query")], out.loc[("module", "intermediate.dense")]
    # query: 0.5, 0.5, 1 per seed -> 0.667 +- 4.303 * 0.289 / sqrt(3) = [-0.05, 1.38], below 2
    assert query["mean_rank"] == pytest.approx(2 / 3) and query["ci95_high"] == pytest.approx(
        2 / 3 + 4.302653 * np.std([0.5, 0.5, 1], ddof=1) / np.sqrt(3), rel=1e-5) and query["differs"]
    assert ffn["mean_rank"] == pytest.approx(10 / 3) and ffn["ci95_low"] > 2 and ffn["differs"]
    layer0 = out.loc[("layer", "layer 0")]  # 2, 2, 2.5 per seed: the interval holds the uniform 2
    assert layer0["mean_rank"] == pytest.approx(13 / 6) and layer0["ci95_low"] < 2 and not layer0["differs"]


def test_adalora_against_lora_on_its_modules_at_the_nearest_count(tmp_path):
    runs = load_runs([_sweep(tmp_path)])
    best = tables.best_lrs(runs)
    out = matched.pairs(runs, best)
    assert len(out) == 1
    row = out.iloc[0]
    # 41,470 is nearer 39,998 than 82,942 is (log scale); LoRA on attention and VeRA, nearer still, are
    # not AdaLoRA's fixed-rank twin on its modules; FullFT never is
    assert row["matched_label"] == "lora r1 all_linear"
    assert row["count_ratio"] == pytest.approx(39_998 / 41_470)  # _record's nonzero = adapter - seed
    assert row["n"] == 3 and row["mean_diff"] == pytest.approx(np.mean([0.03, 0.03, 0.04]))
    assert row["t_ci95_low"] > 0 and row["p_signflip"] == pytest.approx(2 / 8)


def test_report_writes_the_allocation_and_removes_a_stale_one(tmp_path):
    report = analysis.build([_sweep(tmp_path)])
    assert "## Rank allocation" in report.markdown and "| sst2 | adalora" in report.markdown
    assert "## Against the counterpart at the nearest non-zero count" in report.markdown
    out = tmp_path / "out"
    written = {p.name for p in analysis.write(report, out, with_records=False)}
    assert {"allocation.csv", "matched_paired.csv", "allocation.png"} <= written
    plain = analysis.build([_sweep(tmp_path / "plain", adaptive=False)])
    assert "Rank allocation" not in plain.markdown
    analysis.write(plain, out, with_records=False)
    assert not any((out / f).exists() for f in ("allocation.csv", "matched_paired.csv", "allocation.png"))


def test_lori_s_against_lora_on_any_modules_at_the_nearest_count(tmp_path):
    """LoRI-S has no target_modules knob of its own (its modules are its LoRI-D run's): LoRA on any
    modules is a candidate; VeRA, nearer still, is not its counterpart."""
    d = tmp_path / "sweep"
    for seed in (1, 2, 3):
        _record(d / f"lori-s-{seed}", method="lori_s", kind="lori_s", lr_mult=100, seed=seed, select=0.8,
                report=0.80 + seed / 100, adapter=16_600, knobs={"sparsity": 0.9})
        for name, adapter, targets in (("att", 18_432, "attention"), ("all", 41_472, "all_linear")):
            _record(d / f"lora-{name}-{seed}", method="lora", kind="lora", lr_mult=10, seed=seed, select=0.7,
                    report=0.80, adapter=adapter, knobs={"r": 1, "target_modules": targets})
        _record(d / f"vera-{seed}", method="vera", kind="vera", lr_mult=10, seed=seed, select=0.5, report=0.5,
                adapter=16_600, knobs={"r": 256, "target_modules": "all_linear"})
    runs = load_runs([d])
    row = matched.pairs(runs, tables.best_lrs(runs)).iloc[0]
    assert row["label"] == "lori_s s0.9" and row["matched_label"] == "lora r1 attention"
    assert row["count_ratio"] == pytest.approx(16_598 / 18_430)
    assert row["mean_diff"] == pytest.approx(0.02) and row["n"] == 3
