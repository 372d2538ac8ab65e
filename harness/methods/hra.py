"""HRA through peft's bridge: W·H with H a chain of r Householder reflections of the input space
(r vectors of the input width). The vectors start in equal pairs, whose reflections cancel, so H
starts at I (up to float rounding): r must be even for that."""

from dataclasses import dataclass

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.base import BUDGET_RANKS, Knob, MethodConfig, check_rank
from harness.methods.lora import rank_and_targets
from harness.methods.peft_bridge import PeftBridge


@dataclass
class HRAMethodConfig(MethodConfig):
    r: int = 8  # peft's default
    apply_GS: bool = False  # Gram-Schmidt orthogonalise the vectors in the forward pass
    target_modules: str = "all_linear"


@register
class HRA(PeftBridge):
    kind = "hra"
    config_class = HRAMethodConfig
    peft_config_name = "HRAConfig"
    display_knobs = (Knob("r", "r{}"), Knob("target_modules"), Knob("apply_GS", "gs", quiet=True))
    identity_at_init = False  # the paired reflections cancel only up to float rounding

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        return sum(mcfg.r * i for i, _ in dims.targets(mcfg.target_modules).values())

    @classmethod
    def budget_candidates(cls, mcfg, dims):
        """Even ranks (its identity initialisation pairs reflections) and target preset."""
        return rank_and_targets(mcfg, ranks=tuple(r for r in BUDGET_RANKS if r % 2 == 0))

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        check_rank("r", mcfg.r)
        if mcfg.r % 2:
            raise HarnessError(f"method.r must be even for HRA's identity initialisation (got {mcfg.r})")

    @classmethod
    def fit_to_model(cls, mcfg, dims):
        narrowest = min(i for i, _ in dims.targets(mcfg.target_modules).values())
        if mcfg.r > narrowest:
            raise HarnessError(f"method.r={mcfg.r} exceeds the narrowest input width of the adapted layers"
                               f" ({narrowest}); allowed: 2..{narrowest}, even")
        return {}
