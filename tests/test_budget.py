"""Budget-matched sweeps (harness/budget.py, the grid sweeper's budget_matched block): the solver
picks each method's setting nearest the budget from its declared closed forms, the tolerance leaves
out (and reports) what cannot get close, bad values stop before anything runs, and a run's record
says its budget and reports the adapter count the plan predicted."""

import json

import pandas as pd
import pytest

from conftest import cli, cli_in_process, compose
from harness import budget
from harness.errors import HarnessError
from harness.preflight import model_info
from harness.sweeper import main as sweeper_main
from harness.sweeper import planned


@pytest.fixture(scope="module")
def tiny():
    """tiny_bert's preflight info: 2 layers, hidden 32, MLP 64; every block linear is 32 wide on one
    side, so LoRA costs r x 64 per attention projection and r x 96 per MLP linear."""
    return model_info(compose("model=tiny_bert"))


def _solve(info, methods, budgets, tolerance=budget.DEFAULT_TOLERANCE):
    return budget.solve(budget.parse_spec({"methods": methods, "budgets": budgets, "tolerance": tolerance}), info)


def test_solver_picks_the_nearest_setting(tiny):
    """LoRA at 1,000 on tiny BERT, by hand: all_linear costs 896 per rank (r1: 896, -10.4%),
    attention 512 (r2: 1,024, +2.4%), qv 256 (r4: 1,024, +2.4%), mlp 384 (r3: 1,152), mlp_down
    192 (r4: 768, r6: 1,152). Nearest: 1,024, a tie that the preferred target order breaks
    (attention before qv)."""
    plan = _solve(tiny, ["lora"], [1000])
    (match,) = plan.within
    assert match.knobs == {"target_modules": "attention", "r": 2}
    assert (match.count, match.adapter, match.counts) == (1024, 1024, "trainable")
    assert match.distance == pytest.approx(0.024)
    assert match.overrides == {"target_modules": "attention", "r": 2}  # both differ from the preset (all_linear, 8)
    # LoReFT: r x (2 x 32 + 1) per unit per layer, 2 layers -> 130 per rank: r8 = 1,040
    (reft,) = _solve(tiny, ["loreft"], [1000]).within
    assert (reft.knobs["r"], reft.knobs["layers"], reft.count) == (8, "all", 1040)
    assert reft.overrides == {"r": 8}  # layers and positions stay the preset's


def test_tolerance_leaves_out_and_reports_the_nearest_count(tiny):
    """BitFit has one count: every bias outside the head, (4 x 32 + 64 + 32 + 2 x 32) per layer
    x 2 + the embedding LayerNorm's 32 = 608."""
    plan = _solve(tiny, ["bitfit", "lora"], [600, 2000])
    within = {(m.budget, m.method): m for m in plan.within}
    missed = {(m.budget, m.method): m for m in plan.out_of_reach}
    assert within[(600, "bitfit")].count == 608 and within[(600, "bitfit")].knobs == {}
    assert missed[(2000, "bitfit")].count == 608 and missed[(2000, "bitfit")].distance == pytest.approx(-0.696)
    assert [m.method for m in plan.jobs()] == ["bitfit", "lora", "lora"]
    text = budget.describe(plan)
    assert "out of reach (nearest count, left out): bitfit 608 (-69.6%)" in text
    assert "within 25% of it" in text
    # a tighter tolerance leaves 608 out at 600 too (1.3% off)
    tight = _solve(tiny, ["bitfit"], [600], tolerance=0.01)
    assert not tight.within and tight.out_of_reach[0].count == 608


def test_one_setting_nearest_two_budgets_is_one_job(tiny):
    """Budgets closer than the tolerance: bitfit's 608 is within 25% of 560 and of 640; it runs
    once, labelled with the budget it is relatively nearest (640: -5.0% vs +8.6%)."""
    plan = _solve(tiny, ["bitfit"], [560, 640])
    assert [(m.budget, m.method) for m in plan.jobs()] == [(640, "bitfit")]
    assert plan.shared == {(560, "bitfit"): 640}
    assert "(same job as budget 640)" in budget.describe(plan)


def test_counts_follow_what_each_method_is_matched_on(tiny):
    """AdaLoRA is matched on its final budget, LoRI-S on its mask's non-zero entries; both report
    what they train (the record's adapter) apart."""
    plan = _solve(tiny, ["adalora", "lori_s"], [1000])
    ada, lori = plan.within
    # AdaLoRA: target_r x (in + out + 1) per module, target_r 1..init_r (12): all_linear 908 per rank
    # (r1: -9.2%), attention 520 (r2: +4.0%), mlp 388 (r3: +16.4%), mlp_down 194 (r5: 970, -3.0%);
    # it trains at init_r: 12 x 194
    assert (ada.counts, ada.knobs, ada.count, ada.adapter) == ("final", {"target_modules": "mlp_down", "target_r": 5},
                                                               970, 12 * 194)
    # LoRI-S: lori_d's preset (r 8, all_linear): B = 8 x sum(out) = 8 x 448 = 3,584; s=0.7 keeps 1,075
    assert (lori.counts, lori.knobs, lori.count, lori.adapter) == ("nonzero", {"sparsity": 0.7}, 1075, 3584)
    assert [(s.method, s.overrides) for s in plan.sources] == [("lori_d", {"mask_sparsities": [0.7]})]


