"""RandLoRA through peft's bridge: ΔW = Σ_k B_k·diag(λ_k)·A·diag(γ_k) over n = ceil(min(in, out) / r)
frozen random rank-r bases shared by every layer (so the sum reaches full rank); only the diagonal
scalings λ (r x n) and γ (n x min(in, out)) train. The bases are saved with the adapter
(save_projection), as VeRA's are, so a reload does not depend on the PRNG key."""

from dataclasses import dataclass
from math import ceil

from harness.methods import register
from harness.methods.base import Knob, MethodConfig, check_dropout, check_rank
from harness.methods.peft_bridge import PeftBridge


@dataclass
class RandLoraMethodConfig(MethodConfig):
    r: int = 32  # rank of each random basis (peft's default)
    randlora_alpha: float = 640.0  # scale alpha / r (peft's default, 20)
    randlora_dropout: float = 0.0
    sparse: bool = False  # ternary sparse bases
    projection_prng_key: int = 0  # seed of the shared frozen bases
    target_modules: str = "all_linear"


@register
class RandLora(PeftBridge):
    kind = "randlora"
    config_class = RandLoraMethodConfig
    peft_config_name = "RandLoraConfig"
    display_knobs = (Knob("r", "r{}"), Knob("target_modules"), Knob("sparse", "sparse", quiet=True))

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        def per_layer(i, o):
            n = ceil(min(i, o) / mcfg.r)
            return mcfg.r * n + n * min(i, o)
        return sum(per_layer(i, o) for i, o in dims.targets(mcfg.target_modules).values())

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        check_rank("r", mcfg.r)
        check_dropout(mcfg.randlora_dropout)
