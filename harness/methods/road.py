"""RoAd through peft's bridge: each adapted layer's output is rotated and scaled in 2-D, element i
paired with element i + group_size/2 of its group, by a trained angle θ and scale α per pair
(road_1), per element (road_2) or two per element (road_4): out/2, out or 2·out of each. θ = 0 and
α = 1 at init. group_size must divide every adapted layer's output width; left null it is the
largest even divisor of their gcd up to 64 (peft's default), chosen from the model and recorded."""

from dataclasses import dataclass
from math import gcd
from typing import Optional

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.base import Knob, MethodConfig
from harness.methods.peft_bridge import PeftBridge

PER_OUTPUT = {"road_1": 0.5, "road_2": 1, "road_4": 2}  # θ (and as many α) per output feature
WIDEST = 64  # peft's default group size


@dataclass
class RoadMethodConfig(MethodConfig):
    variant: str = "road_1"
    group_size: Optional[int] = None  # None: chosen from the model (see above)
    target_modules: str = "all_linear"


@register
class Road(PeftBridge):
    kind = "road"
    config_class = RoadMethodConfig
    peft_config_name = "RoadConfig"
    display_knobs = (Knob("variant"), Knob("group_size", "g{}"), Knob("target_modules"))

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        return sum(int(2 * PER_OUTPUT[mcfg.variant] * o) for _, o in dims.targets(mcfg.target_modules).values())

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        if mcfg.variant not in PER_OUTPUT:
            raise HarnessError(f"method.variant must be one of {sorted(PER_OUTPUT)} (got '{mcfg.variant}')")

    @classmethod
    def fit_to_model(cls, mcfg, dims):
        shared = gcd(*(o for _, o in dims.targets(mcfg.target_modules).values()))
        if mcfg.group_size is None:
            size = max((d for d in range(2, min(shared, WIDEST) + 1, 2) if shared % d == 0), default=None)
            if size is None:
                raise HarnessError(f"road: the adapted layers' output widths share no even divisor (gcd {shared})")
            return {"group_size": (size, f"largest even divisor up to {WIDEST} of the gcd ({shared}) of the"
                                   " adapted layers' output widths")}
        if mcfg.group_size < 2 or mcfg.group_size % 2 or shared % mcfg.group_size:
            raise HarnessError(f"method.group_size={mcfg.group_size} must be even and divide the output width of"
                               f" every adapted layer (gcd {shared} on this model), or null to choose one")
        return {}
