"""FourierFT through peft's bridge: ΔW is the inverse 2-D Fourier transform of a sparse spectrum,
n_frequency trained coefficients at fixed random positions (random_loc_seed) per adapted layer,
times `scaling`. A layer has in x out frequencies: left null, n_frequency is peft's 1000 capped at
the smallest adapted layer's (chosen from the model, recorded); a set value above it is refused.
peft draws the coefficients at random (not 0), so outputs change at init."""

from dataclasses import dataclass
from typing import Optional

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.base import Knob, MethodConfig
from harness.methods.peft_bridge import PeftBridge


DEFAULT = 1000  # peft's n_frequency


@dataclass
class FourierFTMethodConfig(MethodConfig):
    n_frequency: Optional[int] = None  # None: peft's default (the paper's for GLUE), capped by the model
    scaling: float = 150.0  # peft's advice for RoBERTa on GLUE: 100 or 150
    random_loc_seed: int = 777
    target_modules: str = "all_linear"


@register
class FourierFT(PeftBridge):
    kind = "fourierft"
    config_class = FourierFTMethodConfig
    peft_config_name = "FourierFTConfig"
    display_knobs = (Knob("n_frequency", "n{}"), Knob("scaling", "s{:g}"), Knob("target_modules"))
    identity_at_init = False

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        return cls.knob_on(mcfg, dims, "n_frequency") * len(dims.targets(mcfg.target_modules))

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        if mcfg.n_frequency is not None and mcfg.n_frequency < 1:
            raise HarnessError(f"method.n_frequency must be >= 1 or null (got {mcfg.n_frequency})")

    @classmethod
    def fit_to_model(cls, mcfg, dims):
        name, (i, o) = min(dims.targets(mcfg.target_modules).items(), key=lambda t: t[1][0] * t[1][1])
        if mcfg.n_frequency is None:
            return {"n_frequency": (min(DEFAULT, i * o), f"peft's {DEFAULT}, capped at the {i * o} entries of {name}")}
        if mcfg.n_frequency > i * o:
            raise HarnessError(f"method.n_frequency={mcfg.n_frequency} exceeds the entries of the smallest adapted"
                               f" layer ({name} is {i}->{o}: {i * o}); allowed: 1..{i * o}, or null")
        return {}
