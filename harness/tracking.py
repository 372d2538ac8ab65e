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


SECRET_WORDS = ("key", "token", "secret", "password")


def without_secrets(config):
    """The resolved config minus any entry whose name looks like a credential."""
    if isinstance(config, dict):
        return {k: without_secrets(v) for k, v in config.items()
                if not any(w in str(k).lower() for w in SECRET_WORDS)}
    if isinstance(config, list):
        return [without_secrets(v) for v in config]
    return config


class WandbSink:
    """W&B run in the run directory; offline unless logger.mode=online. Grouped by sweep, typed by
    method label. Keeps the per-module rank events so that finish() can add the rank history as a
    table and a heatmap image before closing the run (always, also after a failure)."""

    def __init__(self, logger_cfg, run_dir: Path, name: str, config: dict, group: str = None, tags=()):
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb
        self._wandb = wandb
        self.ranks = []  # [(step, {module: rank})]
        self.run = wandb.init(project=logger_cfg.project, entity=logger_cfg.entity,
                              group=logger_cfg.group or group, job_type=config["method"]["label"], tags=list(tags),
                              name=name, config=without_secrets(config), dir=str(run_dir), mode=logger_cfg.mode,
                              settings=wandb.Settings(reinit="create_new", console="off"))

    def log(self, step: int, values: dict) -> None:
        self.run.log(values, step=step)
        modules = {k[5:]: v for k, v in values.items()
                   if k.startswith("rank/") and k not in ("rank/total", "rank/budget")}
        if modules:
            self.ranks.append((step, modules))

    def summary(self, values: dict) -> None:
        self.run.summary.update(values)

    def _log_rank_history(self) -> None:
        from harness.plots import rank_heatmap
        modules = sorted(self.ranks[-1][1])
        steps = [s for s, _ in self.ranks]
        rows = [[s, m, r.get(m)] for s, r in self.ranks for m in modules]
        fig = rank_heatmap(steps, modules, [[r.get(m) for _, r in self.ranks] for m in modules],
                           title=self.run.name)
        self.run.log({"rank_history": self._wandb.Table(columns=["step", "module", "rank"], data=rows),
                      "rank_heatmap": self._wandb.Image(fig)})
        import matplotlib.pyplot as plt
        plt.close(fig)

    def finish(self) -> None:
        try:
            if self.ranks:
                self._log_rank_history()
        finally:
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


def sweep_name() -> str:
    """The named sweep this process runs (+sweep=NAME), else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        return HydraConfig.get().runtime.choices.get("sweep")
    except (ValueError, ImportError):
        return None


def make_tracker(cfg, run_dir: Path, name: str, config: dict) -> Tracker:
    sinks = [JsonlSink(run_dir / "metrics.jsonl")]
    if cfg.logger.wandb and cfg.logger.mode != "disabled":
        sweep = sweep_name()
        tags = [cfg.task.name, cfg.model.name, cfg.method.kind] + ([f"sweep:{sweep}"] if sweep else [])
        sinks.append(WandbSink(cfg.logger, run_dir, name, config, group=sweep, tags=tags))
    return Tracker(sinks)
