"""Logger protocol with interchangeable sinks. metrics.jsonl is always written; W&B is optional.

Every sink gets the same events: log(step, {key: value}) during training, summary({...}) at the
end, finish() always (also on failure, so one failed job never leaks into the next).
"""

import json
import math
import os
import time
from pathlib import Path


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN/inf are not JSON; keep them visible as strings
    return value


class JsonlSink:
    """One JSON object per line: {"step": int, "time": unix seconds, "<key>": value, ...}."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fh = open(self.path, "a", encoding="utf-8")

    def log(self, step: int, values: dict) -> None:
        event = {"step": step, "time": round(time.time(), 3), **{k: _jsonable(v) for k, v in values.items()}}
        self._fh.write(json.dumps(event) + "\n")
        self._fh.flush()

    def summary(self, values: dict) -> None:
        pass  # result.json holds the summary

    def finish(self) -> None:
        if not self._fh.closed:
            self._fh.close()


class WandbSink:
    """W&B run in the run directory; offline unless logger.mode=online."""

    def __init__(self, logger_cfg, run_dir: Path, name: str, config: dict):
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb
        self._wandb = wandb
        self.run = wandb.init(project=logger_cfg.project, entity=logger_cfg.entity, group=logger_cfg.group,
                              name=name, config=config, dir=str(run_dir), mode=logger_cfg.mode,
                              settings=wandb.Settings(reinit="create_new", console="off"))

    def log(self, step: int, values: dict) -> None:
        self.run.log(values, step=step)

    def summary(self, values: dict) -> None:
        self.run.summary.update(values)

    def finish(self) -> None:
        self.run.finish()


class Tracker:
    def __init__(self, sinks):
        self.sinks = list(sinks)

    def log(self, step: int, values: dict) -> None:
        for sink in self.sinks:
            sink.log(step, values)

    def summary(self, values: dict) -> None:
        for sink in self.sinks:
            sink.summary(values)

    def finish(self) -> None:
        for sink in self.sinks:
            try:
                sink.finish()
            except Exception as e:  # noqa: BLE001 - finishing one sink must not hide the run's outcome
                print(f"warning: could not finish {type(sink).__name__}: {e}")


def make_tracker(cfg, run_dir: Path, name: str, config: dict) -> Tracker:
    sinks = [JsonlSink(run_dir / "metrics.jsonl")]
    if cfg.logger.wandb and cfg.logger.mode != "disabled":
        sinks.append(WandbSink(cfg.logger, run_dir, name, config))
    return Tracker(sinks)
