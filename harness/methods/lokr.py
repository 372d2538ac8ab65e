"""LoKr through peft's bridge: ΔW = W1 ⊗ W2, a Kronecker product of a small full matrix W1
(a x c) and W2 (b x d), with out = a·b and in = c·d split as close to their square roots as they
divide; W2 is itself factorised at rank r when r < max(b, d) / 2 (W1 too with decompose_both).
W2 starts at 0, so the update does too."""

from dataclasses import dataclass
from math import isqrt
from typing import Tuple

from harness.methods import register
from harness.methods.base import Knob, MethodConfig, check_dropout, check_rank
from harness.methods.peft_bridge import PeftBridge


@dataclass
class LoKrMethodConfig(MethodConfig):
    r: int = 8
    alpha: float = 8.0  # scale alpha / r (peft's defaults)
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    decompose_both: bool = False  # factorise W1 at rank r too
    target_modules: str = "all_linear"


def split(n: int) -> Tuple[int, int]:
    """n = m x (n // m) with m the largest divisor of n up to sqrt(n) (peft's factorization, factor -1)."""
    m = max(d for d in range(1, isqrt(n) + 1) if n % d == 0)
    return m, n // m


def kron_count(r: int, in_features: int, out_features: int, decompose_both: bool) -> int:
    (a, b), (c, d) = split(out_features), split(in_features)
    w1 = r * (a + c) if decompose_both and r < max(a, c) / 2 else a * c
    w2 = r * (b + d) if r < max(b, d) / 2 else b * d
    return w1 + w2


@register
class LoKr(PeftBridge):
    kind = "lokr"
    config_class = LoKrMethodConfig
    peft_config_name = "LoKrConfig"
    display_knobs = (Knob("r", "r{}"), Knob("alpha", "a{:g}"), Knob("target_modules"),
                     Knob("decompose_both", "both", quiet=True))

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        return sum(kron_count(mcfg.r, i, o, mcfg.decompose_both) for i, o in dims.targets(mcfg.target_modules).values())

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        check_rank("r", mcfg.r)
        check_dropout(mcfg.rank_dropout)
        check_dropout(mcfg.module_dropout)
