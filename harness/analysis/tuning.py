"""Tuning-budget curves: the expected best score of a configuration as a function of how many
tuning trials it was given (Dodge et al., "Show Your Work", EMNLP 2019).

A *trial* is one LR of one configuration (`config_id`: everything but seed and LR, so the LR is the
only knob a sweep varies inside it); its score is the mean over the seeds that succeeded at that LR
(`tables.lr_curves`), so one trial is one point of the LR curve, not one run. LRs whose every seed
failed are not trials here, as they are not candidates for the best LR either (the table lists them).

Estimator: n trials drawn *without replacement* from the N observed ones, every n-subset equally
likely. Sort the trials by selection score, ascending (1-based rank i). The trial of rank i is the
one selected from a random n-subset iff it is in the subset and the other n-1 all rank below it:

    P(rank i selected) = C(i-1, n-1) / C(N, n)   (= [C(i, n) - C(i-1, n)] / C(N, n))

so E[best selection score | n] = sum_i P_i select_i, exactly, and, since what a study reports is
the *report*-split score of the trial the selection split picked (the rule `tables.best_lrs`
applies), E[reported | n] = sum_i P_i report_i. At n = N this is the table's best LR.

Why without replacement: Dodge et al.'s estimator draws with replacement (P = (i/N)^n - ((i-1)/N)^n),
which is biased at n > 1 (a trial can be "tried" twice) and flattens out only slowly as n -> N. The
without-replacement form is the unbiased estimator (a U-statistic) of the expected maximum of n
draws, the variant of Tang et al., "Showing Your Work Doesn't Always Work" (ACL 2020; code in
castorini/meanmax); it is defined for n <= N only, which is all a grid can tell.

Ties in the selection score are broken as `tables.best_lrs` breaks them (the smaller LR wins), so
the curve at n = N ends on the table's best LR and never on a coin flip.
"""

from math import comb

import numpy as np
import pandas as pd

from harness.analysis.load import CONFIG_KEY

COLUMNS = [CONFIG_KEY, "task", "label", "metric_name", "n", "expected_select", "expected_report", "N"]


def selection_probabilities(select, n: int) -> np.ndarray:
    """P(trial k is the one selected from a uniformly random n-subset of the N trials), in the
    trials' given order. Ties in `select`: the trial that comes first in the given order wins (it
    ranks above the later ones), so pass the trials in tie-break order."""
    select = np.asarray(select, float)
    big_n = len(select)
    if not 1 <= n <= big_n:
        raise ValueError(f"n must be in 1..{big_n} (got {n})")
    if not np.isfinite(select).all():
        raise ValueError("selection scores must be finite (drop the trials without one)")
    # ascending by score; among equal scores the later trial ranks lower (lexsort's last key is primary)
    order = np.lexsort((-np.arange(big_n), select))
    rank = np.empty(big_n, int)
    rank[order] = np.arange(1, big_n + 1)
    total = comb(big_n, n)
    # exact integers, one division each: no cancellation from differences of large binomials
    return np.array([comb(i - 1, n - 1) / total for i in rank])


def expected_selected(select, report, n: int) -> tuple:
    """(E[best selection score], E[report score of the trial the selection score picks]) over a
    random n-subset of the trials, drawn without replacement."""
    p = selection_probabilities(select, n)
    return float(p @ np.asarray(select, float)), float(p @ np.asarray(report, float))


def expected_max(scores, n: int) -> float:
    """E[max of n of the scores drawn without replacement]: selection and report are the same score."""
    return expected_selected(scores, scores, n)[0]


def curve(select, report) -> pd.DataFrame:
    """n = 1..N with expected_select and expected_report (trials in tie-break order)."""
    big_n = len(select)
    rows = [(n, *expected_selected(select, report, n)) for n in range(1, big_n + 1)]
    return pd.DataFrame(rows, columns=["n", "expected_select", "expected_report"]).assign(N=big_n)


def expected_max_table(curves: pd.DataFrame) -> pd.DataFrame:
    """COLUMNS, one row per configuration and n, from `tables.lr_curves` (one row per configuration
    and LR, seed means). Trials without a selection or report score are left out, so N counts the
    trials that can be ranked."""
    usable = curves.dropna(subset=["tune_mean", "metric_mean", "lr"])
    parts = []
    for cid, trials in usable.groupby(CONFIG_KEY, sort=False):
        trials = trials.sort_values("lr", kind="stable")  # the smaller LR wins a tie, as in best_lrs
        # ranked on the tuning seeds' mean, as best_lrs ranks them (all seeds in a full grid)
        part = curve(trials["tune_mean"].to_numpy(), trials["metric_mean"].to_numpy())
        first = trials.iloc[0]
        parts.append(part.assign(**{CONFIG_KEY: cid, "task": first["task"], "label": first["label"],
                                    "metric_name": first["metric_name"]}))
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(parts)[COLUMNS].sort_values(["task", "label", "n"]).reset_index(drop=True)


def skip_reason(table: pd.DataFrame) -> str:
    """Why no tuning-budget curve can be drawn ('' when one can): a curve needs >= 2 trials."""
    if table.empty:
        return "no configuration has a trial with both a selection and a report score"
    if table["N"].max() < 2:
        return "every configuration ran a single LR (one trial): a tuning-budget curve needs >= 2"
    return ""
