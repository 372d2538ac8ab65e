"""LoHa through peft's bridge: ΔW = (B1·A1) ⊙ (B2·A2), a Hadamard product of two rank-r factorisations
(rank up to r² from 2r(in + out) parameters). B2 starts at 0, so the update does too."""

from dataclasses import dataclass

from harness.methods import register
from harness.methods.base import Knob, MethodConfig, check_dropout, check_rank
from harness.methods.lora import rank_and_targets
from harness.methods.peft_bridge import PeftBridge


@dataclass
class LoHaMethodConfig(MethodConfig):
    r: int = 8
    alpha: float = 8.0  # scale alpha / r (peft's defaults)
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    target_modules: str = "all_linear"


@register
class LoHa(PeftBridge):
    kind = "loha"
    config_class = LoHaMethodConfig
    peft_config_name = "LoHaConfig"
    display_knobs = (Knob("r", "r{}"), Knob("alpha", "a{:g}"), Knob("target_modules"))

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        return sum(2 * mcfg.r * (i + o) for i, o in dims.targets(mcfg.target_modules).values())

    @classmethod
    def budget_candidates(cls, mcfg, dims):
        """Rank and target preset, as LoRA."""
        return rank_and_targets(mcfg)

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        check_rank("r", mcfg.r)
        check_dropout(mcfg.rank_dropout)
        check_dropout(mcfg.module_dropout)
