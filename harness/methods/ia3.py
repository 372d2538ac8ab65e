"""IA3 through peft: one learned scaling vector per target module (of the input for MLP down projections)."""

from dataclasses import dataclass

from harness.methods import register
from harness.methods.base import ApplyContext, MethodConfig
from harness.methods.peft_base import PeftMethod
from harness.methods.targets import mlp_down


@dataclass
class IA3MethodConfig(MethodConfig):
    target_modules: str = "kv+mlp_down"  # IA3's paper targets: keys, values, MLP down projection


@register
class IA3(PeftMethod):
    kind = "ia3"
    config_class = IA3MethodConfig

    def describe(self, model, targets) -> dict:
        self._feedforward = mlp_down(model, targets)
        return {"feedforward_modules": self._feedforward}

    def peft_config(self, targets, ctx: ApplyContext):
        from peft import IA3Config
        return IA3Config(target_modules=targets, feedforward_modules=self._feedforward,
                         **self.head_kwargs(ctx))
