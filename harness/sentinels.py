"""Sentinels against method hooks that silently do nothing (the family of AdaLoRA's missing
`update_and_allocate`). Each compares what a method declares with what its hooks did to the model
and returns record flags for the difference; none raises: the run goes on, its record says so.

- base_weights_rewritten / base_weights_not_rewritten: every base parameter is fingerprinted before
  the method is applied and again after apply() and its data initialiser, against the method's
  `rewrites_base_weights` (PiSSA, OLoRA and LoRA-GA turn W into a residual; nothing else may, and
  a residual init that silently fell back to a plain one rewrites nothing).
- data_init_did_nothing: a method that declares `data_init` whose initialiser changed no trainable
  parameter (removed, skipped, or a no-op: peft's LoRA-GA quietly falls back to a plain LoRA init
  when the gradients its preprocessing attaches are missing).
- head_never_trained: the head modules the head policy trains, unmoved by every optimizer step
  (dropped from the optimizer, or given LR 0 by a parameter-group hook).
- adapter_count_differs_from_closed_form: the trainable adapter count is not the closed form the
  method declares (`adapter_param_count`); a method without one is counted by its library, and
  the record's params say which (`count_source`).
"""

import hashlib
from typing import Dict, List

WHY = {
    "base_weights_rewritten": "the method changed frozen base weights but does not declare rewrites_base_weights",
    "base_weights_not_rewritten": "the method declares rewrites_base_weights but left every base weight as loaded",
    "data_init_did_nothing": "the method's data-driven initialiser changed no trainable parameter",
    "head_never_trained": "no optimizer step moved the head modules the head policy trains",
    "adapter_count_differs_from_closed_form": "the trainable adapter count differs from the method's closed form",
}


def _digest(tensor) -> str:
    """Exact fingerprint of a tensor's values (its bytes, read on the CPU), whatever its dtype."""
    import torch
    data = tensor.detach().contiguous().cpu().view(-1).view(torch.uint8)
    return hashlib.blake2b(data.numpy().tobytes(), digest_size=16).hexdigest()


def digests(named) -> Dict[str, str]:
    return {name: _digest(p) for name, p in named}


class BaseWeights:
    """The base model's parameters as loaded. The objects are kept, not their names: a method wraps
    and renames modules (peft's base_layer), and rewrites values in place (PiSSA's residual)."""

    def __init__(self, model):
        self.params = list(model.named_parameters())
        self.before = digests(self.params)

    def flags(self, method) -> List[str]:
        rewritten = digests(self.params) != self.before
        if rewritten and not method.rewrites_base_weights:
            return ["base_weights_rewritten"]
        if method.rewrites_base_weights and not rewritten:
            return ["base_weights_not_rewritten"]
        return []


def trainable(model) -> Dict[str, str]:
    """Fingerprints of the trainable parameters by name (a data initialiser may also reshape or
    replace them: EVA redistributes ranks)."""
    return digests((n, p) for n, p in model.named_parameters() if p.requires_grad)


def data_init_flags(before: Dict[str, str], model) -> List[str]:
    return ["data_init_did_nothing"] if trainable(model) == before else []


class HeadWeights:
    """The trainable head parameters before training, to tell whether training moved any."""

    def __init__(self, model, head_train: List[str]):
        from harness.params import is_head
        self.params = [(n, p) for n, p in model.named_parameters() if p.requires_grad and is_head(n, head_train)]
        self.before = digests(self.params)

    def flags(self) -> List[str]:
        if self.params and digests(self.params) == self.before:
            return ["head_never_trained"]
        return []


def count_source(method, mcfg, dims, adapter: int):
    """({'count_source': 'closed_form' | the method's library}, flags): the adapter count is held to
    the closed form the method declares; without one, the library's count stands, and says so."""
    expected = type(method).adapter_param_count(mcfg, dims)
    if expected is None:
        return {"count_source": method.library}, []
    return {"count_source": "closed_form"}, ([] if adapter == expected else ["adapter_count_differs_from_closed_form"])
