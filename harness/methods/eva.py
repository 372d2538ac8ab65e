"""EVA (Explained Variance Adaptation) through peft: LoRA whose A starts as the top right-singular
vectors of each adapted layer's inputs, computed on training batches by peft's
`initialize_lora_eva_weights` (the `initialise_from_data` hook, before training); B starts at 0.
With rho > 1 the rank budget (r per layer) is redistributed to the layers whose inputs explain
more variance, so the adapter's size is known only after the data is seen: no closed form, peft's
count stands (the record says `count_source: peft`) and the chosen ranks are recorded.
The harness's labels are one class per sequence, not per token, so peft's label mask (made for
language modelling) is off: every real token of a batch counts.
"""

from dataclasses import dataclass
from itertools import islice
from typing import Dict, Optional

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.base import Knob
from harness.methods.lora import LORA_KNOBS, Lora, LoraMethodConfig, check_lora_knobs, lora_param_count


@dataclass
class EvaMethodConfig(LoraMethodConfig):
    rho: float = 2.0  # a layer may take up to rho x r of the budget; 1: every layer keeps r (peft's default 2)
    tau: float = 0.99  # cosine similarity of successive SVD estimates at which a component has converged
    init_batches: int = 8  # training batches the SVD cycles over until it converges


def lora_ranks(model) -> Dict[str, int]:
    """{adapted module (relative to the base model): its LoRA rank now}."""
    from peft.tuners.lora import LoraLayer
    return {name.removeprefix("base_model.model."): layer.r["default"] for name, layer in model.named_modules()
            if isinstance(layer, LoraLayer) and "default" in layer.r}


@register
class Eva(Lora):
    kind = "eva"
    config_class = EvaMethodConfig
    display_knobs = LORA_KNOBS + (Knob("rho", "rho{:g}"),)
    data_init = "A from the SVD of each adapted layer's inputs over the first init_batches training batches"

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> Optional[int]:
        """r(in + out) per layer only when the ranks stay put (rho = 1); else known after the data."""
        return lora_param_count(mcfg.r, dims, mcfg.target_modules) if mcfg.rho == 1 else None

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        check_lora_knobs(mcfg)
        if mcfg.use_dora:
            raise HarnessError("eva: use_dora is not part of EVA (peft initialises only plain LoRA layers)")
        if mcfg.rho < 1 or not 0 < mcfg.tau <= 1 or mcfg.init_batches < 1:
            raise HarnessError(f"method.rho must be >= 1, method.tau in (0, 1] and method.init_batches >= 1"
                               f" (got {mcfg.rho}, {mcfg.tau}, {mcfg.init_batches})")

    def peft_kwargs(self, ctx) -> dict:
        from peft import EvaConfig
        c = self.cfg
        return {**super().peft_kwargs(ctx), "init_lora_weights": "eva",
                "eva_config": EvaConfig(rho=c.rho, tau=c.tau, use_label_mask=False)}

    def initialise_from_data(self, model, batches) -> None:
        from peft import initialize_lora_eva_weights
        steps = [dict(batch) for batch in islice(batches, self.cfg.init_batches)]  # peft wants plain dicts
        initialize_lora_eva_weights(model, dataloader=steps, show_progress_bar=False)
        ranks = lora_ranks(model)
        self.inferred.update(eva_ranks=ranks, eva_total_rank=sum(ranks.values()))

    def rank_snapshot(self, model):
        return lora_ranks(model)
