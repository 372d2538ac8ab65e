"""IA3 through peft: one learned scaling vector per target module (of the input for MLP down projections)."""

from dataclasses import dataclass

from harness.methods import register
from harness.methods.base import ApplyContext, Knob, MethodConfig, knob_grid, preferred_first
from harness.methods.peft_base import PeftMethod
from harness.methods.targets import linear_shapes, mlp_down


# Target sets a budget solver may choose among (IA3 has no rank: the targets are its only size).
BUDGET_TARGETS = ("kv+mlp_down", "kv", "mlp_down", "attention", "mlp", "attention+mlp_down", "all_linear")


@dataclass
class IA3MethodConfig(MethodConfig):
    target_modules: str = "kv+mlp_down"  # IA3's paper targets: keys, values, MLP down projection


@register
class IA3(PeftMethod):
    kind = "ia3"
    config_class = IA3MethodConfig
    display_knobs = (Knob("target_modules"),)

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        """One scaling vector per target: over the input of an MLP down projection, else the output."""
        targets = dims.targets(mcfg.target_modules)
        down = set(mlp_down(dims.linears, list(targets)))
        return sum(i if name in down else o for name, (i, o) in targets.items())

    @classmethod
    def budget_candidates(cls, mcfg, dims):
        return knob_grid(("target_modules", preferred_first(mcfg.target_modules, BUDGET_TARGETS)))

    def describe(self, model, targets) -> dict:
        self._feedforward = mlp_down(linear_shapes(model), targets)
        return {"feedforward_modules": self._feedforward}

    def peft_config(self, targets, ctx: ApplyContext):
        from peft import IA3Config
        return IA3Config(target_modules=targets, feedforward_modules=self._feedforward,
                         **self.head_kwargs(ctx))
