"""The peft bridge: any peft method, configured from its config class name and keyword arguments.

A method on the bridge is one small file: a config dataclass whose knobs carry peft's keyword
names, the class's `peft_config_name`, its closed form, display knobs and flags, and `fit_to_model`
when a knob must fit the model's widths. The bridge resolves `target_modules` to explicit module
names (peft_base), passes every other knob to peft as it is, fills in the knobs sized from the
model and records them with how they were chosen. Knobs the harness uses itself (kind, label, lr,
lr_multiplier, target_modules, and a method's `harness_knobs`) never reach peft; a method whose
knobs read better under other names (LoRA's alpha: peft's lora_alpha) overrides `peft_kwargs`.
"""

from dataclasses import fields
from math import gcd
from typing import Dict, Tuple

from harness.errors import HarnessError
from harness.methods.base import ApplyContext, MethodConfig
from harness.methods.peft_base import PeftMethod

SHARED_KNOBS = frozenset(f.name for f in fields(MethodConfig)) | {"target_modules"}
Fitted = Dict[str, Tuple[object, str]]  # knob -> (value chosen from the model, how it was chosen)


def _plain(value):
    """OmegaConf lists and dicts as Python ones (peft configs serialise their fields to JSON)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def shared_width(dims, spec: str) -> int:
    """Greatest common divisor of the in and out widths of every layer `spec` adapts: the largest
    block that tiles them all (C3A's block size, VB-LoRA's vector length must divide each)."""
    return gcd(*(w for shape in dims.targets(spec).values() for w in shape))


def check_divides(knob: str, value: int, shared: int) -> None:
    if value < 1 or shared % value:
        raise HarnessError(f"method.{knob}={value} must divide the in and out width of every adapted layer"
                           f" (their greatest common divisor on this model is {shared}); allowed: a divisor of"
                           f" {shared}, or null to choose one from the model")


class PeftBridge(PeftMethod):
    peft_config_name: str = ""  # peft's config class, e.g. "LoHaConfig"
    harness_knobs: Tuple[str, ...] = ()  # knobs the method uses itself, never passed to peft

    @classmethod
    def fit_to_model(cls, mcfg, dims) -> Fitted:
        """Knobs sized from the model (`dims`: harness.methods.dims.ModelDims): {knob: (value, how
        chosen)} for those the config leaves None. Raises HarnessError (naming the knob and what is
        allowed) when a knob does not fit the adapted layers. Default: nothing to fit."""
        return {}

    @classmethod
    def check_against_model(cls, mcfg, model) -> None:
        super().check_against_model(mcfg, model)
        cls.fit_to_model(mcfg, model.dims())

    @classmethod
    def knob_on(cls, mcfg, dims, name: str):
        """method.<name>, or the value fit_to_model chooses for it on this model (closed forms)."""
        fitted = cls.fit_to_model(mcfg, dims)
        return fitted[name][0] if name in fitted else getattr(mcfg, name)

    def peft_kwargs(self, ctx: ApplyContext) -> dict:
        """peft keyword arguments of this config; the bridge adds targets, head and fitted knobs."""
        skip = SHARED_KNOBS | set(self.harness_knobs)
        return {f.name: _plain(getattr(self.cfg, f.name)) for f in fields(self.config_class) if f.name not in skip}

    def apply(self, model, ctx: ApplyContext):
        from harness.methods.dims import ModelDims
        fitted = self.fit_to_model(self.cfg, ModelDims.of(model, ctx.head_train + ctx.head_frozen))
        self._fitted = {knob: value for knob, (value, _) in fitted.items()}
        for knob, (value, how) in fitted.items():
            self.inferred.update({knob: value, f"{knob}_chosen_by": how})
        return super().apply(model, ctx)

    def peft_config(self, targets, ctx: ApplyContext):
        import peft
        kwargs = {**self.peft_kwargs(ctx), **getattr(self, "_fitted", {})}
        return getattr(peft, self.peft_config_name)(target_modules=targets, **kwargs, **self.head_kwargs(ctx))
