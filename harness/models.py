"""Backbone + sequence-classification head, from a hub id, a local dir, an embedded package or a config.

Also decides (and reports) the pad token of decoders and which modules form the task head.
"""

import importlib
import logging
import os
from dataclasses import dataclass, field
from typing import List

from harness.errors import HarnessError

HEAD_NAMES = ("classifier", "score")  # top-level head module of HF *ForSequenceClassification


@dataclass
class BuiltModel:
    model: object
    tokenizer: object
    base_total: int  # parameters of the base model incl. head, before any method touches it
    classifier: List[str]
    pooler: List[str]
    inferred: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)  # what identifies the base weights (provenance)
    # head modules whose weights the checkpoint lacked (DeBERTa-v3's pooler): random, so they train
    untrained_head: List[str] = field(default_factory=list)


def resolve_location(spec: str) -> str:
    """'pkg:<module>' -> the module's get_model_path(); anything else is a hub id or a local dir."""
    if spec.startswith("pkg:"):
        name = spec[4:]
        try:
            return str(importlib.import_module(name).get_model_path())
        except ImportError as e:
            raise HarnessError(f"model package '{name}' is not installed ({e}); pip install -r requirements.txt")
    return os.path.expanduser(spec)


def looks_like_path(spec) -> bool:
    """A spec written as a local path (not a hub id): '/…', './…', '../…' or '~…'."""
    return isinstance(spec, str) and spec.startswith(("/", "./", "../", "~"))


def check_location(key: str, spec) -> None:
    """A local-path spec that is not a directory is reported as such (not as a bad hub repo id)."""
    if looks_like_path(spec) and not os.path.isdir(os.path.expanduser(spec)):
        raise HarnessError(f"{key}={spec}: no such directory")


def tokenizer_spec(mcfg) -> tuple:
    """(config key, spec) of the tokenizer: model.tokenizer, else model.pretrained."""
    return ("model.tokenizer", mcfg.tokenizer) if mcfg.tokenizer else ("model.pretrained", mcfg.pretrained)


def head_kwargs(task_cfg) -> dict:
    """What the task decides about the head: number of outputs and loss."""
    problem = "regression" if task_cfg.label_type == "regression" else "single_label_classification"
    return dict(num_labels=task_cfg.num_labels, problem_type=problem)


def model_config(mcfg, task_cfg):
    """The transformers config of the model with the task's head (no weights are read):
    model.from_config's values, or the checkpoint's config.json."""
    from transformers import AutoConfig
    kwargs = head_kwargs(task_cfg)
    if mcfg.from_config is not None:
        spec = dict(mcfg.from_config)
        model_type = spec.pop("model_type", None)
        if not model_type:
            raise HarnessError(f"model '{mcfg.name}': model.from_config needs a model_type (e.g. bert, llama)")
        try:
            return AutoConfig.for_model(model_type, **spec, **kwargs)
        except Exception as e:  # noqa: BLE001 - transformers raises ValueError/KeyError/TypeError here
            raise HarnessError(f"model.from_config (model '{mcfg.name}') is rejected by transformers"
                               f" ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    check_location("model.pretrained", mcfg.pretrained)
    try:
        return AutoConfig.from_pretrained(resolve_location(mcfg.pretrained), revision=mcfg.revision, **kwargs)
    except (OSError, ValueError) as e:
        raise HarnessError(f"cannot load model '{mcfg.pretrained}' ({str(e).splitlines()[0]})")


def _load_tokenizer(spec: str, revision):
    """A private copy of the cached tokenizer: a run (or a test) that sets its pad token must not
    change what later runs of the same process see and record."""
    import copy

    from transformers import AutoTokenizer
    if (spec, revision) not in _TOKENIZERS:
        try:
            _TOKENIZERS[(spec, revision)] = AutoTokenizer.from_pretrained(resolve_location(spec), revision=revision)
        except OSError as e:
            raise HarnessError(f"cannot load tokenizer '{spec}' ({str(e).splitlines()[0]})")
    return copy.deepcopy(_TOKENIZERS[(spec, revision)])


def _ensure_pad_token(tokenizer, arch: str) -> dict:
    if tokenizer.pad_token is not None:
        return {"value": tokenizer.pad_token, "reason": "the tokenizer's own pad token"}
    for candidate in ("eos_token", "unk_token"):
        token = getattr(tokenizer, candidate)
        if token is not None:
            tokenizer.pad_token = token
            return {"value": token, "reason": f"tokenizer has no pad token; using its {candidate}"
                    " (the head reads the last non-pad token, padding is masked)"}
    raise HarnessError(f"tokenizer has no pad, eos or unk token to pad {arch} batches with")


def _head_modules(model) -> tuple:
    top = dict(model.named_children())
    classifier = [n for n in HEAD_NAMES if n in top]
    if not classifier:
        raise HarnessError(f"no classification head ({'/'.join(HEAD_NAMES)}) found on {type(model).__name__}")
    pooler = [n for n, m in model.named_modules()
              if n.split(".")[-1] == "pooler" and any(True for _ in m.parameters())]
    return classifier, pooler


# One process runs many sweep jobs (basic launcher): the pretrained weights and tokenizer are read
# from disk once and every job gets a deep copy, its new head initialised under its own seed.
_PRETRAINED: dict = {}  # (location, revision, num_labels, problem_type) -> (pristine model, new keys)
_TOKENIZERS: dict = {}


def _load_pretrained(location: str, mcfg, kwargs: dict):
    from transformers import AutoModelForSequenceClassification
    key = (location, mcfg.revision, kwargs["num_labels"], kwargs["problem_type"])
    if key not in _PRETRAINED:
        _PRETRAINED.clear()  # keep one base model in memory
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                location, revision=mcfg.revision, output_loading_info=True, **kwargs)
        except OSError as e:
            raise HarnessError(f"cannot load model '{mcfg.pretrained}' ({str(e).splitlines()[0]})")
        _PRETRAINED[key] = (model, sorted(info.get("missing_keys", [])))
    return _PRETRAINED[key]


