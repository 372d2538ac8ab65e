"""LoReFT / NoReFT / DiReFT through adapters: Φ(h) = h + Rᵀ(Wh + b − Rh) on the residual stream after
each selected layer, at the first `prefix_positions` and last `suffix_positions` real tokens.

- Positions come from the attention mask (right or left padding). A sequence shorter than the
  positions is handled as pyreft does: with both prefix and suffix, each side gets at most half of
  the real tokens, and missing positions repeat the last valid one (pyreft's pad_mode="last"), so
  prefix and suffix never edit the same token and no index leaves the sequence. adapters' own
  index computation does neither, so it is replaced here (`_positions`).
- Untied weights create one unit per side even when that side has no positions; such a unit gets
  no gradient, so it is frozen and not counted (adapters' count doubles r=1 MiniLM to 9,228).
- The orthogonal parametrisation (LoReFT) is evaluated in fp32 even under bf16 autocast (adapters'
  unit would compute its Householder product in bf16, and R would drift from orthonormal), once
  per forward pass instead of twice (`_unit_forward`); the products with R run under autocast.
"""

from dataclasses import dataclass

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.base import (BUDGET_RANKS, ApplyContext, Knob, Method, MethodConfig, check_dropout, check_rank,
                                  preferred_first)

VARIANTS = ("loreft", "noreft", "direft")
ADAPTER = "reft"


@dataclass
class ReftMethodConfig(MethodConfig):
    variant: str = "loreft"  # loreft (orthogonal R) | noreft (no orthogonality) | direft (no -Rh, no orth.)
    r: int = 1
    prefix_positions: int = 3
    suffix_positions: int = 0
    layers: str = "all"  # "all" or layer indices separated by ';' (pyreft's -l "0;2;4")
    tied_weights: bool = False
    dropout: float = 0.05


def _layers(spec: str):
    if spec == "all":
        return "all"
    try:
        return [int(x) for x in spec.split(";") if x.strip()]
    except ValueError:
        raise HarnessError(f"method.layers must be 'all' or indices like '0;2;4' (got '{spec}')")


