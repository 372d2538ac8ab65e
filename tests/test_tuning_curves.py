"""Tuning-budget curves (harness.analysis.tuning) and the cost-aware Pareto fronts: the estimator
against hand-computed values and a brute force over subsets, fronts that never hold a dominated
point (ties included), and the files `python -m harness.analysis` writes for them."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from harness import analysis
from harness.analysis import figures, tables, tuning
from harness.analysis.load import load_runs
from test_analysis import _record, sweep  # noqa: F401 - the shared synthetic sweep fixture and record writer


# ---- the estimator -----------------------------------------------------------------------------

def test_expected_max_by_hand():
    scores = [0.1, 0.5, 0.3]
    assert tuning.expected_max(scores, 1) == pytest.approx(0.3)  # the mean
    # the 3 pairs {0.1,0.5} {0.1,0.3} {0.5,0.3} have maxima 0.5, 0.3, 0.5
    assert tuning.expected_max(scores, 2) == pytest.approx((0.3 + 0.5 + 0.5) / 3)
    assert tuning.expected_max(scores, 3) == pytest.approx(0.5)
    # not Dodge et al.'s with-replacement value, (1·0.1 + 3·0.3 + 5·0.5) / 9
    assert tuning.expected_max(scores, 2) != pytest.approx((0.1 + 0.9 + 2.5) / 9)


def test_selected_trials_report_score_by_hand():
    select, report = [0.1, 0.5, 0.3], [0.9, 0.2, 0.6]
    # n=2: pairs pick 0.5 (report 0.2), 0.3 (report 0.6), 0.5 (report 0.2)
    assert tuning.expected_selected(select, report, 2) == pytest.approx(((0.5 + 0.3 + 0.5) / 3, (0.2 + 0.6 + 0.2) / 3))
    assert tuning.expected_selected(select, report, 1) == pytest.approx((0.3, (0.9 + 0.2 + 0.6) / 3))
    assert tuning.expected_selected(select, report, 3) == pytest.approx((0.5, 0.2))  # the best by selection
    assert list(tuning.selection_probabilities(select, 2)) == pytest.approx([0, 2 / 3, 1 / 3])


def test_ties_go_to_the_earlier_trial():
    select, report = [0.5, 0.5, 0.1], [1.0, 0.0, 0.3]
    assert tuning.expected_selected(select, report, 3)[1] == pytest.approx(1.0)
    # {0,1} -> 0, {0,2} -> 0, {1,2} -> 1
    assert tuning.expected_selected(select, report, 2)[1] == pytest.approx(2 / 3)


def _brute_force(select, report, n):
    """Mean over every n-subset of the report score of its argmax by selection (first wins a tie)."""
    picked = []
    for subset in itertools.combinations(range(len(select)), n):
        best = max(subset, key=lambda k: (select[k], -k))
        picked.append((select[best], report[best]))
    return tuple(np.mean(picked, axis=0))


@pytest.mark.parametrize("seed", range(5))
def test_estimator_equals_the_mean_over_all_subsets(seed):
    rng = np.random.default_rng(seed)
    select = rng.integers(0, 4, size=7) / 4  # few values: many ties
    report = rng.random(7)
    for n in range(1, 8):
        assert tuning.expected_selected(select, report, n) == pytest.approx(_brute_force(select, report, n))
        assert tuning.selection_probabilities(select, n).sum() == pytest.approx(1)


def test_n_outside_the_trials_and_missing_scores_are_refused():
    with pytest.raises(ValueError, match="n must be in 1..2"):
        tuning.selection_probabilities([0.1, 0.2], 3)
    with pytest.raises(ValueError, match="finite"):
        tuning.selection_probabilities([0.1, float("nan")], 1)


def test_curve_from_the_sweep_ends_on_the_tables_best_lr(sweep):  # noqa: F811
    runs = load_runs([sweep])
    expected = tuning.expected_max_table(tables.lr_curves(runs))
    table = tables.config_table(runs).set_index("config_id")
    last = expected[expected["n"] == expected["N"]].set_index("config_id")
    assert last["expected_report"].to_dict() == pytest.approx(table.loc[last.index, "metric_mean"].to_dict())
    assert last["expected_select"].to_dict() == pytest.approx(table.loc[last.index, "select_mean"].to_dict())
    assert dict(zip(last["label"], last["N"])) == {"fullft": 3, "lora r8 all_linear": 3, "loreft r1 p3+s0": 1}


# ---- Pareto fronts -----------------------------------------------------------------------------

def _dominates(a_cost, a_score, b_cost, b_score) -> bool:
    return (all(x <= y for x, y in zip(a_cost, b_cost)) and a_score >= b_score
            and (any(x < y for x, y in zip(a_cost, b_cost)) or a_score > b_score))


@pytest.mark.parametrize("n_costs", [1, 2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_front_never_holds_a_dominated_point_and_misses_no_other(n_costs, seed):
    rng = np.random.default_rng(seed)
    costs = [f"c{k}" for k in range(n_costs)]
    points = pd.DataFrame(rng.integers(1, 4, size=(30, n_costs)), columns=costs)  # small ranges: ties
    points["metric_mean"] = rng.integers(0, 4, size=30) / 4
    points["label"] = [f"config {k:02d}" for k in range(30)]
    front = tables.pareto_front(points.sample(frac=1, random_state=seed), costs)
    rows = [(tuple(r[costs]), r["metric_mean"]) for _, r in points.iterrows()]
    on_front = {(tuple(r[costs]), r["metric_mean"]) for _, r in front.iterrows()}
    assert len(on_front) == len(front)  # exact twins: one kept
    for cost, score in on_front:
        assert not any(_dominates(c, s, cost, score) for c, s in rows)
    for cost, score in rows:  # every point left off is dominated, or its twin is on the front
        assert (cost, score) in on_front or any(_dominates(c, s, cost, score) for c, s in rows)
    # twins: the first label wins, whatever the row order
    again = tables.pareto_front(points, costs)
    assert list(again["label"]) == list(front["label"])


def test_front_with_ties_and_a_missing_score_by_hand():
    points = pd.DataFrame({"x": [1, 1, 2, 3, 3, 0.5], "metric_mean": [0.5, 0.7, 0.7, 0.8, 0.8, np.nan],
                           "label": ["a", "b", "c", "e", "d", "nan"]})
    front = tables.pareto_front(points, ["x"])
    # a: same cost as b, lower score; c: costs more than b for the same score; e: d's twin, d first
    assert list(front["label"]) == ["b", "d"]
    # the old cumulative-max rule dropped every point after a missing score
    assert list(tables.pareto_front(points.iloc[[5, 2]], ["x"])["label"]) == ["c"]


def test_cost_fronts_per_task_and_axis(sweep):  # noqa: F811
    table = tables.config_table(load_runs([sweep]))
    fronts = tables.cost_fronts(table, "adapter_params")
    assert set(fronts["axis"]) == {"params", "seconds", "memory"}
    best = table.loc[table["metric_mean"].idxmax(), "label"]
    # every run took 10 s and 1000 MB: on those axes only the best score is on the front
    for axis in ("seconds", "memory"):
        assert list(fronts.loc[fronts["axis"] == axis, "label"]) == [best]
    params = fronts[fronts["axis"] == "params"]
    assert list(params["cost"]) == sorted(params["cost"]) and params["metric_mean"].is_monotonic_increasing


def test_styles_are_distinct_and_the_same_in_every_figure(sweep):  # noqa: F811
    styles = figures.config_styles([f"config {k}" for k in range(70)])
    assert len({(s["color"], s["marker"]) for s in styles.values()}) == 70
    report = analysis.build([sweep])
    colors = {}
    for key in ("pareto", "pareto_cost"):
        for ax in report.figures[key].axes:
            for container in ax.containers:
                label, line = container.get_label(), container.lines[0]
                style = (tuple(line.get_color()) if not isinstance(line.get_color(), str) else line.get_color(),
                         line.get_marker())
                assert colors.setdefault(label, style) == style, (key, label)
    assert len(set(colors.values())) == len(colors) == 3


def test_pareto_cost_draws_the_front_of_the_csv(sweep):  # noqa: F811
    report = analysis.build([sweep], params="stored")
    fronts = report.fronts
    panels = report.figures["pareto_cost"].axes
    assert len(panels) == 3  # one task x params, seconds, memory
    for ax, axis in zip(panels, ("params", "seconds", "memory")):
        step = next(line for line in ax.lines if line.get_label() == figures.FRONT_LABEL)
        assert list(step.get_xdata()) == pytest.approx(list(fronts.loc[fronts["axis"] == axis, "cost"]))
    assert set(fronts.loc[fronts["axis"] == "params", "cost_column"]) == {"stored_params"}


# ---- end to end ------------------------------------------------------------------------------------

def test_cli_writes_expected_max_and_pareto_files(sweep, tmp_path, capsys):  # noqa: F811
    from harness.analysis.__main__ import main
    out = tmp_path / "r"
    assert main([str(sweep), "--out", str(out), "--no-records"]) == 0
    for name in ("expected_max.png", "expected_max.csv", "pareto_cost.png", "pareto_front.csv"):
        assert (out / name).stat().st_size > 0, name
    assert "not written" not in capsys.readouterr().out
    curves = pd.read_csv(out / "expected_max.csv")
    assert list(curves.columns) == tuning.COLUMNS
    full = curves[curves["label"] == "fullft"].sort_values("n")
    # seed means: select 0.70 / 0.80 / 0.75 and report 0.92 / 0.82 / 0.97 at 0.3x / 1x / 3x
    assert list(full["n"]) == [1, 2, 3] and set(full["N"]) == {3}
    assert list(full["expected_select"]) == pytest.approx([0.75, (0.80 + 0.80 + 0.75) / 3, 0.80])
    assert list(full["expected_report"]) == pytest.approx([(0.92 + 0.82 + 0.97) / 3, (0.82 + 0.82 + 0.97) / 3, 0.82])
    fronts = pd.read_csv(out / "pareto_front.csv")
    assert list(fronts.columns) == tables.FRONT_COLUMNS and set(fronts["task"]) == {"sst2"}


def test_single_lr_sweep_skips_the_curve_and_says_why(tmp_path, capsys):
    from harness.analysis.__main__ import main
    d = tmp_path / "single"
    for seed in (1, 2):
        _record(d / f"fullft-{seed}", method="fullft", kind="fullft", lr_mult=1, seed=seed, select=0.8, report=0.8,
                adapter=20_000_000)
    out = tmp_path / "r"
    out.mkdir()
    (out / "expected_max.png").write_text("an earlier analysis's figure")
    assert main([str(d), "--out", str(out), "--no-records"]) == 0
    assert "expected_max.png/.csv not written: every configuration ran a single LR" in capsys.readouterr().out
    assert not (out / "expected_max.png").exists() and not (out / "expected_max.csv").exists()
    assert (out / "pareto_cost.png").stat().st_size > 0 and (out / "pareto_front.csv").stat().st_size > 0
    assert math.isclose(pd.read_csv(out / "pareto_front.csv")["metric_mean"].iloc[0], 0.8)
