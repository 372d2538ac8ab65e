"""DeLoRA through peft's bridge: a LoRA-shaped update B·A whose rank-one terms are normalised and
scaled by a trained bound λ per layer (r(in + out) + 1 parameters), decoupling its strength from
its direction; B starts at 0."""

from dataclasses import dataclass

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.base import Knob, MethodConfig, check_dropout, check_rank
from harness.methods.lora import rank_and_targets
from harness.methods.peft_bridge import PeftBridge


@dataclass
class DeloraMethodConfig(MethodConfig):
    r: int = 8
    delora_lambda: float = 15.0  # initial bound of the update's norm (peft's default)
    module_dropout: float = 0.0
    target_modules: str = "all_linear"


@register
class Delora(PeftBridge):
    kind = "delora"
    config_class = DeloraMethodConfig
    peft_config_name = "DeloraConfig"
    display_knobs = (Knob("r", "r{}"), Knob("delora_lambda", "l{:g}"), Knob("target_modules"))

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        return sum(mcfg.r * (i + o) + 1 for i, o in dims.targets(mcfg.target_modules).values())

    @classmethod
    def budget_candidates(cls, mcfg, dims):
        """Rank and target preset, as LoRA."""
        return rank_and_targets(mcfg)

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        check_rank("r", mcfg.r)
        check_dropout(mcfg.module_dropout)
        if mcfg.delora_lambda <= 0:
            raise HarnessError(f"method.delora_lambda must be > 0 (got {mcfg.delora_lambda})")
