"""One parameter-accounting rule for every method.

  adapter     trainable parameters outside the task head (for full FT: the whole trainable body)
  head        trainable parameters of the task head (classifier; pooler if the head policy trains it)
  trainable   adapter + head
  base_total  parameters of the base model with its head, before the method touched it
  stored      parameters a saved checkpoint of this run holds (methods may override: AdaLoRA)
  nonzero     non-zero entries of the adapter parameters (methods may override: LoRI-S masks)
Percentages are of base_total, and say so in their names.
"""

from typing import Dict, List

_PEFT_PREFIX = "base_model.model."


def _relative(name: str) -> str:
    return name[len(_PEFT_PREFIX):] if name.startswith(_PEFT_PREFIX) else name


def is_head(name: str, head_modules: List[str]) -> bool:
    rel = _relative(name)
    return any(rel == h or rel.startswith(h + ".") for h in head_modules)


def param_report(model, head_modules: List[str], base_total: int, method) -> Dict[str, float]:
    adapter = head = nonzero = 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if is_head(name, head_modules):
            head += p.numel()
        else:
            adapter += p.numel()
            nonzero += int((p.detach() != 0).sum())
    report = {"adapter": adapter, "head": head, "trainable": adapter + head, "base_total": base_total,
              "stored": adapter + head, "nonzero": nonzero}
    report.update(method.param_report(model))
    report["adapter_pct_of_base"] = 100.0 * report["adapter"] / base_total
    report["trainable_pct_of_base"] = 100.0 * report["trainable"] / base_total
    return report


def head_trainability(model, head_train: List[str], head_frozen: List[str]) -> List[str]:
    """Head parameters whose requires_grad contradicts the head policy (empty = policy honoured).

    Under peft, a trained head module is a copy (`<head>.modules_to_save.*`) and the original
    (`<head>.original_module.*`) stays frozen; only the copy counts.
    """
    wrong = []
    for name, p in model.named_parameters():
        if ".original_module." in name:
            continue
        if is_head(name, head_train) and not p.requires_grad:
            wrong.append(f"{_relative(name)} is frozen but the head policy trains it")
        if is_head(name, head_frozen) and p.requires_grad:
            wrong.append(f"{_relative(name)} trains but the head policy freezes it")
    return wrong