def _positions(lengths, offsets, prefix: int, suffix: int):
    """(prefix_idx [b, prefix], suffix_idx [b, suffix]): token positions per example, given each
    example's number of real tokens and the position of its first one (left padding moves it)."""
    import torch
    if prefix and suffix:
        n_prefix = torch.clamp((lengths + 1) // 2, max=prefix)
        n_suffix = torch.clamp(lengths - n_prefix, max=suffix).clamp(min=1)
    else:
        n_prefix = torch.clamp(lengths, max=prefix)
        n_suffix = torch.clamp(lengths, max=suffix)
    steps_p = torch.arange(prefix, device=lengths.device)
    steps_s = torch.arange(suffix, device=lengths.device)
    pref = offsets[:, None] + torch.minimum(steps_p[None, :], (n_prefix - 1).clamp(min=0)[:, None])
    last = offsets + lengths  # one past the last real token
    suff = (last - n_suffix)[:, None] + torch.minimum(steps_s[None, :], (n_suffix - 1).clamp(min=0)[:, None])
    return pref, suff


def _gather_adapted_states(self, hidden_states):
    """Replacement for adapters' ReftModule._gather_adapted_states using `_positions`.

    adapters puts `seqlens` (real tokens) and `offsets` (first real token) from the attention mask
    into the forward context; indices are computed once per forward pass and shared by all layers."""
    import torch
    from adapters.context import ForwardContext
    context = ForwardContext.get_context()
    bsz, seq_len, dim = hidden_states.shape
    if getattr(context, "harness_reft_positions", None) != (self.prefix_positions, self.suffix_positions):
        device = hidden_states.device
        if getattr(context, "seqlens", None) is not None:
            lengths = context.seqlens.reshape(-1).to(device)
            offsets = context.offsets.reshape(-1).to(device)
        else:
            lengths = torch.full((bsz,), seq_len, device=device)
            offsets = torch.zeros(bsz, dtype=torch.long, device=device)
        pref, suff = _positions(lengths, offsets, self.prefix_positions, self.suffix_positions)
        context.pref_idx = pref[:, :, None].expand(-1, -1, dim)
        context.suff_idx = suff[:, :, None].expand(-1, -1, dim)
        context.harness_reft_positions = (self.prefix_positions, self.suffix_positions)
    prefix = hidden_states.gather(1, context.pref_idx)
    suffix = hidden_states.gather(1, context.suff_idx)
    return [torch.cat([prefix, suffix], dim=1)] if self.tied_weights else [prefix, suffix]


def rotation(unit):
    """R of a ReftUnit, with its parametrisation (orthogonal for LoReFT) evaluated in fp32."""
    import torch
    with torch.autocast(unit.projection.weight.device.type, enabled=False):
        return unit.projection.weight


def _unit_forward(self, x):
    """adapters' ReftUnit.forward, Φ(h) = h + Rᵀ(s(h) − Rh), with R from `rotation`."""
    import torch
    R = rotation(self)
    source = self.non_linearity(self.learned_source(x))
    if self.subtract_projection:
        source = source - torch.nn.functional.linear(x, R)
    return self.dropout(x + torch.matmul(source, R))


def _install_fixes() -> None:
    from adapters.methods import reft as adapters_reft
    adapters_reft.ReftModule._gather_adapted_states = _gather_adapted_states
    adapters_reft.ReftUnit.forward = _unit_forward


@register
class Reft(Method):
    kind = "reft"
    config_class = ReftMethodConfig
    library = "adapters"
    identity_at_init = False  # h + R^T(W h + b - R h) with random R, W, b: outputs change at init
    display_knobs = (Knob("r", "r{}"), Knob(("prefix_positions", "suffix_positions"), "p{}+s{}"),
                     Knob("variant", quiet=True), Knob("layers", "layers={}", quiet=True),
                     Knob("tied_weights", "tied", quiet=True), Knob("dropout", "drop{:g}", quiet=True))

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        """r(2d + 1) per trained unit (R: r x d, W: r x d, b: r) per intervened layer; a side
        without positions has no trained unit (untied weights)."""
        layers = _layers(mcfg.layers)
        n_layers = dims.num_layers if layers == "all" else len(layers)
        units = 1 if mcfg.tied_weights else (mcfg.prefix_positions > 0) + (mcfg.suffix_positions > 0)
        return n_layers * units * mcfg.r * (2 * dims.hidden_size + 1)

    @classmethod
    def budget_candidates(cls, mcfg, dims):
        """Layers (all, every second one, the last), sides (the preset's positions, prefix only, or
        the same number of prefix and suffix positions: with untied weights each side is a unit),
        then rank. How many positions a side edits does not change the count, so it stays the
        preset's; the preset's layers and sides come first and win a tie."""
        n = dims.num_layers
        layers = ("all",) if not n else ("all", ";".join(str(i) for i in range(0, n, 2)), str(n - 1))
        width = max(mcfg.prefix_positions, mcfg.suffix_positions)
        sides = preferred_first((mcfg.prefix_positions, mcfg.suffix_positions), ((width, 0), (width, width)))
        for spec in preferred_first(mcfg.layers, layers):
            for prefix, suffix in sides:
                for r in BUDGET_RANKS:
                    yield {"layers": spec, "prefix_positions": prefix, "suffix_positions": suffix, "r": r}

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        if mcfg.variant not in VARIANTS:
            raise HarnessError(f"method.variant must be one of {VARIANTS} (got '{mcfg.variant}')")
        check_rank("r", mcfg.r)
        if mcfg.prefix_positions < 0 or mcfg.suffix_positions < 0 or mcfg.prefix_positions + mcfg.suffix_positions == 0:
            raise HarnessError("method.prefix_positions and method.suffix_positions must be >= 0 and not both 0")
        check_dropout(mcfg.dropout)
        _layers(mcfg.layers)

    @classmethod
    def check_against_model(cls, mcfg, model) -> None:
        """r is the rank of a subspace of the hidden state (R: r x d); layers must exist
        (adapters silently skips an index the model does not have)."""
        d, n = model.hidden_size, model.num_layers
        if d is not None and mcfg.r > d:
            raise HarnessError(f"method.r={mcfg.r} exceeds the hidden size of model '{model.name}' ({d}):"
                               f" the intervention acts on an r-dimensional subspace of it; allowed: 1..{d}")
        layers = _layers(mcfg.layers)
        if layers == "all" or n is None:
            return
        bad = [i for i in layers if not 0 <= i < n]
        if bad or not layers:
            raise HarnessError(f"method.layers='{mcfg.layers}': model '{model.name}' has {n} layers, so indices"
                               f" must lie in 0..{n - 1}" + (f" (got {bad})" if bad else " (got none)"))

    @classmethod
    def min_max_length(cls, mcfg) -> int:
        return mcfg.prefix_positions + mcfg.suffix_positions

    def _adapter_config(self):
        from adapters import DiReftConfig, LoReftConfig, NoReftConfig
        c = self.cfg
        config_class = {"loreft": LoReftConfig, "noreft": NoReftConfig, "direft": DiReftConfig}[c.variant]
        return config_class(r=c.r, prefix_positions=c.prefix_positions, suffix_positions=c.suffix_positions,
                            layers=_layers(c.layers), tied_weights=c.tied_weights, dropout=c.dropout)

    def apply(self, model, ctx: ApplyContext):
        import adapters
        _install_fixes()
        adapters.init(model)
        model.add_adapter(ADAPTER, config=self._adapter_config())
        model.train_adapter(ADAPTER)  # freezes the backbone, activates the adapter
        for name in ctx.head_train:
            model.get_submodule(name).requires_grad_(True)
        for name in ctx.head_frozen:
            model.get_submodule(name).requires_grad_(False)
        unused = self._unused_units()
        for name, p in model.named_parameters():
            if any(f".refts.{ADAPTER}.units.{u}." in name for u in unused):
                p.requires_grad_(False)  # a side without positions never receives gradient
        n_layers = sum(1 for n, _ in model.named_modules() if n.endswith(f".refts.{ADAPTER}"))
        self.inferred.update(reft_layers=n_layers, frozen_unused_units=unused,
                             positions=f"p{self.cfg.prefix_positions}+s{self.cfg.suffix_positions}")
        return model

    def param_report(self, model):
        """`nonzero` from R itself, not from its stored parametrisation: LoReFT keeps R as
        Householder reflectors whose storage is mostly zero at init (r of r x d entries), which
        would halve the shared count for a fully dense intervention."""
        units = [m for n, m in model.named_modules()
                 if type(m).__name__ == "ReftUnit" and any(p.requires_grad for p in m.parameters())]
        if not units:
            return {}
        nonzero = 0
        for unit in units:
            nonzero += int((rotation(unit).detach() != 0).sum())
            nonzero += sum(int((p.detach() != 0).sum()) for p in unit.learned_source.parameters())
        return {"nonzero": nonzero}

    def _unused_units(self):
        c = self.cfg
        if c.tied_weights:
            return []
        return [i for i, n in enumerate((c.prefix_positions, c.suffix_positions)) if n == 0]
