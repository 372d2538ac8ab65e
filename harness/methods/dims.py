"""What a closed-form adapter-parameter count needs to know of a model (Method.adapter_param_count).

Read from the model's module tree, so the meta-device copy of harness.preflight will do (no
weights): the transformers config's sizes, the shape of every linear layer (targets are resolved
on these exactly as `apply` resolves them, harness.methods.targets) and the size of every parameter.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from harness.methods.targets import linear_shapes, select_targets


def config_int(config, *names) -> Optional[int]:
    """The first of `names` the transformers config has as an int (BERT, GPT-2 and T5 name them apart)."""
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


@dataclass(frozen=True)
class ModelDims:
    hidden_size: Optional[int]
    intermediate_size: Optional[int]
    num_layers: Optional[int]
    num_heads: Optional[int]
    linears: Dict[str, Tuple[int, int]] = field(repr=False)  # every nn.Linear, model order: (in, out)
    parameters: Dict[str, int] = field(repr=False)  # every parameter, head included: name -> numel
    head: Tuple[str, ...] = ()  # classifier and pooler modules: never adapter parameters

    @classmethod
    def of(cls, model, head: List[str]) -> "ModelDims":
        """From a transformers model (real or on the meta device) and its head module names."""
        config = model.config
        return cls(hidden_size=config_int(config, "hidden_size", "d_model", "n_embd"),
                   intermediate_size=config_int(config, "intermediate_size", "n_inner", "d_ff"),
                   num_layers=config_int(config, "num_hidden_layers", "n_layer", "num_layers"),
                   num_heads=config_int(config, "num_attention_heads", "n_head", "num_heads"),
                   linears=linear_shapes(model),
                   parameters={n: p.numel() for n, p in model.named_parameters()},
                   head=tuple(head))

    def targets(self, spec: str) -> Dict[str, Tuple[int, int]]:
        """{name: (in, out)} of the linears `method.target_modules=spec` adapts."""
        return {n: self.linears[n] for n in select_targets(self.linears, spec)}

    def body(self) -> Dict[str, int]:
        """Parameters outside the head (the ones an adapter count covers), name -> numel."""
        from harness.params import is_head
        return {n: k for n, k in self.parameters.items() if not is_head(n, list(self.head))}
