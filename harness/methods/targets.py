"""Target-module presets, resolved to explicit module names on the model at hand.

Presets are defined by structure, not by per-architecture name lists, so they mean the same thing
on BERT, RoBERTa, DeBERTa and Llama/Qwen:
  all_linear  every linear layer inside the transformer blocks (attention + MLP); never the
              pooler or the classification head (peft's "all-linear" catches the BERT pooler)
  attention   the attention projections of every block (q, k, v, output)
  mlp         the MLP linears of every block
  qv          query and value projections only (peft's default for BERT/RoBERTa/Llama)
Anything else is a regular expression that must fully match module names.
"""

import re
from typing import List

from harness.errors import HarnessError

_BLOCK = re.compile(r"(^|\.)(layer|layers|h|block|blocks)\.\d+\.")
_ATTENTION = re.compile(r"(^|\.)(attention|attn|self_attn|self_attention)\.")
_QV = re.compile(r"(^|\.)(query|value|q_proj|v_proj|query_proj|value_proj|q|v)$")

PRESETS = ("all_linear", "attention", "mlp", "qv")


def _block_linears(model) -> List[str]:
    import torch.nn as nn
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and _BLOCK.search(n)]


def resolve_targets(model, spec: str) -> List[str]:
    """Module names selected by a preset or a regex; error if none match."""
    if spec in PRESETS:
        names = _block_linears(model)
        if spec == "attention":
            names = [n for n in names if _ATTENTION.search(n)]
        elif spec == "mlp":
            names = [n for n in names if not _ATTENTION.search(n)]
        elif spec == "qv":
            names = [n for n in names if _ATTENTION.search(n) and _QV.search(n)]
    else:
        try:
            pattern = re.compile(spec)
        except re.error as e:
            raise HarnessError(f"target_modules '{spec}' is neither a preset {PRESETS} nor a valid regex ({e})")
        import torch.nn as nn
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and pattern.fullmatch(n)]
    if not names:
        raise HarnessError(f"target_modules '{spec}' matches no linear module of this model")
    return names
