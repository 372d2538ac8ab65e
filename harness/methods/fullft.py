"""Full fine-tuning: every base weight trains (head modules follow the shared head policy)."""

from harness.methods import register
from harness.methods.base import ApplyContext, Method


@register
class FullFT(Method):
    kind = "fullft"

    def apply(self, model, ctx: ApplyContext):
        for p in model.parameters():
            p.requires_grad_(True)
        for name in ctx.head_frozen:
            model.get_submodule(name).requires_grad_(False)
        return model
