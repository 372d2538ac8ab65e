"""Logger protocol with interchangeable sinks. metrics.jsonl is always written; W&B is optional.

Every sink gets the same events: log(step, {key: value}) during training, summary({...}) at the
end, finish() always (also on failure, so one failed job never leaks into the next).

Secrets: a config value read from the environment (`${oc.env:NAME}`) is recorded as its expression,
and the values of referenced or credential-named environment variables are scrubbed from every
record, W&B field and printed line (`Redactor`).
"""

import json
import math
import os
import re
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


# -- values that come from the environment are never written or printed ------------------------
# `${oc.env:NAME}` (or the old `${env:NAME}`), also nested (`${oc.decode:${oc.env:NAME}}`).
ENV_INTERPOLATION = re.compile(r"\$\{\s*(?:oc\.env|env)\s*:\s*([^,}\s]+)")
# Parts of an environment variable's name (split at '_', '-', '.') that make it a credential.
CREDENTIAL_PARTS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "CREDENTIALS")
MIN_REFERENCED = 6  # shorter values of referenced variables are replaced by path only, not by value
MIN_CREDENTIAL = 8  # shorter values of credential-named variables are not treated as secrets


def looks_like_credential(name: str) -> bool:
    """WANDB_API_KEY, HF_TOKEN, AWS_SECRET_ACCESS_KEY, DB_PASSWORD, GITHUB_PAT_TOKEN, APIKEY ..."""
    parts = [p for p in re.split(r"[^A-Z0-9]+", str(name).upper()) if p]
    return any(p == w or p.endswith(w) for p in parts for w in CREDENTIAL_PARTS) or "AUTH" in parts


def env_references(obj) -> set:
    """Names of the environment variables that interpolations in obj (strings, nested) read."""
    if isinstance(obj, str):
        return set(ENV_INTERPOLATION.findall(obj))
    if isinstance(obj, dict):
        return set().union(*(env_references(v) for v in obj.values())) if obj else set()
    if isinstance(obj, (list, tuple)):
        return set().union(*(env_references(v) for v in obj)) if obj else set()
    return set()


def _restore_env_expressions(resolved, raw):
    """resolved, with the expression put back wherever the unresolved config read the environment
    into a string. Numbers and booleans keep their value: a seed taken from SLURM_ARRAY_TASK_ID
    must stay the seed (analysis pairs runs by it), and such values are not credentials."""
    if isinstance(raw, str) and ENV_INTERPOLATION.search(raw) and isinstance(resolved, str):
        return raw
    if isinstance(raw, dict) and isinstance(resolved, dict):
        return {k: _restore_env_expressions(v, raw.get(k)) for k, v in resolved.items()}
    if isinstance(raw, list) and isinstance(resolved, list) and len(raw) == len(resolved):
        return [_restore_env_expressions(v, r) for v, r in zip(resolved, raw)]
    return resolved


