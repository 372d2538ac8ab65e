"""Checks that need the model's config, the tokenizer and the data, but never the weights.

`preflight(cfg)` runs before a run touches its directory (harness.run.run_job) and, in a sweep,
for every job before the first one starts (GridSweeper.check). Bad input ends there with one
HarnessError line naming the setting and what is allowed:

- the model: its transformers config (model.from_config values the model rejects, a local path
  that does not exist), `task.max_length` against its position embeddings, the tokenizer's
  vocabulary against its embedding;
- the method: `Method.check_against_model(mcfg, info)` says whether the method's knobs fit the
  model (ranks against the adapted layers' widths, ReFT layers and rank against the model). The
  model is built on the `meta` device: every module and shape, no memory, no weights;
- the data: every split readable, with the task's columns, text in every text field, labels of
  the task's type and in range, `task.num_labels` equal to the labels present in train, and
  enough evaluation rows for the protocol (harness.data.validate_split);
- the retention probes (eval.retention): the data each one reads (harness/probes).

The meta model and the data scans are cached per (model, task) and per file within a process,
so a sweep of many jobs pays for each once.
"""

import json
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from omegaconf import OmegaConf

from harness.errors import HarnessError
from harness.methods.dims import config_int


@dataclass
class ModelInfo:
    """What methods may check their knobs against (Method.check_against_model)."""
    name: str  # model.name, for messages
    config: object  # transformers PretrainedConfig, with the task's head
    meta: object  # the model with its head on the meta device: modules and shapes, no weights
    tokenizer: object  # shared, read-only
    tokens: int  # len(tokenizer), i.e. the largest token id + 1 (slow to ask each time)
    hidden_size: Optional[int]
    num_layers: Optional[int]
    max_length: Optional[int]  # longest input the position embeddings allow (None: no limit known)
    head: List[str]  # classification head + pooler modules
    _targets: Dict[str, List[str]] = field(default_factory=dict, repr=False)
    _dims: object = field(default=None, repr=False)

    def targets(self, spec: str) -> List[str]:
        """Module names a target_modules spec selects on this model (HarnessError if none)."""
        from harness.methods.targets import resolve_targets
        if spec not in self._targets:
            self._targets[spec] = resolve_targets(self.meta, spec)
        return self._targets[spec]

    def dims(self):
        """The model's sizes and shapes for closed-form parameter counts (Method.adapter_param_count)."""
        from harness.methods.dims import ModelDims
        if self._dims is None:
            self._dims = ModelDims.of(self.meta, self.head)
        return self._dims


_MODELS: Dict[str, ModelInfo] = {}




def _position_limit(config, meta) -> Optional[int]:
    """Longest input: max_position_embeddings, less the offset of models whose learned positions
    start after the padding index (RoBERTa: 514 embeddings, 512 tokens)."""
    import torch.nn as nn
    limit = config_int(config, "max_position_embeddings", "n_positions")
    for name, module in meta.named_modules():
        if name.endswith("position_embeddings") and isinstance(module, nn.Embedding) and module.padding_idx is not None:
            limit = min(limit or module.num_embeddings, module.num_embeddings - module.padding_idx - 1)
    return limit


