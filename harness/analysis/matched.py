"""A method that claims to match another with fewer parameters (its class's `matched_counterpart`:
AdaLoRA and LoRI-S against LoRA) is compared with the configuration of that kind whose non-zero
parameter count is nearest its own, paired by seed, each at its best LR (matched_paired.csv):

- candidates: the counterpart kind's configurations on the same task and, when the configuration
  has a `target_modules` knob, on the same modules (AdaLoRA all-linear against LoRA all-linear: only
  the rank allocation differs); LoRI-S, whose modules are its LoRI-D run's, against LoRA anywhere;
- nearest on a log scale of the mean non-zero count over seeds at the best LR; the count ratio is
  reported beside the difference, so a loose match is visible, and no candidate is dropped;
- t 95% interval and exact sign-flip p of the paired differences, Holm over the rows.
"""

import numpy as np
import pandas as pd

from harness.analysis.load import CONFIG_KEY
from harness.analysis.tables import _fmt

COLUMNS = ["task", CONFIG_KEY, "label", "nonzero", "matched_config_id", "matched_label", "matched_nonzero",
           "count_ratio", "n", "mean_diff", "t_ci95_low", "t_ci95_high", "p_signflip", "p_holm"]
NO_TARGETS = "(none)"


def _mean_nonzero(ok: pd.DataFrame, row: pd.Series) -> float:
    from harness.analysis.tables import at_lr
    return float(at_lr(ok, row[CONFIG_KEY], row["lr"])["nonzero_params"].mean())


def _candidates(best: pd.DataFrame, roles: pd.DataFrame, row: pd.Series) -> pd.DataFrame:
    targets = (roles["knob_target_modules"] if "knob_target_modules" in roles
               else pd.Series(index=roles.index, dtype=object)).fillna(NO_TARGETS)
    twin = roles.at[row[CONFIG_KEY], "matched_counterpart"]
    keep = (best["task"] == row["task"]) & (best[CONFIG_KEY].map(roles["kind"]) == twin)
    mine = targets.get(row[CONFIG_KEY], NO_TARGETS)
    if mine != NO_TARGETS:
        keep &= best[CONFIG_KEY].map(targets) == mine
    return best[keep]


def pairs(runs: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    from harness.analysis.tables import at_lr, holm, paired_stats, succeeded
    ok, rows = succeeded(runs), []
    roles = runs.drop_duplicates(CONFIG_KEY).set_index(CONFIG_KEY)
    claiming = roles.index[roles["matched_counterpart"].notna()]
    for _, b in best[best[CONFIG_KEY].isin(claiming)].iterrows():
        candidates, nonzero = _candidates(best, roles, b), _mean_nonzero(ok, b)
        counts = candidates.apply(lambda c: _mean_nonzero(ok, c), axis=1) if len(candidates) else pd.Series(dtype=float)
        counts = counts[counts > 0]
        if not len(counts) or not nonzero > 0:
            continue
        m = candidates.loc[(np.log(counts) - np.log(nonzero)).abs().idxmin()]
        mine = at_lr(ok, b[CONFIG_KEY], b["lr"]).set_index("seed")["metric"]
        theirs = at_lr(ok, m[CONFIG_KEY], m["lr"]).set_index("seed")["metric"]
        common = mine.index.intersection(theirs.index).sort_values()
        stats = paired_stats(mine[common] - theirs[common])
        rows.append({"task": b["task"], CONFIG_KEY: b[CONFIG_KEY], "label": b["label"], "nonzero": nonzero,
                     "matched_config_id": m[CONFIG_KEY], "matched_label": m["label"],
                     "matched_nonzero": counts[m.name], "count_ratio": nonzero / counts[m.name],
                     **{k: v for k, v in stats.items() if k in COLUMNS}})
    out = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "p_holm"])
    out["p_holm"] = holm(out["p_signflip"]).to_numpy() if len(out) else []
    return out


def markdown(frame: pd.DataFrame) -> str:
    if frame is None or frame.empty:
        return ""
    lines = ["", "## Against the counterpart at the nearest non-zero count", "",
             "Each configuration of a method that declares a counterpart (AdaLoRA, LoRI-S: LoRA) against that"
             " kind's configuration with the nearest non-zero count (same modules where it has a"
             " `target_modules` knob), paired by seed, each at its best LR; count ratio = its non-zero /"
             " the counterpart's.", "",
             "| task | configuration | non-zero | vs | non-zero | count ratio | n | mean diff | 95% t CI |"
             " sign-flip p | Holm p |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, p in frame.iterrows():
        ci = (f"[{_fmt(p['t_ci95_low'], '+.3f')}, {_fmt(p['t_ci95_high'], '+.3f')}]" if p["n"] > 1
              else f"{p['n']} seed")
        lines.append(f"| {p['task']} | {p['label']} | {p['nonzero']:,.0f} | {p['matched_label']} |"
                     f" {p['matched_nonzero']:,.0f} | {p['count_ratio']:.2f} | {p['n']} | {p['mean_diff']:+.3f} |"
                     f" {ci} | {_fmt(p['p_signflip'], '.3g')} | {_fmt(p['p_holm'], '.3g')} |")
    return "\n".join(lines) + "\n"
