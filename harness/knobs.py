"""The method knobs that tell two configurations of one method apart (tables, W&B run names).

The label is for people, not for grouping: analysis groups by config_id and makes the labels of
one report unique itself (harness.analysis.load.unique_knobs)."""

import dataclasses
import functools
from pathlib import Path

KNOBS = ("variant", "r", "alpha", "target_modules", "prefix_positions", "suffix_positions", "init_r", "target_r",
         "sparsity", "layers", "tied_weights", "rslora", "use_dora", "dropout")
# Knobs shown only when they differ from the method preset's default (or, for an unknown kind, when
# truthy): they are off in almost every run, and naming them everywhere would bury the rank.
SHOWN_IF_NOT_DEFAULT = {"variant": "{}", "layers": "layers={}", "tied_weights": "tied", "rslora": "rslora",
                        "use_dora": "dora", "dropout": "drop{:g}"}
METHOD_PRESETS = Path(__file__).resolve().parent.parent / "conf" / "method"


def knobs(method: dict) -> dict:
    """{knob: value} for the knobs this method config has (LR and seed are axes, not knobs)."""
    return {k: method[k] for k in KNOBS if k in method and method[k] is not None}


@functools.lru_cache(maxsize=None)
def _defaults(kind, label) -> dict:
    """What `method=<label>` gives without overrides: the kind's schema defaults, then its preset
    YAML (lori_d's preset sets dropout 0.05, dora's use_dora). {} for an unknown kind."""
    from harness.methods import METHODS
    if kind not in METHODS:
        return {}
    defaults = {f.name: f.default for f in dataclasses.fields(METHODS.get(kind).config_class)
                if f.default is not dataclasses.MISSING}
    preset = METHOD_PRESETS / f"{label}.yaml"
    if preset.is_file():
        from omegaconf import OmegaConf
        values = OmegaConf.to_container(OmegaConf.load(preset))
        if values.get("kind") == kind:
            defaults.update({k: v for k, v in values.items() if k in SHOWN_IF_NOT_DEFAULT})
    return defaults


def _non_default_parts(method: dict, k: dict) -> list:
    defaults = _defaults(method.get("kind"), method.get("label"))
    parts = []
    for knob, fmt in SHOWN_IF_NOT_DEFAULT.items():
        if knob not in k:
            continue
        value = k[knob]
        off = value == defaults[knob] if knob in defaults else not value
        if not off and value is not False:  # a flag turned off is never worth naming
            parts.append(fmt.format(value))
    return parts


def knob_label(method: dict) -> str:
    """'r8 a16 all_linear', 'r1 p3+s0', 'r12->4 a16', 'r8 a16 all_linear rslora', ... (empty for
    FullFT/BitFit). Alpha is part of it: two LoRA runs that differ only in alpha are different
    configurations."""
    k = knobs(method)
    parts = []
    if "target_r" in k:
        parts.append(f"r{k['init_r']}->{k['target_r']}")
    elif "r" in k:
        parts.append(f"r{k['r']}")
    if "alpha" in k:
        parts.append(f"a{k['alpha']:g}")
    if "prefix_positions" in k:
        parts.append(f"p{k['prefix_positions']}+s{k.get('suffix_positions', 0)}")
    if "target_modules" in k:
        parts.append(str(k["target_modules"]))
    if "sparsity" in k:
        parts.append(f"s{k['sparsity']:g}")
    return " ".join(parts + _non_default_parts(method, k))
