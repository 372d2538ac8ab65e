"""Typed config schema (strict: unknown keys and wrong types fail at composition) and validate().

Each YAML in a config group extends its schema from the ConfigStore through its defaults list
(`- /schema/<group>@_here_` or, for methods, `- /schema/method/<kind>@_here_`), so a misspelt key
in a file or on the command line is rejected by OmegaConf before anything runs. Keys that reach
the config anyway (`+train.x=1`, `++train.x=1` open the struct flag) are rejected by `validate()`,
which checks the whole composed config against the schemas again (`check_keys`).
All cross-field checks that need no model or data live in `validate()`; the ones that need the
tokenizer live in `validate_with_tokenizer()`. Both run before training.
"""

import copy
import dataclasses
import functools
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from harness import label_scaling
from harness.errors import HarnessError, did_you_mean


@dataclass
class ModelConfig:
    name: str = MISSING  # label used in tables
    version: str = MISSING
    # Where the weights come from: a hub id, a local directory, or "pkg:<python module>" whose
    # get_model_path() returns a local HF directory (the embedded MiniLM). None with from_config.
    pretrained: Optional[str] = None
    revision: Optional[str] = None  # hub revision (commit/tag), recorded
    # Random initialisation from a transformers config (tests): {model_type: ..., **kwargs}.
    from_config: Optional[Dict[str, Any]] = None
    tokenizer: Optional[str] = None  # defaults to `pretrained`
    arch: str = MISSING  # encoder | decoder
    # How a sentence embedding is read from the last hidden state (retention probe sts_embedding):
    # mean (over non-pad tokens) | cls (first token) | last (last non-pad token). Declared per model
    # YAML: the pooling the model was trained with, else the one that suits its architecture.
    pooling: str = "mean"


@dataclass
class TaskConfig:
    name: str = MISSING
    version: str = MISSING
    dataset: str = MISSING  # hub dataset id, e.g. nyu-mll/glue
    subset: Optional[str] = None  # hub config name, e.g. sst2
    mirror_path: str = MISSING  # directory under $HARNESS_DATA_DIR holding <split>.parquet
    text_fields: List[str] = MISSING
    label_field: str = "label"
    label_type: str = MISSING  # classification | regression
    num_labels: int = MISSING
    train_split: str = "train"
    # tag -> split; with one eval split metric names are bare, with several they get _<tag>
    eval_splits: Dict[str, str] = MISSING
    metrics: List[str] = MISSING  # computed on every evaluation
    report_metric: str = MISSING  # the task's headline number (also the selection metric)
    max_length: int = 128
    max_train_samples: Optional[int] = None  # None = the whole train split
    # Regression targets: standardize (train on z-scores of the train split, predictions mapped
    # back; harness/label_scaling.py says why) | none (raw targets). Classification ignores it.
    label_scaling: str = "standardize"


@dataclass
class TrainConfig:
    seed: int = 42
    base_lr: float = 5e-5  # the FullFT reference LR; lr = base_lr * method.lr_multiplier
    batch_size: int = 32
    grad_accum: int = 1
    max_steps: Optional[int] = 400  # optimizer steps; set null to train by epochs
    epochs: Optional[float] = None
    schedule: str = "linear"  # linear | cosine | constant
    warmup_ratio: float = 0.06
    warmup_steps: Optional[int] = None  # overrides warmup_ratio when set
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    max_grad_norm: Optional[float] = 1.0  # null disables clipping
    log_every: int = 10
    eval_every: int = 100  # also evaluated after the last step
    eval_batch_size: int = 128
    # Which head modules train, for every method alike: classifier | classifier+pooler | none
    head: str = "classifier"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto | fp32 | bf16 (bf16 = autocast; weights stay fp32)
    # length_grouped: rows of similar length share a batch (shuffled mega-batches of group_batches x
    # batch_size rows, each sorted by length): 1.07 padded tokens per real one on SST-2 instead of 3.1,
    # 2.8x the tokens/s on CPU | random: slices of a shuffled epoch (docs/throughput.md)
    batching: str = "length_grouped"
    group_batches: int = 50
    pad_to_multiple_of: Optional[int] = None  # batch length rounded up to this (null: the longest row)
    num_threads: Optional[int] = None  # torch CPU threads; None = torch's default
    deterministic: bool = True
    progress: bool = True
    save_artifact: bool = False  # keep the trained adapter/weights in <run_dir>/artifact
    # Steps between resumable checkpoints in <run_dir>/checkpoint (a multiple of log_every; null:
    # only on preemption). Deleted when the run succeeds.
    checkpoint_every: Optional[int] = 100


