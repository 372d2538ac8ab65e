"""LoRA through peft, on explicitly resolved target modules (see targets.py).

The head is trained through `modules_to_save` (no task_type: SEQ_CLS would force the classifier to
train even when the head policy says frozen), so it is saved with the adapter.
"""

import math
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.base import ApplyContext, Method, MethodConfig
from harness.methods.targets import resolve_targets


@dataclass
class LoraMethodConfig(MethodConfig):
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    rslora: bool = False  # scale alpha/sqrt(r) instead of alpha/r
    target_modules: str = "all_linear"  # preset (targets.PRESETS) or regex


@register
class Lora(Method):
    kind = "lora"
    config_class = LoraMethodConfig

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        if mcfg.r < 1:
            raise HarnessError(f"method.r must be >= 1 (got {mcfg.r})")
        if mcfg.alpha <= 0:
            raise HarnessError(f"method.alpha must be > 0 (got {mcfg.alpha})")
        if not 0 <= mcfg.dropout < 1:
            raise HarnessError(f"method.dropout must be in [0, 1) (got {mcfg.dropout})")

    def peft_config(self, targets, ctx: ApplyContext):
        """The peft config; subclasses (DoRA, ...) extend it."""
        from peft import LoraConfig
        c = self.cfg
        return LoraConfig(r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout, use_rslora=c.rslora,
                          target_modules=targets, modules_to_save=list(ctx.head_train) or None, bias="none")

    def apply(self, model, ctx: ApplyContext):
        from peft import get_peft_model
        targets = resolve_targets(model, self.cfg.target_modules)
        c = self.cfg
        scale = c.alpha / (math.sqrt(c.r) if c.rslora else c.r)
        self.inferred.update(target_modules=targets, n_target_modules=len(targets), lora_scale=scale)
        return get_peft_model(model, self.peft_config(targets, ctx))

    def rank_snapshot(self, model):
        return {name: self.cfg.r for name in self.inferred.get("target_modules", [])}
