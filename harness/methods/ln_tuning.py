"""LN tuning through peft's bridge: a trained copy of every normalisation layer of the body (its
weight and bias, if any); nothing else of the base trains. Its targets are norm layers, not linears:
every module outside the head whose own name reads as a norm (LayerNorm, input_layernorm, norm,
ln_1, ...), chosen from parameter names so that the closed form finds the same ones on the meta model."""

import re
from dataclasses import dataclass
from typing import Dict, List

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.base import MethodConfig
from harness.methods.peft_bridge import PeftBridge

_NORM = re.compile(r"(?i)norm|^ln(_|$)")  # the module's own name, its last component


@dataclass
class LNTuningMethodConfig(MethodConfig):
    pass  # no knobs: the norm layers are the targets


def norm_modules(parameters: Dict[str, int], head: List[str]) -> Dict[str, int]:
    """{norm module outside the head: its parameter count}, in model order."""
    from harness.params import is_head
    modules: Dict[str, int] = {}
    for name, numel in parameters.items():
        module = name.rpartition(".")[0]
        if _NORM.search(module.rpartition(".")[2]) and not is_head(name, head):
            modules[module] = modules.get(module, 0) + numel
    return modules


@register
class LNTuning(PeftBridge):
    kind = "ln_tuning"
    config_class = LNTuningMethodConfig
    peft_config_name = "LNTuningConfig"

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        return sum(norm_modules(dims.parameters, list(dims.head)).values())

    @classmethod
    def check_against_model(cls, mcfg, model) -> None:
        cls.norms_of({n: p.numel() for n, p in model.meta.named_parameters()}, model.head)

    @staticmethod
    def norms_of(parameters: Dict[str, int], head: List[str]) -> List[str]:
        names = list(norm_modules(parameters, head))
        if not names:
            raise HarnessError("ln_tuning: this model has no normalisation layer outside its head")
        return names

    def resolve(self, model):
        return self.norms_of({n: p.numel() for n, p in model.named_parameters()}, self._head)

    def apply(self, model, ctx):
        self._head = ctx.head_train + ctx.head_frozen
        return super().apply(model, ctx)
