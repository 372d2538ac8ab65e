"""SHiRA through peft's bridge: a sparse ΔW, r(in + out) trained entries per layer (LoRA-r's
count) at random positions drawn from `random_seed` (the run's seed when null, recorded), starting
at 0. The positions are saved with the adapter."""

from dataclasses import dataclass
from typing import Optional

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.base import Knob, MethodConfig, check_rank
from harness.methods.lora import rank_and_targets
from harness.methods.peft_bridge import PeftBridge


@dataclass
class ShiraMethodConfig(MethodConfig):
    r: int = 8  # entries as LoRA r=8 has (peft's 32 overfills small layers)
    random_seed: Optional[int] = None  # seed of the mask; None: train.seed
    target_modules: str = "all_linear"


@register
class Shira(PeftBridge):
    kind = "shira"
    config_class = ShiraMethodConfig
    peft_config_name = "ShiraConfig"
    display_knobs = (Knob("r", "r{}"), Knob("target_modules"))

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        return sum(mcfg.r * (i + o) for i, o in dims.targets(mcfg.target_modules).values())

    @classmethod
    def budget_candidates(cls, mcfg, dims):
        """Rank (entries as LoRA has at that rank) and target preset."""
        return rank_and_targets(mcfg)

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        check_rank("r", mcfg.r)

    @classmethod
    def fit_to_model(cls, mcfg, dims):
        def room(shape):  # the largest r a layer takes: r(in + out) <= in x out
            return shape[0] * shape[1] // (shape[0] + shape[1])
        name, (i, o) = min(dims.targets(mcfg.target_modules).items(), key=lambda t: room(t[1]))
        if mcfg.r * (i + o) > i * o:
            raise HarnessError(f"method.r={mcfg.r} asks for more entries than {name} ({i}->{o}) has;"
                               f" allowed: 1..{room((i, o))}")
        return {}

    def peft_kwargs(self, ctx) -> dict:
        seed = self.cfg.random_seed if self.cfg.random_seed is not None else ctx.seed
        self.inferred["mask_seed"] = seed
        return {**super().peft_kwargs(ctx), "random_seed": seed}