@dataclass
class EvalConfig:
    protocol: str = MISSING  # last | split_val
    split_seed: int = MISSING  # seed of the select/report split (split_val)
    # Retention probes (harness/probes) run on the base model before training and on the adapted
    # model after it: what fine-tuning cost the model elsewhere. Empty by default (they cost time).
    retention: List[str] = field(default_factory=list)


@dataclass
class LoggerConfig:
    wandb: bool = False
    mode: str = "offline"  # offline | online | disabled
    project: str = "harness"
    entity: Optional[str] = None
    group: Optional[str] = None


@dataclass
class HarnessConfig:
    model: ModelConfig = MISSING
    task: TaskConfig = MISSING
    method: Any = MISSING  # each method kind has its own schema (harness.methods)
    train: TrainConfig = MISSING
    eval: EvalConfig = MISSING
    logger: LoggerConfig = MISSING


SCHEMES = {"model": ModelConfig, "task": TaskConfig, "train": TrainConfig,
           "eval": EvalConfig, "logger": LoggerConfig}


def register_configs() -> None:
    """Put every schema into Hydra's ConfigStore (idempotent)."""
    from harness import sweeper
    from harness.methods import METHODS  # registers all method kinds

    sweeper.register()
    cs = ConfigStore.instance()
    cs.store(name="harness_schema", node=HarnessConfig)
    for group, node in SCHEMES.items():
        cs.store(group="schema", name=group, node=node)
    for kind in METHODS.names():
        cs.store(group="schema/method", name=kind, node=METHODS.get(kind).config_class)


def frac_of(steps, fraction) -> int:
    """`${frac_of:${train.max_steps},0.1}` -> 10 for 100 steps: schedules that follow the run length."""
    if steps is None:
        raise HarnessError("frac_of needs train.max_steps (it is null: training by epochs)")
    return max(1, int(round(float(steps) * float(fraction))))


OmegaConf.register_new_resolver("frac_of", frac_of, replace=True)

SCHEDULES = ("linear", "cosine", "constant")
HEAD_POLICIES = ("classifier", "classifier+pooler", "none")
PRECISIONS = ("auto", "fp32", "bf16")
BATCHINGS = ("random", "length_grouped")
POOLINGS = ("mean", "cls", "last")
LABEL_TYPES = ("classification", "regression")


SEED_MAX = 2**32 - 1  # numpy's seed range (torch's is wider)
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise HarnessError(message)


def _unwrap_optional(tp):
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _check_keys(value, schema, path: str) -> None:
    """Every key of `value` (a plain container) is a field of the dataclass `schema`, recursively.
    Catches keys added by `+`/`++` or a YAML that is not typed, which OmegaConf lets through."""
    if not isinstance(value, dict):
        return
    hints = typing.get_type_hints(schema)
    names = [f.name for f in dataclasses.fields(schema)]
    for key, child in value.items():
        full = f"{path}.{key}"
        if key not in hints:
            hint = did_you_mean(key, names)  # compare leaf names: a shared prefix is no evidence
            hint = hint.replace(" '", f" '{path}.", 1) if hint else ""
            raise HarnessError(f"unknown config key '{full}'{hint}; valid keys here: {', '.join(names)}")
        tp = _unwrap_optional(hints[key])
        if dataclasses.is_dataclass(tp):
            _check_keys(child, tp, full)
        elif typing.get_origin(tp) is list and isinstance(child, list):
            (item,) = typing.get_args(tp) or (Any,)
            if dataclasses.is_dataclass(item):
                for i, element in enumerate(child):
                    _check_keys(element, item, f"{full}[{i}]")
        # Dict/Any fields (model.from_config, task.eval_splits) legitimately hold free keys.


