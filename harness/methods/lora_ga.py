"""LoRA-GA through peft: LoRA whose A and B start from the SVD of the loss gradient of each adapted
weight, averaged over training batches, so the first step moves like full fine-tuning's; W becomes
the residual W - s·B0·A0 (rewrites the base; saved as a plain LoRA on the unmodified base:
lora_residual.py).

peft estimates the gradients in `preprocess_loraga` on a model *before* get_peft_model, and its
layers initialise from them while they are built, silently falling back to a plain LoRA init when
none are attached. Here the adapter exists first (the harness applies every method the same way),
so `initialise_from_data` runs peft's own gradient estimation on the wrapped base layers, with the
adapter disabled (B = 0: the base model's gradient), and then peft's own `lora_ga_init` per layer.
"""

from dataclasses import dataclass
from itertools import islice

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.lora import LoraMethodConfig, check_lora_knobs
from harness.methods.lora_residual import ResidualLora

DIRECTIONS = ("ArBr", "A2rBr", "ArB2r", "random")
SCALES = ("stable", "weight_svd", "gd_scale", "unit")


@dataclass
class LoraGaMethodConfig(LoraMethodConfig):
    direction: str = "ArB2r"  # which gradient singular vectors go to A and to B (peft's recommendation)
    scale: str = "stable"
    stable_gamma: int = 16
    init_batches: int = 8  # training batches whose gradients are averaged


@register
class LoraGa(ResidualLora):
    kind = "lora_ga"
    config_class = LoraGaMethodConfig
    lora_init = "lora_ga"
    data_init = "A, B from the SVD of the loss gradient of each adapted weight over the first init_batches batches"

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        check_lora_knobs(mcfg)
        if mcfg.direction not in DIRECTIONS or mcfg.scale not in SCALES:
            raise HarnessError(f"method.direction must be one of {DIRECTIONS} and method.scale one of {SCALES}"
                               f" (got '{mcfg.direction}', '{mcfg.scale}')")
        if mcfg.use_dora or mcfg.init_batches < 1 or mcfg.stable_gamma < 1:
            raise HarnessError("lora_ga: use_dora is not part of LoRA-GA; method.init_batches and"
                               " method.stable_gamma must be >= 1")

    @classmethod
    def check_against_model(cls, mcfg, model) -> None:
        """A and B take 2r singular directions of each gradient: 2r must fit every adapted layer."""
        from harness.methods.targets import check_rank_fits
        check_rank_fits("r", 2 * mcfg.r, model, mcfg.target_modules)

    def peft_kwargs(self, ctx) -> dict:
        from peft import LoraGAConfig
        c = self.cfg
        return {**super().peft_kwargs(ctx),
                "lora_ga_config": LoraGAConfig(direction=c.direction, scale=c.scale, stable_gamma=c.stable_gamma)}

    def initialise_from_data(self, model, batches) -> None:
        from peft import LoraConfig, preprocess_loraga
        from peft.tuners.lora import LoraLayer
        named = {name: m for name, m in model.base_model.model.named_modules() if isinstance(m, LoraLayer)}
        ga_config = model.peft_config["default"].lora_ga_config
        base_layers = LoraConfig(target_modules=[f"{name}.base_layer" for name in named],
                                 init_lora_weights="lora_ga", lora_ga_config=ga_config)
        steps = list(islice(batches, self.cfg.init_batches))

        def train_step():
            with model.disable_adapter():
                for batch in steps:
                    model(**batch).loss.backward()

        preprocess_loraga(model.base_model.model, base_layers, train_step)
        for layer in named.values():
            layer.lora_ga_init("default", ga_config)
        self.remember_initial(model)
