"""MiSS (formerly Bone) through peft's bridge: one trained r x out block per layer, shared across
the input dimension's r-wide slices (ΔW tiles it), starting at 0. r must not exceed any adapted
layer's input width."""

from dataclasses import dataclass

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.base import Knob, MethodConfig, check_dropout, check_rank
from harness.methods.lora import rank_and_targets
from harness.methods.peft_bridge import PeftBridge


@dataclass
class MissMethodConfig(MethodConfig):
    r: int = 16  # peft's 64 is sized for 4096-wide LLMs; 16 fits small models and keeps LoRA-r8's order of size
    miss_dropout: float = 0.0
    target_modules: str = "all_linear"


@register
class Miss(PeftBridge):
    kind = "miss"
    config_class = MissMethodConfig
    peft_config_name = "MissConfig"
    display_knobs = (Knob("r", "r{}"), Knob("target_modules"))

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        return sum(mcfg.r * o for _, o in dims.targets(mcfg.target_modules).values())

    @classmethod
    def budget_candidates(cls, mcfg, dims):
        """Rank and target preset, as LoRA."""
        return rank_and_targets(mcfg)

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        check_rank("r", mcfg.r)
        check_dropout(mcfg.miss_dropout)

    @classmethod
    def fit_to_model(cls, mcfg, dims):
        narrowest = min(i for i, _ in dims.targets(mcfg.target_modules).values())
        if mcfg.r > narrowest:
            raise HarnessError(f"method.r={mcfg.r} exceeds the narrowest input width of the adapted layers"
                               f" ({narrowest}); allowed: 1..{narrowest}")
        return {}
