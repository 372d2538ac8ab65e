"""OFT through peft's bridge: W·R with R block-diagonal and orthogonal (Cayley map of a skew-symmetric
block, b(b-1)/2 parameters per b x b block over the input features). R starts at I.
peft silently shrinks a block size that does not divide a layer's input width; here it is refused."""

from dataclasses import dataclass

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.base import Knob, MethodConfig, check_dropout
from harness.methods.peft_bridge import PeftBridge


@dataclass
class OFTMethodConfig(MethodConfig):
    oft_block_size: int = 32  # peft's default; r (the number of blocks) follows from it per layer
    module_dropout: float = 0.0
    target_modules: str = "all_linear"


@register
class OFT(PeftBridge):
    kind = "oft"
    config_class = OFTMethodConfig
    peft_config_name = "OFTConfig"
    display_knobs = (Knob("oft_block_size", "b{}"), Knob("target_modules"))

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        b = mcfg.oft_block_size
        return sum(i // b * b * (b - 1) // 2 for i, _ in dims.targets(mcfg.target_modules).values())

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        check_dropout(mcfg.module_dropout)
        if mcfg.oft_block_size < 2:
            raise HarnessError(f"method.oft_block_size must be >= 2 (got {mcfg.oft_block_size})")

    @classmethod
    def fit_to_model(cls, mcfg, dims):
        widths = sorted({i for i, _ in dims.targets(mcfg.target_modules).values()})
        if any(i % mcfg.oft_block_size for i in widths):
            raise HarnessError(f"method.oft_block_size={mcfg.oft_block_size} must divide the input width of every"
                               f" adapted layer ({widths} on this model); allowed: a common divisor of them")
        return {}