def test_the_minilm_plan_has_every_method_at_every_budget(capsys):
    """The default sweep on MiniLM: every listed method (>= 8) is at each budget, within the
    tolerance or listed out of reach with its nearest count; each job carries its budget."""
    sweeper, blocks = planned("budget_matched")
    (plan,) = sweeper.budget_plans
    assert plan.model == "minilm" and len(plan.spec.methods) >= 8
    for b in plan.spec.budgets:
        within = [m for m in plan.within if m.budget == b]
        missed = [m for m in plan.out_of_reach if m.budget == b]
        assert sorted(m.method for m in within + missed) == sorted(plan.spec.methods)
        assert all(abs(m.distance) <= plan.spec.tolerance for m in within)
        assert all(abs(m.distance) > plan.spec.tolerance for m in missed)
        assert len(within) >= 6
    jobs = [job for block in blocks for job in block]
    budgets = {o for job in jobs for o in job if o.startswith("method.budget=")}
    assert budgets == {f"method.budget={b}" for b in plan.spec.budgets}
    assert [len(block) for block in blocks] == [21, 2]  # LoRI-S after the lori_d run it continues
    sweeper_main(["budget_matched"])  # python -m harness.sweeper budget_matched
    out = capsys.readouterr().out
    assert "[budget] budget 12,000" in out and "out of reach (nearest count, left out): bitfit 25,728" in out
    assert out.rstrip().endswith("23 jobs in 2 blocks")


@pytest.mark.parametrize("override, message", [
    ("hydra.sweeper.values.budgets=[0]", "every budget must be a whole number of adapter parameters > 0 (got 0"),
    ("hydra.sweeper.values.budgets=[40000,-5]", "> 0 (got -5"),
    ("hydra.sweeper.values.budgets=[5k]", "> 0 (got '5k'"),
    ("hydra.sweeper.values.methods=[lora,lorra]", "unknown method 'lorra' in methods (did you mean 'lora'?)"),
    ("hydra.sweeper.values.tolerance=0", "tolerance must be a number > 0"),
    ("method.r=4", "'method.r' cannot be set for the whole sweep"),
])
def test_bad_budget_values_stop_before_anything_runs(override, message, tmp_path):
    sweep_dir = tmp_path / "sweep"
    run = cli_in_process("+sweep=budget_matched", f"hydra.sweep.dir={sweep_dir}", override)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and message in lines[0], run.stderr
    assert not sweep_dir.exists()


def test_the_plan_command_refuses_bad_values_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        sweeper_main(["budget_matched", "hydra.sweeper.values.budgets=[0]"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1 and lines[0].startswith("harness.sweeper: error: budget_matched")


def test_a_method_without_a_closed_form_is_refused(tiny):
    with pytest.raises(HarnessError, match="'eva' has no closed-form count"):  # rho 2: ranks from the data
        _solve(tiny, ["eva"], [1000])


RUN = ("model=tiny_bert", "logger=none", "hydra.sweeper.values.budgets=[1000]",
       "hydra.sweeper.values.methods=[lora,loreft,ia3,lori_s]", "task.max_train_samples=64", "task.max_length=32",
       "train.max_steps=4", "train.batch_size=8", "train.log_every=2", "train.eval_every=2",
       "train.checkpoint_every=null", "train.num_threads=1", "train.progress=false")


def test_a_budget_matched_sweep_records_its_budget_and_the_predicted_count(use_mirror, tmp_path):
    """Tiny BERT at 1,000: LoRA, LoReFT and LoRI-S (after its lori_d run) train; IA3 (512 at most)
    is out of reach and left out. Every matched record says its budget, and its adapter count
    (and LoRI-S's non-zero count) is the plan's."""
    sweeper, _ = planned("budget_matched", list(RUN))
    (plan,) = sweeper.budget_plans
    assert [m.method for m in plan.out_of_reach] == ["ia3"]
    run = cli("+sweep=budget_matched", f"hydra.sweep.dir={tmp_path}", *RUN, env={"HARNESS_DATA_DIR": str(use_mirror)},
              timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "out of reach (nearest count, left out): ia3 512" in run.stdout
    records = [json.loads(p.read_text()) for p in tmp_path.glob("*/result.json")]
    by_label = {r["config"]["method"]["label"]: r for r in records}
    assert sorted(by_label) == ["lora", "loreft", "lori_d", "lori_s"] and len(records) == 4
    assert all(r["status"] == "success" for r in records)
    for match in plan.jobs():
        record = by_label[match.method]
        assert record["config"]["method"]["budget"] == 1000
        assert record["params"]["adapter"] == match.adapter
        assert "adapter_count_differs_from_closed_form" not in record["flags"]
        if match.counts == "nonzero":
            assert record["params"]["nonzero"] == match.count
    assert by_label["lori_d"]["config"]["method"]["budget"] is None  # launched for LoRI-S, not matched

    # the analysis shows each configuration's budget (and none for the lori_d run it continued)
    from harness import analysis
    report = analysis.build([tmp_path], "budget")
    budgets = dict(zip(report.table["method"], report.table["budget"]))
    assert budgets["lora"] == budgets["loreft"] == budgets["lori_s"] == 1000 and pd.isna(budgets["lori_d"])
    assert "budget 1.0k: " in report.markdown


def test_budget_matched_configurations_are_paired_only_within_their_budget():
    """The committed budget-matched study: every paired comparison is between two configurations
    matched to the same budget, and the lori_d run LoRI-S continued (no budget) is compared with none."""
    from conftest import REPO
    from harness import analysis
    report = analysis.build([REPO / "results" / "budget_matched" / "runs"], "budget_matched")
    budget = report.table.set_index("config_id")["budget"]
    pairs = report.pairs
    assert len(pairs) and set(pairs["budget"]) == {12000, 40000}
    assert (pairs["config_id"].map(budget) == pairs["reference_config_id"].map(budget)).all()
    lori_d = report.table.loc[report.table["method"] == "lori_d", "config_id"]
    assert not set(lori_d) & (set(pairs["config_id"]) | set(pairs["reference_config_id"]))
