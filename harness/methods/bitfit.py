"""BitFit: only the bias terms of the backbone train (the head follows the shared head policy)."""

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.base import ApplyContext, Method
from harness.params import is_head


def _is_bias(name: str) -> bool:
    return name.endswith(".bias")


@register
class BitFit(Method):
    kind = "bitfit"

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        return sum(k for n, k in dims.body().items() if _is_bias(n))

    @classmethod
    def trains_base_parameter(cls, name: str) -> bool:
        return _is_bias(name)

    @classmethod
    def check_against_model(cls, mcfg, model) -> None:
        if not any(_is_bias(n) and not is_head(n, model.head) for n, _ in model.meta.named_parameters()):
            raise HarnessError(f"bitfit: model '{model.name}' has no bias terms outside the head (e.g. Llama)")

    def apply(self, model, ctx: ApplyContext):
        head = ctx.head_train + ctx.head_frozen
        model.requires_grad_(False)
        biases = [n for n, p in model.named_parameters() if _is_bias(n) and not is_head(n, head)]
        if not biases:
            raise HarnessError("bitfit: this model has no bias terms outside the head (e.g. Llama)")
        params = dict(model.named_parameters())
        for n in biases:
            params[n].requires_grad_(True)
        for name in ctx.head_train:
            model.get_submodule(name).requires_grad_(True)
        self.inferred["n_bias_tensors"] = len(biases)
        return model
