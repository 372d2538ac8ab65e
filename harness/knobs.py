"""The method knobs that tell two configurations of one method apart (tables, W&B run names).

Each method declares its knobs and how they read (`Method.display_knobs`); nothing here names a
method. The label is for people, not for grouping: analysis groups by config_id and makes the
labels of one report unique itself (harness.analysis.load.unique_knobs)."""

import dataclasses
import functools
from pathlib import Path
from typing import Tuple

METHOD_PRESETS = Path(__file__).resolve().parent.parent / "conf" / "method"


def _declared(kind) -> Tuple:
    """The kind's display knobs; none for a kind no longer registered (an old record)."""
    from harness.methods import METHODS
    return METHODS.get(kind).display_knobs if kind in METHODS else ()


def knobs(method: dict) -> dict:
    """{knob: value} for the declared knobs this method config has (LR and seed are axes, not knobs)."""
    return {key: method[key] for knob in _declared(method.get("kind")) for key in knob.keys
            if method.get(key) is not None}


@functools.lru_cache(maxsize=None)
def _preset_values(kind, label) -> dict:
    """What `method=<label>` gives without overrides (its preset as composed: schema defaults, parent
    presets, its own YAML), when the label names a preset of this kind; else the kind's schema
    defaults. lori_d's preset sets dropout 0.05, dora's use_dora."""
    from harness.methods import METHODS
    if kind not in METHODS:
        return {}
    if (METHOD_PRESETS / f"{label}.yaml").is_file():
        from harness.config import method_preset
        values = method_preset(label)
        if values.get("kind") == kind:
            return values
    return {f.name: f.default for f in dataclasses.fields(METHODS.get(kind).config_class)
            if f.default is not dataclasses.MISSING}


def _shown(knob, method: dict, values: tuple) -> bool:
    """A quiet knob shows only when it differs from the preset, and a switch turned off never does."""
    if not knob.quiet:
        return True
    preset = _preset_values(method.get("kind"), method.get("label"))
    if all(k in preset for k in knob.keys):
        off = values == tuple(preset[k] for k in knob.keys)
    else:  # a field without a default: shown when set at all
        off = not any(values)
    return not off and values != (False,)


def knob_label(method: dict) -> str:
    """'r8 a16 all_linear', 'r1 p3+s0', 'r12->4 a16', 'r8 a16 all_linear rslora', ... (empty for
    FullFT/BitFit). Alpha is part of it: two LoRA runs that differ only in alpha are different
    configurations."""
    present = knobs(method)
    parts = []
    for knob in _declared(method.get("kind")):
        if all(k in present for k in knob.keys):
            values = tuple(present[k] for k in knob.keys)
            if _shown(knob, method, values):
                parts.append(knob.fmt.format(*values))
    return " ".join(parts)
