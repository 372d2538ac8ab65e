"""VeRA through peft: frozen shared random A/B, trainable scaling vectors d (r) and b (out) per module."""

from dataclasses import dataclass

from harness.methods import register
from harness.methods.base import BUDGET_RANKS, ApplyContext, Knob, MethodConfig, check_dropout, check_rank
from harness.methods.lora import rank_and_targets
from harness.methods.peft_base import PeftMethod
from harness.methods.targets import check_rank_fits


# VeRA's rank may exceed a layer's width (check_against_model): the paper runs r=1024 on 768 wide layers.
VERA_BUDGET_RANKS = BUDGET_RANKS + (384, 512, 768, 1024)


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
    display_knobs = (Knob("r", "r{}"), Knob("target_modules"), Knob("dropout", "drop{:g}", quiet=True))

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        """d (r) and b (out) per target; the shared random projections are frozen."""
        return sum(mcfg.r + out for _, out in dims.targets(mcfg.target_modules).values())

    @classmethod
    def budget_candidates(cls, mcfg, dims):
        """Rank (the r trained entries of d per module) and target preset, which sets how many
        output vectors b train: sum(out) is the count's floor at any rank."""
        return rank_and_targets(mcfg, ranks=VERA_BUDGET_RANKS)

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        check_rank("r", mcfg.r)
        check_dropout(mcfg.dropout)

    @classmethod
    def check_against_model(cls, mcfg, model) -> None:
        """VeRA's update is sum_k d_k b_k a_k^T over r fixed random rank-1 matrices, so r above a
        layer's width still adds directions (the paper runs r=1024 on RoBERTa-base's 768) up to
        in x out, beyond which the scaling vector d is redundant."""
        check_rank_fits("r", mcfg.r, model, mcfg.target_modules, product=True)

    def peft_config(self, targets, ctx: ApplyContext):
        from peft import VeraConfig
        c = self.cfg
        return VeraConfig(r=c.r, vera_dropout=c.dropout, d_initial=c.d_initial,
                          projection_prng_key=c.projection_prng_key, save_projection=True,
                          target_modules=targets, **self.head_kwargs(ctx))
