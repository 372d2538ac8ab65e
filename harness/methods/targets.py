"""Target-module presets, resolved to explicit module names on the model at hand.

Presets are defined by structure, not by per-architecture name lists, so they mean the same thing
on BERT, RoBERTa, DeBERTa and Llama/Qwen:
  all_linear  every linear layer inside the transformer blocks (attention + MLP); never the
              pooler or the classification head (peft's "all-linear" catches the BERT pooler)
  attention   the attention projections of every block (q, k, v, output)
  mlp         the MLP linears of every block
  mlp_down    the MLP's down projection (in_features > out_features: BERT output.dense, Llama down_proj)
  qv          query and value projections (peft's default for BERT/RoBERTa/Llama)
  kv          key and value projections
Presets combine with '+', e.g. "kv+mlp_down" (IA3's classic targets). Anything else is a regular
expression that must fully match module names.
"""

import re
from typing import Dict, List, Tuple

from harness.errors import HarnessError

_BLOCK = re.compile(r"(^|\.)(layer|layers|h|block|blocks)\.\d+\.")
_ATTENTION = re.compile(r"(^|\.)(attention|attn|self_attn|self_attention)\.")
_QV = re.compile(r"(^|\.)(query|value|q_proj|v_proj|query_proj|value_proj|q|v)$")
_KV = re.compile(r"(^|\.)(key|value|k_proj|v_proj|key_proj|value_proj|k|v)$")

PRESETS = ("all_linear", "attention", "mlp", "mlp_down", "qv", "kv")


def linear_shapes(model) -> Dict[str, Tuple[int, int]]:
    """Every nn.Linear of `model` (a meta-device copy will do), in model order: name -> (in, out).
    Targets are resolved on this map, so closed-form parameter counts can use it without the model."""
    import torch.nn as nn
    return {n: (m.in_features, m.out_features) for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def _preset(linears: Dict[str, Tuple[int, int]], name: str) -> List[str]:
    block = [n for n in linears if _BLOCK.search(n)]
    attention = [n for n in block if _ATTENTION.search(n)]
    mlp = [n for n in block if not _ATTENTION.search(n)]
    return {
        "all_linear": block,
        "attention": attention,
        "mlp": mlp,
        "mlp_down": [n for n in mlp if linears[n][0] > linears[n][1]],
        "qv": [n for n in attention if _QV.search(n)],
        "kv": [n for n in attention if _KV.search(n)],
    }[name]


def select_targets(linears: Dict[str, Tuple[int, int]], spec: str) -> List[str]:
    """Names of `linears` (linear_shapes) selected by preset(s) or a regex, in model order; error if none."""
    parts = spec.split("+")
    if all(p in PRESETS for p in parts):
        chosen = set().union(*(_preset(linears, p) for p in parts))
        names = [n for n in linears if n in chosen]
    else:
        try:
            pattern = re.compile(spec)
        except re.error as e:
            raise HarnessError(f"method.target_modules='{spec}' is neither presets {PRESETS} nor a valid regex ({e})")
        names = [n for n in linears if pattern.fullmatch(n)]
    if not names:
        raise HarnessError(f"method.target_modules='{spec}' matches no linear module of this model")
    return names


def resolve_targets(model, spec: str) -> List[str]:
    """Module names of `model` selected by preset(s) or a regex, in model order; error if none match."""
    return select_targets(linear_shapes(model), spec)


def mlp_down(linears: Dict[str, Tuple[int, int]], names: List[str]) -> List[str]:
    """Those of `names` that are MLP down projections (IA3 scales their input, not output)."""
    down = set(_preset(linears, "mlp_down"))
    return [n for n in names if n in down]


def check_rank_fits(knob: str, value: int, model, spec: str, product: bool = False) -> None:
    """method.<knob> against the adapted layers of `model` (a preflight ModelInfo): a rank above
    min(in, out) of a layer cannot add rank there (with `product`, the bound is in x out: VeRA's
    r scaling vectors span at most in x out directions). The layers are the ones `spec` selects."""
    names = model.targets(spec)
    modules = dict(model.meta.named_modules())
    widths = {n: (modules[n].in_features, modules[n].out_features) for n in names}
    bound = (lambda io: io[0] * io[1]) if product else min
    name = min(widths, key=lambda n: bound(widths[n]))
    limit = bound(widths[name])
    if value > limit:
        i, o = widths[name]
        what = "in x out" if product else "smallest in/out width"
        raise HarnessError(f"method.{knob}={value} exceeds the {what} of the layers it adapts on model"
                           f" '{model.name}' ({limit}: {name} is {i}->{o}); allowed: 1..{limit}")
