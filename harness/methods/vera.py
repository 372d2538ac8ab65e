"""VeRA through peft: frozen shared random A/B, trainable scaling vectors d (r) and b (out) per module."""

from dataclasses import dataclass

from harness.methods import register
from harness.methods.base import ApplyContext, MethodConfig, check_dropout, check_rank
from harness.methods.peft_base import PeftMethod


@dataclass
class VeraMethodConfig(MethodConfig):
    r: int = 256
    dropout: float = 0.0
    d_initial: float = 0.1
    projection_prng_key: int = 0  # seed of the shared frozen projections
    target_modules: str = "all_linear"


@register
class Vera(PeftMethod):
    kind = "vera"
    config_class = VeraMethodConfig

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        check_rank("r", mcfg.r)
        check_dropout(mcfg.dropout)

    def peft_config(self, targets, ctx: ApplyContext):
        from peft import VeraConfig
        c = self.cfg
        return VeraConfig(r=c.r, vera_dropout=c.dropout, d_initial=c.d_initial,
                          projection_prng_key=c.projection_prng_key, save_projection=True,
                          target_modules=targets, **self.head_kwargs(ctx))