def check_keys(cfg: DictConfig) -> None:
    """Reject any key that is not in the schemas, however it got into the config (+, ++, a YAML)."""
    from harness.methods import METHODS

    raw = OmegaConf.to_container(cfg, resolve=False)
    for group, schema in SCHEMES.items():
        _check_keys(raw.get(group), schema, group)
    method = raw.get("method")
    if isinstance(method, dict):
        kind = cfg.method.kind
        _check_keys(method, METHODS.get(kind).config_class, "method")


def _check_finite(value, path: str) -> None:
    """Every float anywhere in the resolved config is finite (inf/nan are never a setting)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, f"{path}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise HarnessError(f"{path} must be a finite number (got {value})")


def validate(cfg: DictConfig) -> None:
    """Every cross-field check that needs no model or data. Raises HarnessError (one line)."""
    from harness.evaluation import PROTOCOLS
    from harness.methods import METHODS
    from harness.metrics import METRICS

    unknown = sorted(set(cfg.keys()) - set(HarnessConfig.__dataclass_fields__))
    _require(not unknown, f"unknown top-level config key(s) {unknown}; known: {sorted(HarnessConfig.__dataclass_fields__)}")
    check_keys(cfg)
    _check_finite(OmegaConf.to_container(cfg, resolve=True), "")
    t, task = cfg.train, cfg.task
    _require(0 <= t.seed <= SEED_MAX, f"train.seed must be in [0, 2**32 - 1] (got {t.seed})")
    _require(0 <= cfg.eval.split_seed <= SEED_MAX,
             f"eval.split_seed must be in [0, 2**32 - 1] (got {cfg.eval.split_seed})")
    _require(0 <= t.adam_beta1 < 1, f"train.adam_beta1 must be in [0, 1) (got {t.adam_beta1})")
    _require(0 <= t.adam_beta2 < 1, f"train.adam_beta2 must be in [0, 1) (got {t.adam_beta2})")
    _require(t.adam_eps > 0, f"train.adam_eps must be > 0 (got {t.adam_eps})")
    _require(DEVICE_PATTERN.fullmatch(str(t.device)) is not None,
             f"train.device must be auto, cpu, cuda or cuda:N (got '{t.device}')")
    _require(t.batch_size > 0, f"train.batch_size must be > 0 (got {t.batch_size})")
    _require(t.grad_accum > 0, f"train.grad_accum must be > 0 (got {t.grad_accum})")
    _require(t.base_lr > 0, f"train.base_lr must be > 0 (got {t.base_lr})")
    _require((t.max_steps is None) != (t.epochs is None),
             "set exactly one of train.max_steps and train.epochs"
             f" (got max_steps={t.max_steps}, epochs={t.epochs}); e.g. train.max_steps=null train.epochs=3")
    _require(t.max_steps is None or t.max_steps > 0, f"train.max_steps must be > 0 (got {t.max_steps})")
    _require(t.epochs is None or t.epochs > 0, f"train.epochs must be > 0 (got {t.epochs})")
    _require(t.schedule in SCHEDULES, f"train.schedule must be one of {SCHEDULES} (got '{t.schedule}')")
    _require(0 <= t.warmup_ratio < 1, f"train.warmup_ratio must be in [0, 1) (got {t.warmup_ratio})")
    _require(t.warmup_steps is None or t.warmup_steps >= 0,
             f"train.warmup_steps must be >= 0 (got {t.warmup_steps})")
    if t.max_steps is not None and t.warmup_steps is not None:
        _require(t.warmup_steps < t.max_steps, f"train.warmup_steps={t.warmup_steps} leaves no"
                 f" training after warm-up (train.max_steps={t.max_steps})")
    _require(t.weight_decay >= 0, f"train.weight_decay must be >= 0 (got {t.weight_decay})")
    _require(t.max_grad_norm is None or t.max_grad_norm > 0,
             f"train.max_grad_norm must be > 0 or null (got {t.max_grad_norm})")
    _require(t.log_every > 0, f"train.log_every must be > 0 (got {t.log_every})")
    _require(t.eval_every > 0, f"train.eval_every must be > 0 (got {t.eval_every})")
    _require(t.checkpoint_every is None or (t.checkpoint_every > 0 and t.checkpoint_every % t.log_every == 0),
             f"train.checkpoint_every must be a positive multiple of train.log_every={t.log_every} or null"
             f" (got {t.checkpoint_every})")
    _require(t.eval_batch_size > 0, f"train.eval_batch_size must be > 0 (got {t.eval_batch_size})")
    _require(t.head in HEAD_POLICIES, f"train.head must be one of {HEAD_POLICIES} (got '{t.head}')")
    _require(t.precision in PRECISIONS, f"train.precision must be one of {PRECISIONS} (got '{t.precision}')")
    _require(t.num_threads is None or t.num_threads > 0, f"train.num_threads must be > 0 (got {t.num_threads})")
    _require(t.batching in BATCHINGS, f"train.batching must be one of {BATCHINGS} (got '{t.batching}')")
    _require(t.group_batches >= 1, f"train.group_batches must be >= 1 (got {t.group_batches})")
    _require(t.pad_to_multiple_of is None or t.pad_to_multiple_of >= 1,
             f"train.pad_to_multiple_of must be >= 1 or null (got {t.pad_to_multiple_of})")

    _require(task.label_type in LABEL_TYPES, f"task.label_type must be one of {LABEL_TYPES} (got '{task.label_type}')")
    _require(task.num_labels >= 1, f"task.num_labels must be >= 1 (got {task.num_labels})")
    _require((task.label_type == "regression") == (task.num_labels == 1),
             "task.num_labels must be 1 for a regression task and >= 2 for a classification task"
             f" (got task.label_type={task.label_type}, task.num_labels={task.num_labels})")
    _require(task.label_scaling in label_scaling.MODES,
             f"task.label_scaling must be one of {label_scaling.MODES} (got '{task.label_scaling}')")
    _require(task.max_length > 0, f"task.max_length must be > 0 (got {task.max_length})")
    _require(1 <= len(task.text_fields) <= 2,
             f"task.text_fields must name one or two fields (a text or a text pair; got {list(task.text_fields)})")
    _require(task.max_train_samples is None or task.max_train_samples > 0,
             f"task.max_train_samples must be > 0 (got {task.max_train_samples})")
    _require(len(task.eval_splits) > 0, "task.eval_splits is empty")
    for name in task.metrics:
        _require(name in METRICS, f"task.metrics: unknown metric '{name}'; known: {', '.join(METRICS.names())}")
    _require(task.report_metric in metric_names(task),
             f"task.report_metric '{task.report_metric}' is not among {metric_names(task)}")

    m = cfg.model
    _require((m.pretrained is None) != (m.from_config is None),
             f"model '{m.name}': set exactly one of model.pretrained and model.from_config")
    _require(m.arch in ("encoder", "decoder"), f"model.arch must be encoder or decoder (got '{m.arch}')")
    _require(m.pooling in POOLINGS, f"model.pooling must be one of {POOLINGS} (got '{m.pooling}')")

    PROTOCOLS.get(cfg.eval.protocol)
    check_probe_names(cfg.eval.retention)
    _require(cfg.logger.mode in ("offline", "online", "disabled"),
             f"logger.mode must be offline, online or disabled (got '{cfg.logger.mode}')")

    method = METHODS.get(cfg.method.kind)
    method.validate_config(cfg.method, cfg)
    _require(cfg.method.budget is None or cfg.method.budget > 0,
             f"method.budget (the adapter-parameter budget a run was matched to) must be > 0 or null"
             f" (got {cfg.method.budget})")
    lr, why = _lr_and_source(cfg)
    _require(lr > 0 and math.isfinite(lr), f"learning rate must be > 0 (got {lr}: {why})")


def check_probe_names(names) -> None:
    """eval.retention names registered probes, each once (an unknown name says 'did you mean')."""
    from harness.probes import PROBES
    names = list(names)
    for name in names:
        _require(name in PROBES, f"eval.retention: unknown probe '{name}'{did_you_mean(name, PROBES.names())};"
                 f" known: {', '.join(PROBES.names())}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    _require(not repeated, f"eval.retention names {repeated} more than once; each probe runs once per run")


def metric_names(task) -> List[str]:
    """Metric keys a task reports: bare with one eval split, '<metric>_<tag>' with several."""
    tags = list(task.eval_splits)
    if len(tags) == 1:
        return list(task.metrics)
    return [f"{m}_{tag}" for tag in tags for m in task.metrics]


def _lr_and_source(cfg: DictConfig):
    """Absolute `method.lr` if set, else `train.base_lr * method.lr_multiplier`; a method may
    derive its LR otherwise (LoRI-S: a multiple of its LoRI-D run's LR)."""
    from harness.methods import METHODS

    if cfg.method.lr is not None:
        lr, why = float(cfg.method.lr), f"absolute (method.lr={cfg.method.lr}; method.lr_multiplier ignored)"
    else:
        lr = float(cfg.train.base_lr) * float(cfg.method.lr_multiplier)
        why = f"relative: train.base_lr={cfg.train.base_lr} x method.lr_multiplier={cfg.method.lr_multiplier}"
    return METHODS.get(cfg.method.kind).resolve_lr(cfg.method, lr, why)


def effective_lr(cfg: DictConfig) -> float:
    return _lr_and_source(cfg)[0]


def lr_source(cfg: DictConfig) -> str:
    return _lr_and_source(cfg)[1]


def validate_with_tokenizer(cfg: DictConfig, tokenizer, method) -> None:
    """Checks that need the tokenizer: is max_length enough for the input format and the method?"""
    pair = len(cfg.task.text_fields) == 2
    special = tokenizer.num_special_tokens_to_add(pair=pair)
    need_format = special + len(cfg.task.text_fields)  # at least one real token per text field
    need_method = method.min_max_length(cfg.method)
    need = max(need_format, need_method)
    _require(cfg.task.max_length >= need,
             f"task.max_length={cfg.task.max_length} is below what this run needs ({need}:"
             f" {special} special tokens + {len(cfg.task.text_fields)} text field(s); method '{cfg.method.label}'"
             f" needs {need_method})")


def compose(*overrides, config_dir=None) -> DictConfig:
    """The config `python -m harness <overrides>` would run (for scripts, notebooks and tests).
    Inside a running Hydra app (a run naming itself, a sweep resolving its LR grid) the app's own
    Hydra instance is put back afterwards."""
    from pathlib import Path

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    running = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    conf = config_dir or Path(__file__).resolve().parent.parent / "conf"
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides))
    finally:
        if running is not None:
            GlobalHydra.instance().clear()
            GlobalHydra.instance().initialize(running)


def method_preset(name: str) -> dict:
    """conf/method/<name>.yaml as Hydra composes it (its parents' values and the schema's defaults
    included), unresolved. A variant's YAML holds only what differs, so read presets here, never raw."""
    return copy.deepcopy(_method_preset(name))


def task_preset(name: str):
    """conf/task/<name>.yaml as Hydra composes it (a typed, read-only config): what a retention
    probe reads its data with, through the same loader as the task (harness.data)."""
    return _task_preset(name)


@functools.lru_cache(maxsize=None)
def _task_preset(name: str):
    task = compose(f"task={name}").task
    OmegaConf.set_readonly(task, True)
    return task


@functools.lru_cache(maxsize=None)
def _method_preset(name: str) -> dict:
    return OmegaConf.to_container(compose(f"method={name}").method, resolve=False)
