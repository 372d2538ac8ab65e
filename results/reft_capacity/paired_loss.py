"""Paired-by-seed differences in LoReFT's train-loss level (mean over the last quarter of training,
as in table.md's Plateau section), each configuration at the LR the analysis chose for it
(table.csv), with a t 95% interval over the seeds: does a position set or a rank move the plateau?

    python results/reft_capacity/paired_loss.py        # reads only this folder's committed records
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from harness.analysis.load import loss_curve, tail_mean
from harness.analysis.tables import t_interval

HERE = Path(__file__).resolve().parent


def levels() -> pd.DataFrame:
    """One row per LoReFT run at its configuration's chosen LR: r, positions, seed, loss level."""
    runs = pd.read_csv(HERE / "runs.csv")
    best = pd.read_csv(HERE / "table.csv")[["config_id", "best_lr"]]
    runs = runs.merge(best, on="config_id")
    runs = runs[(runs["status"] == "success") & np.isclose(runs["lr"], runs["best_lr"])]
    runs = runs[runs["label"].str.startswith("loreft")].copy()
    runs["level"] = [tail_mean(loss_curve(HERE / "runs" / Path(d).name)) for d in runs["dir"]]
    parts = runs["label"].str.extract(r"loreft r(?P<r>\d+) (?P<positions>\S+)")
    return pd.concat([runs[["seed", "level"]], parts], axis=1)


def paired(levels: pd.DataFrame, a: tuple, b: tuple) -> str:
    """b - a, paired by seed: mean [95% t interval]."""
    def pick(r, pos):
        return levels[(levels["r"] == str(r)) & (levels["positions"] == pos)].set_index("seed")["level"]
    d = (pick(*b) - pick(*a)).dropna()
    low, high = t_interval(d)
    return f"{d.mean():+.3f} [{low:+.3f}, {high:+.3f}] (n={len(d)})"


def main() -> int:
    table = levels()
    for r in (1, 4, 32):
        for pos in ("p10+s0", "p3+s3"):
            print(f"r {r}: {pos} - p3+s0  {paired(table, (r, 'p3+s0'), (r, pos))}")
    for pos in ("p3+s0", "p10+s0", "p3+s3"):
        print(f"{pos}: r 32 - r 1  {paired(table, (1, pos), (32, pos))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
