"""Full fine-tuning: every base weight trains (head modules follow the shared head policy)."""

from harness.methods import register
from harness.methods.base import ApplyContext, Method


@register
class FullFT(Method):
    kind = "fullft"
    is_full_finetuning = True

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        return sum(dims.body().values())  # every parameter outside the head

    @classmethod
    def trains_base_parameter(cls, name: str) -> bool:
        return True

    def apply(self, model, ctx: ApplyContext):
        for p in model.parameters():
            p.requires_grad_(True)
        for name in ctx.head_frozen:
            model.get_submodule(name).requires_grad_(False)
        return model