class Redactor:
    """Keeps secrets out of everything the harness writes (config.yaml, result.json, W&B) and prints.

    Two filters: by path, every config value whose unresolved form reads the environment
    (`${oc.env:SECRET}`) is recorded as that expression; by value, every occurrence of the value of
    an environment variable that the config (or the command line) reads, or whose name looks like a
    credential (KEY, TOKEN, SECRET, PASSWORD ...), is replaced by `${oc.env:NAME}` in any string.
    """

    def __init__(self, raw=None, texts=(), environ=None):
        env = os.environ if environ is None else environ
        self.raw = raw
        referenced = env_references(raw) | env_references(list(texts))
        replacements = {}
        for name, value in env.items():
            if not value:
                continue
            if (name in referenced and len(value) >= MIN_REFERENCED) or \
                    (looks_like_credential(name) and len(value) >= MIN_CREDENTIAL):
                replacements.setdefault(value, "${oc.env:%s}" % name)
        self.replacements = sorted(replacements.items(), key=lambda kv: -len(kv[0]))  # longest first

    @classmethod
    def for_config(cls, cfg, texts=()):
        from omegaconf import OmegaConf
        return cls(OmegaConf.to_container(cfg, resolve=False), texts)

    def __bool__(self) -> bool:
        return bool(self.replacements)

    def text(self, value: str) -> str:
        for secret, expression in self.replacements:
            if secret in value:
                value = value.replace(secret, expression)
        return value

    def scrub(self, obj):
        """A copy of obj (JSON-like) with every secret value in its strings replaced."""
        if not self.replacements:
            return obj
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {k: self.scrub(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.scrub(v) for v in obj)
        return obj

    def config(self, resolved: dict) -> dict:
        """The resolved config as it is recorded and hashed (run_id, config_id): env-derived values
        as their expressions, secret values nowhere."""
        restored = _restore_env_expressions(resolved, self.raw) if self.raw is not None else resolved
        return self.scrub(restored)

    def record(self, record):
        """Make a RunRecord scrub what it writes (its config, overrides, labels, errors, ...)."""
        if not self.replacements:
            return record
        write = record.write

        def scrubbed_write():
            data = record.data
            record.data = self.scrub(data)
            try:
                write()
            finally:
                record.data = data

        record.write = scrubbed_write
        return record


class RedactingStream:
    """A text stream (stdout/stderr) that replaces secret values before they are written."""

    def __init__(self, stream, redactor: Redactor):
        self._stream, self.redactor = stream, redactor

    def write(self, text):
        return self._stream.write(self.redactor.text(text) if isinstance(text, str) else text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self._stream, name)


class WandbSink:
    """W&B run in the run directory; offline unless logger.mode=online. Grouped by sweep, typed by
    method label. Keeps the per-module rank events so that finish() can add the rank history as a
    table and a heatmap image before closing the run (always, also after a failure)."""

    def __init__(self, logger_cfg, run_dir: Path, name: str, config: dict, group: str = None, tags=(),
                 redactor: Redactor = None, run_id: str = None):
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb
        self._wandb = wandb
        self.ranks = []  # [(step, {module: rank})]
        redactor = redactor or Redactor()
        logged = config.get("logger") or {}  # config as recorded: env-derived values are expressions
        recorded = {k: logged.get(k, getattr(logger_cfg, k)) for k in ("project", "entity", "group")}
        online = logger_cfg.mode == "online"
        self.run = wandb.init(project=self._target(logger_cfg.project, recorded["project"], online, project=True),
                              entity=self._target(logger_cfg.entity, recorded["entity"], online),
                              group=redactor.text(recorded["group"] or group or "") or None,
                              job_type=redactor.text(str(config["method"]["label"])),
                              tags=[redactor.text(str(t)) for t in tags], name=redactor.text(name),
                              config=without_secrets(redactor.scrub(config)), dir=str(run_dir), mode=logger_cfg.mode,
                              settings=wandb.Settings(reinit="create_new", console="off"),
                              # a resumed attempt continues its run's W&B run instead of opening another
                              id=run_id, resume="allow" if run_id else None)

    @staticmethod
    def _target(value, recorded, online: bool, project: bool = False):
        """W&B's project/entity: the real value only where W&B needs it to route the run (online);
        offline, a value that came from the environment is written as its expression."""
        if value is None or online or recorded == value:
            return value
        return re.sub(r"[/\\#?%:]", "_", str(recorded)) if project else recorded

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


def make_tracker(cfg, run_dir: Path, name: str, config: dict, wandb_id: str = None) -> Tracker:
    sinks = [JsonlSink(run_dir / "metrics.jsonl")]
    if cfg.logger.wandb and cfg.logger.mode != "disabled":
        sweep = sweep_name()
        tags = [cfg.task.name, cfg.model.name, cfg.method.kind] + ([f"sweep:{sweep}"] if sweep else [])
        redactor = Redactor.for_config(cfg)
        sinks.append(WandbSink(cfg.logger, run_dir, name, redactor.config(config), group=sweep, tags=tags,
                               redactor=redactor, run_id=wandb_id))
    return Tracker(sinks)
