"""PiSSA through peft: LoRA whose A and B start as the top-r singular directions of W (scaled so
that s·B0·A0 is W's principal part) and whose base weight becomes the residual W - s·B0·A0
(rewrites the base; saved as a plain LoRA on the unmodified base: lora_residual.py)."""

from dataclasses import dataclass
from typing import Optional

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.base import Knob
from harness.methods.lora import LORA_KNOBS, LoraMethodConfig, check_lora_knobs
from harness.methods.lora_residual import ResidualLora


@dataclass
class PissaConfig(LoraMethodConfig):
    svd_niter: Optional[int] = None  # None: exact SVD; n: peft's fast randomised SVD with n iterations


@register
class Pissa(ResidualLora):
    kind = "pissa"
    config_class = PissaConfig
    display_knobs = LORA_KNOBS + (Knob("svd_niter", "niter{}"),)  # shown when set

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        check_lora_knobs(mcfg)
        if mcfg.svd_niter is not None and mcfg.svd_niter < 1:
            raise HarnessError(f"method.svd_niter must be >= 1 or null for an exact SVD (got {mcfg.svd_niter})")

    @property
    def lora_init(self) -> str:
        return "pissa" if self.cfg.svd_niter is None else f"pissa_niter_{self.cfg.svd_niter}"
