"""The probes of one run: `before` on the base model, `after` on the adapted one, and the record.

Record (result.json `retention`, present only when eval.retention names a probe), per probe:
  before, after     the probe's value on the base model before training / the adapted model after
  drop              how much worse the model got: before - after for a probe where higher is better,
                    after - before for a loss, so drop > 0 always means forgetting
  higher_is_better, version, what, seconds {before, after}, and the probe's inputs (pooling, data...)
  skipped           instead of the values: why the probe cannot run on this model
metrics.jsonl gets `retention/<probe>/before` at step 0 and `/after`, `/drop` at the last step.

"Before" is the base model as built for this run (the task head is not involved), measured before
the method touches it, so it never sees trained or rewritten weights. A resumed attempt rebuilds
that same base model; it takes the value its first attempt recorded instead of measuring it again
(same run_id: same model, data, device and precision), and logs no second `before` event.
"""

import time
from typing import Optional

from harness.probes import PROBES


def preflight(cfg) -> None:
    """Each named probe's own checks (its data), before anything runs."""
    for name in cfg.eval.retention:
        PROBES.get(name).check(cfg)


class Retention:
    def __init__(self, cfg, built, runtime):
        """Prepare every probe eval.retention names on the run's base model (built); a probe that
        cannot run on this model is recorded as skipped, with its reason, and printed."""
        self.runtime = runtime
        self.probes, self.entries, self.inferred = {}, {}, {}
        for name in cfg.eval.retention:
            probe = PROBES.get(name)(cfg)
            entry = {"higher_is_better": probe.higher_is_better, "version": probe.version}
            with self._same_rng():  # loading a checkpoint's MLM head may draw random numbers
                why = probe.prepare(built, runtime)
            if why:
                entry["skipped"] = why
                self.inferred[f"retention_{name}"] = {"value": "skipped", "reason": why}
            else:
                self.probes[name] = probe
                entry.update(probe.info, seconds={})
                self.inferred.update(probe.inferred)
            self.entries[name] = entry

    def __bool__(self) -> bool:
        return bool(self.entries)

    def _same_rng(self):
        """torch's RNG state as it was, afterwards: the method's initialisation and the batches then
        draw exactly what they draw in a run without probes."""
        import torch
        cuda = self.runtime.device.startswith("cuda")
        return torch.random.fork_rng(devices=[torch.device(self.runtime.device)] if cuda else [])

    def _measure(self, name: str, model) -> tuple:
        """(value, seconds) of one probe on model, in eval mode (its training mode and torch's RNG
        state restored)."""
        import torch
        was_training = model.training
        model.eval()
        start = time.perf_counter()
        try:
            with torch.inference_mode(), self.runtime.autocast(), self._same_rng():
                value = float(self.probes[name].measure(model))
        finally:
            model.train(was_training)
        return value, time.perf_counter() - start

    def before(self, base_model, record, tracker) -> None:
        """Measure the base model (moved to the run's device for it, then back where it was, so the
        method is applied exactly as in a run without probes), or take the values an earlier attempt
        of this run recorded. Puts `retention` in the record when any probe is named."""
        carried = record.data.get("retention") or {}
        todo = []
        for name in self.probes:
            earlier = carried.get(name) or {}
            if earlier.get("before") is not None and earlier.get("version") == self.probes[name].version:
                self.entries[name]["before"] = earlier["before"]
                self.entries[name]["seconds"]["before"] = (earlier.get("seconds") or {}).get("before")
                print(f"[harness] retention {name} before: {earlier['before']:.4f} (recorded by this run's"
                      " earlier attempt on the same base model)")
            else:
                todo.append(name)
        if todo:
            home = next(base_model.parameters()).device
            base_model.to(self.runtime.device)
            try:
                for name in todo:
                    value, seconds = self._measure(name, base_model)
                    self.entries[name].update(before=value)
                    self.entries[name]["seconds"]["before"] = seconds
                    tracker.log(0, {f"retention/{name}/before": value})
                    print(f"[harness] retention {name} before: {value:.4f} ({seconds:.1f} s)")
            finally:
                base_model.to(home)
        if self:
            record.update(retention=self.entries)

    def after(self, model, step: int, record, tracker) -> None:
        """Measure the adapted model (as trained, method attached) and record after and drop."""
        for name, probe in self.probes.items():
            value, seconds = self._measure(name, model)
            entry = self.entries[name]
            before = entry["before"]
            drop = (before - value) if probe.higher_is_better else (value - before)
            entry.update(after=value, drop=drop)
            entry["seconds"]["after"] = seconds
            tracker.log(step, {f"retention/{name}/after": value, f"retention/{name}/drop": drop})
            print(f"[harness] retention {name}: before {before:.4f} after {value:.4f} drop {drop:+.4f}"
                  f" ({seconds:.1f} s)")
        if self:
            record.update(retention=self.entries)


def carried(previous: Optional[dict]) -> dict:
    """What a resumed attempt keeps of its earlier attempt's record: the probes' `before` values."""
    kept = {}
    for name, entry in ((previous or {}).get("retention") or {}).items():
        if isinstance(entry, dict) and entry.get("before") is not None:
            kept[name] = {"before": entry["before"], "version": entry.get("version"),
                          "seconds": {"before": (entry.get("seconds") or {}).get("before")}}
    return {"retention": kept} if kept else {}
