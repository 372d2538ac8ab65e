"""The Probe protocol and what probes share: their data (through harness.data), the encoder body
of a (possibly adapted) model, tokenised inputs padded once and sorted by length.

A probe measures one number on a model. The runner (harness/probes/runner.py) calls `prepare`
once per run (data, tokenisation, anything read from the checkpoint), then `measure` on the base
model before training and on the adapted model after it, in eval mode, under inference mode and
the run's autocast, on the run's device. Probes import torch inside functions, so that config
validation stays fast.
"""

import inspect
from typing import Dict, List, Optional

import numpy as np

from harness.errors import HarnessError

# Longest input a probe feeds the model: sentence-transformers' max_seq_length for MiniLM, far above
# any STS-B sentence (so nothing is cut there); the count cut is recorded anyway.
MAX_TOKENS = 256


class Probe:
    name: str = ""
    version: str = "1"  # bump when what it measures changes; recorded with its values
    higher_is_better: bool = True  # orients `drop`: > 0 always means the model got worse
    what: str = ""  # one line, recorded: what the number is

    def __init__(self, cfg):
        self.cfg = cfg
        self.info: Dict[str, object] = {}  # recorded with the values (inputs, settings, data identity)
        self.inferred: Dict[str, dict] = {}  # settings it chose: printed and recorded like the run's

    @classmethod
    def check(cls, cfg) -> None:
        """Before anything runs (preflight): what it needs that can be checked without weights
        (its data). Raises HarnessError (one line)."""

    def prepare(self, built, runtime) -> Optional[str]:
        """Read and tokenise its inputs once (built: harness.models.BuiltModel, the base model).
        Returns None, or why this probe cannot run on this model (recorded as skipped)."""
        raise NotImplementedError

    def measure(self, model) -> float:
        """Its value on `model`, the run's whole model (base, or adapted with the method attached)."""
        raise NotImplementedError


# -- data: the task's own loader, never a second one ---------------------------------------------

def probe_data(task_name: str, split: str):
    """(task config, dataset, source identity) of one split of a task, read as the run reads its
    task: HARNESS_DATA_DIR, else the hub, else the copy bundled with the package."""
    from harness import data
    from harness.config import task_preset
    task = task_preset(task_name)
    raw = data.load_split(task, split)
    data.validate_split(task, split, ds=raw)
    return task, raw, data.source_identity(task, split, raw)


def check_probe_data(probe: str, task_name: str, split: str) -> None:
    """The split a probe reads is there and usable (preflight); the error names the probe."""
    from harness import data
    from harness.config import task_preset
    task = task_preset(task_name)
    try:
        data.check_available(task)
        data.validate_split(task, split)
    except HarnessError as e:
        raise HarnessError(f"eval.retention: probe '{probe}' reads {task_name} '{split}': {e}") from None


# -- the model ------------------------------------------------------------------------------------

def encoder_body(model):
    """The backbone under the task head, adapters included: the HF model a peft wrapper adapts
    in place (get_base_model), then its `base_model` (BertModel, RobertaModel, LlamaModel...).
    peft's layers are injected into it and adapters' interventions hook into it (their forward
    context is opened by its own forward from the attention mask), so calling it runs the model
    the user would deploy, minus the head."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(inner, "base_model", None)
    if body is None or body is inner:
        raise HarnessError(f"retention probes need a model with a backbone under its head; {type(inner).__name__}"
                           " exposes none (base_model)")
    return body


def body_inputs(body) -> List[str]:
    """The tokenizer outputs the body's forward takes (BERT: token_type_ids too; RoBERTa, Llama: not)."""
    accepted = set(inspect.signature(body.forward).parameters)
    return [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in accepted]


def pool(hidden, mask, how: str):
    """Sentence embeddings [b, d] from hidden states [b, t, d] and the attention mask [b, t]:
    mean over the real tokens (special tokens included, as sentence-transformers does), the first
    real token (cls), or the last real token (last; right or left padding)."""
    import torch
    hidden, mask = hidden.float(), mask.to(hidden.device)
    if how == "mean":
        weights = mask.unsqueeze(-1).float()
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if how == "cls":
        return hidden[rows, mask.long().argmax(1)]
    if how == "last":
        return hidden[rows, mask.shape[1] - 1 - mask.long().flip(1).argmax(1)]
    raise HarnessError(f"model.pooling must be mean, cls or last (got '{how}')")


class Batches:
    """Tokenised rows padded once into batches, longest first (the padding and the memory peak
    are then where they are smallest); `positions` maps each batch row back to its input."""

    def __init__(self, rows: List[Dict[str, list]], tokenizer, batch_size: int, keys: List[str]):
        import torch
        order = np.argsort(-np.array([len(r["input_ids"]) for r in rows]), kind="stable")
        self.batches = []
        left = tokenizer.padding_side == "left"
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            width = max(len(rows[i]["input_ids"]) for i in chosen)
            tensors = {}
            for key in keys + [k for k in ("labels",) if k in rows[0]]:
                fill = {"input_ids": tokenizer.pad_token_id, "labels": -100}.get(key, 0)
                padded = []
                for i in chosen:
                    values, gap = list(rows[i][key]), [fill] * (width - len(rows[i][key]))
                    padded.append(gap + values if left else values + gap)
                tensors[key] = torch.tensor(padded, dtype=torch.long)
            self.batches.append((chosen, tensors))

    def __iter__(self):
        return iter(self.batches)


def tokenize(tokenizer, texts: List[str], keys: List[str], **kwargs):
    """(rows, at_limit): each text's encodings (the model's `keys`, plus what kwargs ask for), cut
    at MAX_TOKENS; at_limit counts the rows that reached it (possibly cut)."""
    out = tokenizer(list(texts), truncation=True, max_length=MAX_TOKENS, **kwargs)
    names = [k for k in out if k in keys or k == "special_tokens_mask"]
    rows = [dict(zip(names, values)) for values in zip(*(out[k] for k in names))]
    return rows, sum(len(r["input_ids"]) >= MAX_TOKENS for r in rows)
