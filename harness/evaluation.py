"""The evaluation protocol (one for every method) and the evaluator that runs it.

A protocol partitions each eval split into named parts, sees the metrics of every evaluation,
and decides which numbers are reported:
  last       one part ('full'); reports the metrics after the last step.
  split_val  ReFT's protocol: a seeded 'select' part (1,000 examples if the split has more than
             5,000, else half) picks the best evaluation step by the task's report metric; the
             'report' part at that step is reported. Selection never sees the reported part.
"""

from typing import Dict, List, Optional

import numpy as np

from harness import metrics as metric_fns
from harness.config import metric_names
from harness.registry import Registry

PROTOCOLS: Registry = Registry("eval protocol")


class LastProtocol:
    name = "last"
    reported_part = "full"

    def __init__(self, report_metric: str, split_seed: int):
        self.report_metric = report_metric
        self.history: List[dict] = []

    def partitions(self, n: int) -> Dict[str, np.ndarray]:
        return {"full": np.arange(n)}

    def update(self, step: int, by_part: Dict[str, dict]) -> bool:
        """Record an evaluation; True when it is now the one reported."""
        self.history.append({"step": step, **by_part})
        return True

    def result(self) -> tuple:
        last = self.history[-1]
        return dict(last["full"]), {"protocol": self.name, "reported_step": last["step"]}


class SplitValProtocol:
    name = "split_val"
    reported_part = "report"

    def __init__(self, report_metric: str, split_seed: int):
        self.report_metric = report_metric
        self.split_seed = split_seed
        self.best: Optional[dict] = None
        self.sizes: Dict[str, int] = {}

    def partitions(self, n: int) -> Dict[str, np.ndarray]:
        n_select = 1000 if n > 5000 else n // 2
        order = np.random.default_rng(self.split_seed).permutation(n)
        self.sizes = {"select": n_select, "report": n - n_select}  # last split wins; sizes are per split
        return {"select": np.sort(order[:n_select]), "report": np.sort(order[n_select:])}

    def update(self, step: int, by_part: Dict[str, dict]) -> bool:
        score = by_part["select"][self.report_metric]
        if self.best is None or score > self.best["score"]:  # ties keep the earlier step
            self.best = {"step": step, "score": score, "report": dict(by_part["report"])}
            return True
        return False

    def result(self) -> tuple:
        b = self.best
        return dict(b["report"]), {"protocol": self.name, "reported_step": b["step"],
                                   "selection_metric": self.report_metric, "selection_score": b["score"],
                                   "split_seed": self.split_seed}


PROTOCOLS.register("last", LastProtocol)
PROTOCOLS.register("split_val", SplitValProtocol)


class Evaluator:
    """Predicts each eval split once per evaluation and scores every protocol part of it."""

    def __init__(self, task_cfg, eval_sets: Dict[str, object], protocol, runtime, label_scale=None):
        self.task = task_cfg
        self.label_scale = label_scale  # standardized regression targets: predictions are mapped back
        self.eval_sets = eval_sets  # tag -> harness.data.EvalSet
        self.protocol = protocol
        self.runtime = runtime
        self.parts = {tag: protocol.partitions(len(es.labels)) for tag, es in eval_sets.items()}
        self.part_sizes = {tag: {p: int(len(ix)) for p, ix in parts.items()} for tag, parts in self.parts.items()}
        self.seconds = 0.0
        # predictions on the reported part at the reported step (for the learned-nothing sentinel)
        self.reported_predictions: Dict[str, list] = {}

    def _predict(self, model, eval_set) -> np.ndarray:
        import torch
        out = np.empty(len(eval_set.labels), dtype=np.float64 if self.task.label_type == "regression" else np.int64)
        with torch.inference_mode(), self.runtime.autocast():
            for positions, batch in eval_set.batches():
                logits = model(**self.runtime.to_device(batch)).logits.float()
                pred = logits.squeeze(-1) if self.task.label_type == "regression" else logits.argmax(-1)
                out[positions] = pred.cpu().numpy()
        return out if self.label_scale is None else self.label_scale.from_training(out)

    def evaluate(self, model, step: int) -> Dict[str, float]:
        """Run one evaluation; update the protocol; return flat 'eval/...' metrics to log."""
        import time
        start = time.perf_counter()
        was_training = model.training
        model.eval()
        preds = {tag: self._predict(model, es) for tag, es in self.eval_sets.items()}
        model.train(was_training)
        by_part = {}
        for part in next(iter(self.parts.values())):
            scores = {}
            for tag, es in self.eval_sets.items():
                ix = self.parts[tag][part]
                got = metric_fns.compute(self.task.metrics, preds[tag][ix], es.labels[ix])
                suffix = "" if len(self.eval_sets) == 1 else f"_{tag}"
                scores.update({f"{k}{suffix}": v for k, v in got.items()})
            by_part[part] = scores
        if self.protocol.update(step, by_part):
            part = self.protocol.reported_part
            self.reported_predictions = {tag: preds[tag][self.parts[tag][part]].tolist() for tag in preds}
        self.seconds += time.perf_counter() - start
        flat = {}
        for part, scores in by_part.items():
            prefix = "eval/" if part == "full" else f"eval/{part}/"
            flat.update({prefix + k: v for k, v in scores.items()})
        return flat

    def state_dict(self) -> dict:
        """What a resumed run needs: the protocol's history/best-so-far and the time spent."""
        import copy
        return {"protocol": copy.deepcopy(vars(self.protocol)), "seconds": self.seconds,
                "reported_predictions": copy.deepcopy(self.reported_predictions)}

    def load_state_dict(self, state: dict) -> None:
        vars(self.protocol).update(state["protocol"])
        self.seconds = state["seconds"]
        self.reported_predictions = state.get("reported_predictions", {})

    def baseline(self, train_labels, seed: int) -> dict:
        """The learned-nothing sentinel (harness.baseline) on the split and part that are reported."""
        from harness import baseline
        tag, metric = self._report_split()
        labels = self.eval_sets[tag].labels[self.parts[tag][self.protocol.reported_part]]
        preds = np.asarray(self.reported_predictions[tag])
        names = list(self.task.metrics)
        return {"split": tag, "part": self.protocol.reported_part, "metric": metric,
                **baseline.assess(metric, names, preds, labels, np.asarray(train_labels),
                                  self.task.label_type == "regression", seed,
                                  loss_unit=1.0 if self.label_scale is None else self.label_scale.sd)}

    def _report_split(self) -> tuple:
        """(eval split tag, bare metric name) of the task's report metric ('accuracy_m' -> m, accuracy)."""
        tags = list(self.eval_sets)
        if len(tags) == 1:
            return tags[0], self.task.report_metric
        for tag in tags:
            for m in self.task.metrics:
                if self.task.report_metric == f"{m}_{tag}":
                    return tag, m
        raise ValueError(f"report metric {self.task.report_metric} names no eval split of {tags}")

    def result(self) -> tuple:
        reported, info = self.protocol.result()
        info["part_sizes"] = self.part_sizes
        assert set(reported) == set(metric_names(self.task))
        return reported, info


class NoEvaluation:
    """Stand-in evaluator for benchmarks and contract tests: the loop runs, nothing is scored."""

    def evaluate(self, model, step: int) -> Dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
