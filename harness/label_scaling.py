"""Regression targets are trained as z-scores (`task.label_scaling=standardize`, the default).

Why: a regression head starts near 0 with a small spread (0.02-std weights over the encoder's
features), while STS-B's targets have mean 2.7 and sd 1.5. Adam moves each weight by at most about
the LR per step, so at fine-tuning LRs the head cannot reach that scale in a few hundred steps: the
network spends its updates on the mean and predicts a near-constant (all-MiniLM-L6-v2, FullFT
1.5e-4, 400 steps: prediction sd 0.007, Pearson 0.24; the same run on standardized targets: Pearson
0.82 after 200 steps). Training on (y - mean) / sd of the train split removes the offset and the
scale; predictions are mapped back before any metric or baseline, so every reported number is in the
task's own units (Pearson and Spearman do not change under the map; MSE-like metrics would be on the
original scale). `none` trains on raw targets, as Hugging Face's run_glue does. Classification labels
are never touched, and there the setting is not part of a run's identity.
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np

from harness.errors import HarnessError

MODES = ("standardize", "none")


@dataclass(frozen=True)
class LabelScale:
    mean: float
    sd: float

    def to_training(self, y):
        return (np.asarray(y, dtype=np.float64) - self.mean) / self.sd

    def from_training(self, z):
        return np.asarray(z, dtype=np.float64) * self.sd + self.mean


def applies(task_cfg) -> bool:
    """Whether label_scaling does anything for this task (regression targets only)."""
    return task_cfg.label_type == "regression" and task_cfg.label_scaling != "none"


def fit(task_cfg, train_labels) -> Optional[LabelScale]:
    """The train split's mean and population sd, or None when the task's targets stay as they are."""
    if not applies(task_cfg):
        return None
    y = np.asarray(train_labels, dtype=np.float64)
    sd = float(y.std())
    if not np.isfinite(sd) or sd == 0:
        raise HarnessError(f"task '{task_cfg.name}': every training target is {y[0] if len(y) else 'missing'};"
                           " a regression task needs targets that vary (task.label_scaling=standardize divides by"
                           " their sd)")
    return LabelScale(mean=float(y.mean()), sd=sd)


def inferred(task_cfg, scale: Optional[LabelScale]) -> dict:
    """The inferred-setting entry for the run record (regression tasks only)."""
    if task_cfg.label_type != "regression":
        return {}
    if scale is None:
        return {"label_scaling": {"value": "none", "reason": "task.label_scaling=none: trained on raw targets"}}
    return {"label_scaling": {
        "value": {"mode": "standardize", "mean": scale.mean, "sd": scale.sd},
        "reason": "task.label_scaling=standardize: trained on (y - mean) / sd of the train split; predictions"
                  " mapped back before metrics and the baseline"}}
