"""LoRA through peft (DoRA is the config-only variant `use_dora: true`)."""

import math
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.base import ApplyContext, MethodConfig, check_dropout, check_rank
from harness.methods.peft_base import PeftMethod
from harness.methods.targets import check_rank_fits


@dataclass
class LoraMethodConfig(MethodConfig):
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    rslora: bool = False  # scale alpha/sqrt(r) instead of alpha/r
    use_dora: bool = False  # DoRA: + one trainable magnitude per output feature
    target_modules: str = "all_linear"  # preset(s) joined by '+', or a regex (targets.py)


def check_lora_knobs(mcfg) -> None:
    check_rank("r", mcfg.r)
    check_dropout(mcfg.dropout)
    if mcfg.alpha <= 0:
        raise HarnessError(f"method.alpha must be > 0 (got {mcfg.alpha})")


@register
class Lora(PeftMethod):
    kind = "lora"
    config_class = LoraMethodConfig

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        check_lora_knobs(mcfg)

    @classmethod
    def check_against_model(cls, mcfg, model) -> None:
        check_rank_fits("r", mcfg.r, model, mcfg.target_modules)

    def describe(self, model, targets) -> dict:
        c = self.cfg
        return {"lora_scale": c.alpha / (math.sqrt(c.r) if c.rslora else c.r)}

    def peft_config(self, targets, ctx: ApplyContext):
        from peft import LoraConfig
        c = self.cfg
        return LoraConfig(r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout, use_rslora=c.rslora,
                          use_dora=c.use_dora, target_modules=targets,
                          **self.head_kwargs(ctx))

    def rank_snapshot(self, model):
        return {name: self.cfg.r for name in self.inferred.get("target_modules", [])}
