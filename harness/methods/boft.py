"""BOFT through peft's bridge: OFT whose orthogonal R is a product of m butterfly factors of b x b
blocks (m = boft_n_butterfly_factor; m = 1 is block-diagonal OFT with full b x b blocks), plus a
trained scale per output feature. R starts at I and the scales at 1.
Without its compiled CUDA extension (fbd_cuda: ninja and nvcc at run time) peft silently drops m to
1; the harness refuses that run instead of recording m it did not train."""

from dataclasses import dataclass

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.base import Knob, MethodConfig, check_dropout
from harness.methods.peft_bridge import PeftBridge


@dataclass
class BOFTMethodConfig(MethodConfig):
    boft_block_size: int = 4  # peft's default
    boft_n_butterfly_factor: int = 1  # > 1 needs peft's CUDA extension (see above)
    boft_dropout: float = 0.0
    target_modules: str = "all_linear"


@register
class BOFT(PeftBridge):
    kind = "boft"
    config_class = BOFTMethodConfig
    peft_config_name = "BOFTConfig"
    display_knobs = (Knob("boft_block_size", "b{}"), Knob("boft_n_butterfly_factor", "m{}"), Knob("target_modules"))

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        """m factors of in/b blocks of b x b each (stored whole; the skew part is taken in the forward
        pass), and one scale per output feature."""
        m, b = mcfg.boft_n_butterfly_factor, mcfg.boft_block_size
        return sum(m * i * b + o for i, o in dims.targets(mcfg.target_modules).values())

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        check_dropout(mcfg.boft_dropout)
        m, b = mcfg.boft_n_butterfly_factor, mcfg.boft_block_size
        if b < 1 or m < 1 or (m > 1 and b % 2):
            raise HarnessError(f"method.boft_block_size must be >= 1 (even with butterflies) and"
                               f" method.boft_n_butterfly_factor >= 1 (got {b}, {m})")

    @classmethod
    def fit_to_model(cls, mcfg, dims):
        """Every adapted layer's input width must tile into b x 2^(m-1)."""
        tile = mcfg.boft_block_size * 2 ** (mcfg.boft_n_butterfly_factor - 1)
        widths = sorted({i for i, _ in dims.targets(mcfg.target_modules).values()})
        if any(i % tile for i in widths):
            raise HarnessError(f"method.boft_block_size x 2^(boft_n_butterfly_factor - 1) = {tile} must divide the"
                               f" input width of every adapted layer ({widths} on this model)")
        return {}

    def apply(self, model, ctx):
        model = super().apply(model, ctx)
        factors = {p.shape[0] for n, p in model.named_parameters() if ".boft_R." in n}
        if factors != {self.cfg.boft_n_butterfly_factor}:
            raise HarnessError(f"method.boft_n_butterfly_factor={self.cfg.boft_n_butterfly_factor}: peft built"
                               f" {sorted(factors)} (its fbd_cuda extension did not load here: it needs ninja and"
                               " nvcc); set method.boft_n_butterfly_factor=1")
        return model
