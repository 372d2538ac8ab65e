"""LoRA+ (Hayou et al. 2024): LoRA whose B matrices train at `loraplus_lr_ratio` x the LR of A,
through the optimizer's per-parameter LR hook (`lr_scale`). Unlike peft's
create_loraplus_optimizer, which also puts every 1-D parameter (the classifier's bias included)
in B's group, only the B matrices get the ratio: the head trains at the run's LR, as under every
other method."""

from dataclasses import dataclass

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.base import Knob
from harness.methods.lora import LORA_KNOBS, Lora, LoraMethodConfig, check_lora_knobs


@dataclass
class LoraPlusConfig(LoraMethodConfig):
    loraplus_lr_ratio: float = 16.0  # the paper's recommended 2^4


@register
class LoraPlus(Lora):
    kind = "loraplus"
    config_class = LoraPlusConfig
    display_knobs = LORA_KNOBS + (Knob("loraplus_lr_ratio", "B{:g}x"),)

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        check_lora_knobs(mcfg)
        if mcfg.loraplus_lr_ratio <= 0:
            raise HarnessError(f"method.loraplus_lr_ratio must be > 0 (got {mcfg.loraplus_lr_ratio})")

    def lr_scale(self, name: str) -> float:
        return self.cfg.loraplus_lr_ratio if ".lora_B." in name else 1.0