def model_info(cfg) -> ModelInfo:
    """The model's config, meta-device copy and tokenizer (cached per model and head)."""
    import logging

    import torch
    from transformers import AutoModelForSequenceClassification

    from harness import models
    mcfg = cfg.model
    key = json.dumps([OmegaConf.to_container(mcfg, resolve=True), models.head_kwargs(cfg.task)], sort_keys=True)
    if key in _MODELS:
        return _MODELS[key]
    tok_key, tok_spec = models.tokenizer_spec(mcfg)
    models.check_location(tok_key, tok_spec)
    config = models.model_config(mcfg, cfg.task)
    logging.getLogger("transformers.modeling_utils").setLevel(logging.ERROR)
    try:
        with torch.device("meta"):
            meta = AutoModelForSequenceClassification.from_config(config)
    except Exception as e:  # noqa: BLE001 - the model's own checks raise ValueError, AttributeError, ...
        first = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if mcfg.from_config is not None:
            raise HarnessError(f"model.from_config (model '{mcfg.name}') is rejected by transformers ({first})")
        raise HarnessError(f"model '{mcfg.name}': cannot build {mcfg.pretrained} from its config ({first})")
    classifier, pooler = models._head_modules(meta)
    tokenizer = models._load_tokenizer(tok_spec, mcfg.revision)  # a private copy, kept with the info
    info = ModelInfo(name=mcfg.name, config=config, meta=meta, tokenizer=tokenizer, tokens=len(tokenizer),
                     hidden_size=config_int(config, "hidden_size", "d_model", "n_embd"),
                     num_layers=config_int(config, "num_hidden_layers", "n_layer", "num_layers"),
                     max_length=_position_limit(config, meta), head=classifier + pooler)
    if len(_MODELS) >= 8:
        _MODELS.pop(next(iter(_MODELS)))
    _MODELS[key] = info
    return info


def min_eval_rows(protocol_name: str):
    """(rows, why) an eval split needs under the protocol: a protocol that selects on one part
    and reports another needs 2 rows in each part, one with a single part 1 row. A protocol class
    may state its own `min_examples`."""
    from harness.evaluation import PROTOCOLS
    cls = PROTOCOLS.get(protocol_name)
    stated = getattr(cls, "min_examples", None)
    if stated is not None:
        return int(stated), f"eval.protocol={protocol_name}"
    protocol = cls("", 0)
    parts = protocol.partitions(64)
    per_part = 2 if len(parts) > 1 else 1
    for n in range(1, 65):
        if all(len(idx) >= per_part for idx in protocol.partitions(n).values()):
            return n, f"eval.protocol={protocol_name} ({per_part} per part: {', '.join(parts)})"
    return 1, f"eval.protocol={protocol_name}"


def _check_model_fit(cfg, info: ModelInfo) -> None:
    task, mcfg = cfg.task, cfg.model
    if info.max_length is not None and task.max_length > info.max_length:
        raise HarnessError(f"task.max_length={task.max_length} exceeds what model '{mcfg.name}' can take"
                           f" ({info.max_length} positions); allowed: up to {info.max_length}")
    vocab = config_int(info.config, "vocab_size")
    if vocab is not None and info.tokens > vocab:
        setting = f"model.from_config.vocab_size={vocab}" if mcfg.from_config is not None else "model.tokenizer"
        raise HarnessError(f"{setting}: the tokenizer has {info.tokens} tokens but model '{mcfg.name}'"
                           f" embeds only {vocab}; allowed: vocab_size >= {info.tokens}")


def preflight(cfg, method_checks: bool = True) -> dict:
    """Everything about a validated config that needs the model's config, the tokenizer or the
    data, checked without loading weights or training. Raises HarnessError (one line).
    `method_checks=False` skips the method's own model checks (a staged sweep's later blocks,
    whose method may need runs of earlier blocks). Returns {'data': where the data comes from
    (recorded as inferred), 'rows': {split: rows}, 'model': ModelInfo, 'seconds': time taken}."""
    from harness import data
    from harness.config import validate_with_tokenizer
    from harness.hub import configure_hub
    from harness.methods import METHODS
    from harness.probes.runner import preflight as retention_preflight

    started = time.perf_counter()
    configure_hub()
    method_cls = METHODS.get(cfg.method.kind)
    source = data.check_available(cfg.task)  # a missing mirror or split first: the cheapest, clearest
    info = model_info(cfg)
    validate_with_tokenizer(cfg, info.tokenizer, method_cls)
    _check_model_fit(cfg, info)
    if method_checks:
        method_cls.check_against_model(cfg.method, info)
    rows, needs = min_eval_rows(cfg.eval.protocol)
    checked = data.check_task_data(cfg.task, min_eval_rows=rows, needs=needs)
    retention_preflight(cfg)  # the data each of eval.retention's probes reads
    return {"data": source, "rows": checked["rows"], "model": info, "seconds": time.perf_counter() - started}
