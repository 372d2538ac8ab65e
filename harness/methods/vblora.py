"""VB-LoRA through peft's bridge: every LoRA A and B is composed of length-l sub-vectors, each a
top-k mixture of one vector bank (num_vectors x l) shared by all layers; the mixture logits
(r x num_vectors per sub-vector) and the bank train. l must divide every adapted layer's in and out
width: left null it is the largest divisor of their gcd up to 256 (peft's default length), chosen
from the model and recorded. Bank and logits start at random, so outputs change at init.
peft's VB-LoRA example trains the logits at 10x the bank's LR (1e-2 vs 1e-3): `logits_lr_ratio`,
through the optimizer's per-parameter LR hook."""

from dataclasses import dataclass
from typing import Optional

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.base import Knob, MethodConfig, check_dropout, check_rank
from harness.methods.peft_bridge import PeftBridge, check_divides, shared_width

LONGEST = 256  # peft's default vector length


@dataclass
class VBLoRAMethodConfig(MethodConfig):
    r: int = 4
    num_vectors: int = 256
    vector_length: Optional[int] = None  # None: chosen from the model (see above)
    topk: int = 2
    vblora_dropout: float = 0.0
    logits_lr_ratio: float = 10.0  # the logits' LR over the run's (the bank's)
    target_modules: str = "all_linear"


@register
class VBLoRA(PeftBridge):
    kind = "vblora"
    config_class = VBLoRAMethodConfig
    peft_config_name = "VBLoRAConfig"
    harness_knobs = ("logits_lr_ratio",)
    display_knobs = (Knob("r", "r{}"), Knob("num_vectors", "v{}"), Knob("vector_length", "l{}"),
                     Knob("topk", "k{}"), Knob("target_modules"))
    identity_at_init = False

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        """The bank once, and logits of r x num_vectors per sub-vector of every A and B."""
        length = cls.knob_on(mcfg, dims, "vector_length")
        widths = sum(i + o for i, o in dims.targets(mcfg.target_modules).values())
        logits = mcfg.r * mcfg.num_vectors * widths // length  # every width is a multiple of length
        return mcfg.num_vectors * length + logits

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        check_rank("r", mcfg.r)
        check_dropout(mcfg.vblora_dropout)
        if not 1 <= mcfg.topk <= mcfg.num_vectors or mcfg.logits_lr_ratio <= 0:
            raise HarnessError(f"method.topk must be in 1..num_vectors={mcfg.num_vectors} (got {mcfg.topk})"
                               f" and method.logits_lr_ratio > 0 (got {mcfg.logits_lr_ratio})")

    @classmethod
    def fit_to_model(cls, mcfg, dims):
        shared = shared_width(dims, mcfg.target_modules)
        if mcfg.vector_length is None:
            length = max(d for d in range(1, min(shared, LONGEST) + 1) if shared % d == 0)
            return {"vector_length": (length, f"largest divisor up to {LONGEST} of the gcd ({shared}) of the"
                                      " adapted layers' in and out widths")}
        check_divides("vector_length", mcfg.vector_length, shared)
        return {}

    def lr_scale(self, name: str) -> float:
        return self.cfg.logits_lr_ratio if ".vblora_logits_" in name else 1.0