def _init_new_weights(model, new_keys, seed: int) -> None:
    """(Re)initialise the modules that hold weights the checkpoint lacked (the task head), seeded."""
    import torch
    torch.manual_seed(seed)
    owners = sorted({key.rsplit(".", 1)[0] for key in new_keys})
    for name in owners:
        model._init_weights(model.get_submodule(name))


def _build_model(mcfg, task_cfg, seed: int):
    import copy

    import torch
    from transformers import AutoModelForSequenceClassification
    kwargs = head_kwargs(task_cfg)
    if mcfg.from_config is not None:
        config = model_config(mcfg, task_cfg)
        torch.manual_seed(seed)  # the random backbone depends on the run seed only
        return AutoModelForSequenceClassification.from_config(config), ["(all: random init)"]
    pristine, new_keys = _load_pretrained(resolve_location(mcfg.pretrained), mcfg, kwargs)
    model = copy.deepcopy(pristine)
    _init_new_weights(model, new_keys, seed)
    return model, new_keys


def build(cfg) -> BuiltModel:
    mcfg = cfg.model
    logging.getLogger("transformers.modeling_utils").setLevel(logging.ERROR)  # we report new weights ourselves
    # transformers 4.57 warns "layers were not sharded" on every load without tensor parallelism
    logging.getLogger("transformers.integrations.tensor_parallel").setLevel(logging.ERROR)
    tokenizer = _load_tokenizer(mcfg.tokenizer or mcfg.pretrained, mcfg.revision)
    pad = _ensure_pad_token(tokenizer, mcfg.arch)
    tokenizer.deprecation_warnings["Asking-to-pad-a-fast-tokenizer"] = True  # silence a per-batch warning
    model, newly_initialised = _build_model(mcfg, cfg.task, cfg.train.seed)
    model.config.pad_token_id = tokenizer.pad_token_id  # decoders find the last real token with it
    classifier, pooler = _head_modules(model)
    built = BuiltModel(model=model, tokenizer=tokenizer, base_total=sum(p.numel() for p in model.parameters()),
                       classifier=classifier, pooler=pooler, weights=_weights(mcfg, model),
                       untrained_head=_not_in_checkpoint(pooler, newly_initialised, mcfg))
    built.inferred = {
        "pad_token": pad,
        "newly_initialised": {"value": newly_initialised, "reason": "not in the checkpoint"},
        "model_type": {"value": model.config.model_type, "reason": "from the model config"},
    }
    return built


def _weights(mcfg, model) -> dict:
    from harness.provenance import weights_identity
    if mcfg.from_config is not None:
        return weights_identity("", None, dict(mcfg.from_config))
    identity = weights_identity(resolve_location(mcfg.pretrained), mcfg.revision)
    if identity["kind"] == "hub":  # the commit the hub id resolved to
        identity["resolved_commit"] = getattr(model.config, "_commit_hash", None)
    return identity


def _not_in_checkpoint(pooler: List[str], new_keys: List[str], mcfg) -> List[str]:
    """Pooler modules a pretrained checkpoint does not provide (DeBERTa-v3): random layers that a
    frozen-pooler policy would put between the encoder and the classifier."""
    if mcfg.from_config is not None:
        return []  # a random model: nothing comes from a checkpoint, the policy applies as written
    return [m for m in pooler if any(k.startswith(m + ".") for k in new_keys)]


def head_policy(built: BuiltModel, policy: str) -> tuple:
    """(head modules that train, head modules kept frozen) under train.head. Under the default
    policy a pooler the checkpoint lacked trains with the classifier (it is as random as the
    classifier); `classifier+pooler` trains it anyway, `none` is taken literally."""
    train = {"classifier": built.classifier + built.untrained_head,
             "classifier+pooler": built.classifier + built.pooler, "none": []}[policy]
    frozen = [m for m in built.classifier + built.pooler if m not in train]
    return list(train), frozen
