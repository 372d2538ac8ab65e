"""LoRA through peft's bridge (DoRA is the config-only variant `use_dora: true`). Its LoRA-shaped
relatives (PiSSA, OLoRA, LoRA-GA, EVA, LoRA+, LoRI) subclass it and add their initialisation or
optimizer hook to `peft_kwargs`."""

import math
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.base import (BUDGET_RANKS, ApplyContext, Knob, MethodConfig, check_dropout, check_rank,
                                  knob_grid, preferred_first)
from harness.methods.peft_bridge import PeftBridge
from harness.methods.targets import check_rank_fits


@dataclass
class LoraMethodConfig(MethodConfig):
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    rslora: bool = False  # scale alpha/sqrt(r) instead of alpha/r
    use_dora: bool = False  # DoRA: + one trainable magnitude per output feature
    target_modules: str = "all_linear"  # preset(s) joined by '+', or a regex (targets.py)


def check_lora_knobs(mcfg) -> None:
    check_rank("r", mcfg.r)
    check_dropout(mcfg.dropout)
    if mcfg.alpha <= 0:
        raise HarnessError(f"method.alpha must be > 0 (got {mcfg.alpha})")


# The label of every LoRA-shaped config (LoRI-D reuses it): rank, alpha, targets, then rare switches.
LORA_KNOBS = (Knob("r", "r{}"), Knob("alpha", "a{:g}"), Knob("target_modules"), Knob("rslora", "rslora", quiet=True),
              Knob("use_dora", "dora", quiet=True), Knob("dropout", "drop{:g}", quiet=True))


# Target presets a budget solver may move LoRA-shaped methods over (kv adapts as many parameters as qv).
BUDGET_TARGETS = ("all_linear", "attention", "mlp", "mlp_down", "qv")


def rank_and_targets(mcfg, ranks=BUDGET_RANKS, rank_knob: str = "r"):
    """Budget candidates of a rank x target-preset method: the preset's targets first (they win a
    tie), each over `ranks`."""
    return knob_grid(("target_modules", preferred_first(mcfg.target_modules, BUDGET_TARGETS)), (rank_knob, ranks))


def lora_param_count(r: int, dims, target_modules: str, dora: bool = False) -> int:
    """r(in + out) per adapted linear (A: r x in, B: out x r); DoRA adds one magnitude per output."""
    return sum(r * (i + o) + (o if dora else 0) for i, o in dims.targets(target_modules).values())


@register
class Lora(PeftBridge):
    kind = "lora"
    config_class = LoraMethodConfig
    display_knobs = LORA_KNOBS
    peft_config_name = "LoraConfig"

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        return lora_param_count(mcfg.r, dims, mcfg.target_modules, dora=mcfg.use_dora)

    @classmethod
    def budget_candidates(cls, mcfg, dims):
        """Rank and target preset (DoRA, the LoRA inits and LoRI-D inherit it)."""
        return rank_and_targets(mcfg)

    @classmethod
    def in_lora_lr_ratio(cls, method: dict) -> bool:
        """Plain LoRA: not its DoRA variant, and not the methods built on this class (Lora.kind,
        not cls.kind, so that LoRI-D and LoRI-S do not inherit a yes)."""
        return method.get("kind") == Lora.kind and not method.get("use_dora")

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        check_lora_knobs(mcfg)

    @classmethod
    def check_against_model(cls, mcfg, model) -> None:
        check_rank_fits("r", mcfg.r, model, mcfg.target_modules)

    def describe(self, model, targets) -> dict:
        c = self.cfg
        return {"lora_scale": c.alpha / (math.sqrt(c.r) if c.rslora else c.r)}

    def peft_kwargs(self, ctx: ApplyContext) -> dict:
        """LoraConfig keywords of the LoRA knobs, named explicitly: LoRI-S reads them from its
        source run, not from its own config class."""
        c = self.cfg
        return {"r": c.r, "lora_alpha": c.alpha, "lora_dropout": c.dropout, "use_rslora": c.rslora,
                "use_dora": c.use_dora}

    def rank_snapshot(self, model):
        return {name: self.cfg.r for name in self.inferred.get("target_modules", [])}
