"""C3A through peft's bridge: ΔW made of b x b circulant blocks (a circular convolution), one kernel
of length b per block: in·out / b parameters per layer. b must divide every adapted layer's in and
out width; left null it is chosen from the model as their greatest common divisor (peft's advice),
and recorded. peft starts the kernels at random (xavier), so outputs change at init."""

from dataclasses import dataclass
from typing import Optional

from harness.methods import register
from harness.methods.base import Knob, MethodConfig
from harness.methods.peft_bridge import PeftBridge, check_divides, shared_width


@dataclass
class C3AMethodConfig(MethodConfig):
    block_size: Optional[int] = None  # None: the gcd of the adapted widths (larger b: fewer parameters)
    target_modules: str = "all_linear"


@register
class C3A(PeftBridge):
    kind = "c3a"
    config_class = C3AMethodConfig
    peft_config_name = "C3AConfig"
    display_knobs = (Knob("block_size", "b{}"), Knob("target_modules"))
    identity_at_init = False

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        b = cls.knob_on(mcfg, dims, "block_size")
        return sum(i * o // b for i, o in dims.targets(mcfg.target_modules).values())

    @classmethod
    def fit_to_model(cls, mcfg, dims):
        shared = shared_width(dims, mcfg.target_modules)
        if mcfg.block_size is None:
            return {"block_size": (shared, "greatest common divisor of the adapted layers' in and out widths")}
        check_divides("block_size", mcfg.block_size, shared)
        return {}
