"""The Method protocol: what a PEFT method does to the model, plus optional hooks.

The training loop calls these hooks and never names a method; analysis, knob labels and the
contract tests ask a method's declarations (below) instead of its name. A new method is one file in
harness/methods/ that subclasses `Method` (with its config schema) and registers itself (the
package discovers it), plus one YAML in conf/method/. Method modules import torch/peft inside
functions so that config validation stays fast.
"""

from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from omegaconf import MISSING


@dataclass
class MethodConfig:
    kind: str = MISSING  # implementation key in METHODS
    label: str = MISSING  # name shown in tables (config-only variants differ here)
    lr_multiplier: float = 1.0  # lr = train.base_lr * lr_multiplier ...
    lr: Optional[float] = None  # ... unless an absolute lr is given
    # The adapter-parameter budget this configuration was matched to (set by a budget-matched
    # sweep, harness.budget). A label: it changes nothing that trains, so it is no part of the
    # run's identity (harness.results.NON_SEMANTIC) and None everywhere else.
    budget: Optional[int] = None


@dataclass
class ApplyContext:
    """What a method may need to know about the model and the run."""
    model_type: str  # transformers config.model_type
    arch: str  # encoder | decoder
    head_train: List[str]  # head modules that must train (train.head policy)
    head_frozen: List[str]  # head modules that must stay frozen
    total_steps: int  # optimizer steps of the whole run (AdaLoRA-style schedules)
    seed: int


# Ranks a budget solver may try (harness.budget): powers of two from 1 to 256 and a few in between,
# so that a budget lands within a few percent of some rank whatever the layer widths.
BUDGET_RANKS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)

# What a method's budget count counts (Method.budget_counts), as the plan prints it.
BUDGET_COUNTS = {
    "trainable": "trainable adapter parameters (head apart)",
    "nonzero": "non-zero adapter entries after training",
    "final": "adapter parameters at the final rank budget",
}


def knob_grid(*axes: Tuple[str, Sequence[Any]]) -> Iterator[Dict[str, Any]]:
    """Every combination of (knob, values) axes as knob overrides, the first axis outermost, so a
    method lists its preferred values first (on equal counts the budget solver keeps the first)."""
    if not axes:
        yield {}
        return
    (name, values), rest = axes[0], axes[1:]
    for value in values:
        for tail in knob_grid(*rest):
            yield {name: value, **tail}


def preferred_first(preset_value, values: Sequence[Any]) -> Tuple[Any, ...]:
    """`values` with the preset's own value moved to the front (it wins a tie)."""
    return (preset_value, *(v for v in values if v != preset_value))


@dataclass(frozen=True)
class Knob:
    """One part of a configuration's knob label (tables, W&B run names): `fmt` filled with the
    values of `names`, shown when every one of them is in the config. A `quiet` knob is a switch
    that is off in almost every run: shown only when it differs from the preset's value (the YAML
    named by the label), so that naming it everywhere does not bury the rank."""
    names: Union[str, Tuple[str, ...]]
    fmt: str = "{}"
    quiet: bool = False

    @property
    def keys(self) -> Tuple[str, ...]:
        return (self.names,) if isinstance(self.names, str) else tuple(self.names)


class Method:
    kind: str = ""
    version: str = "1"  # bump when the implementation changes results; recorded in every run
    config_class = MethodConfig
    rank_interval: Optional[int] = None  # also log rank/<module> every N steps (None: at evaluations only)

    # -- declarations: what the rest of the harness asks of a method instead of naming it ------
    display_knobs: Tuple[Knob, ...] = ()  # its knob label, in order ("r8 a16 all_linear")
    is_full_finetuning: bool = False  # trains the whole body: the reference of paired comparisons and LR ratios
    rank_adaptive: bool = False  # per-module ranks change while it trains (rank figures)
    # the kind this method claims to match with fewer (non-zero) parameters: the analysis compares
    # it with that kind's configuration at the nearest non-zero count (harness.analysis.matched)
    matched_counterpart: Optional[str] = None
    rewrites_base_weights: bool = False  # apply() changes frozen base weights (PiSSA/OLoRA residual init)
    data_init: Optional[str] = None  # what `initialise_from_data` computes (EVA, LoRA-GA); None: no such step
    # Until it trains, the adapted model computes exactly the base model's outputs, bit for bit: the
    # adapter adds an exact zero (B = 0, R = I, scales of 1). False: its initialisation changes them,
    # either for real (ReFT's projections, FourierFT's random spectrum) or by float rounding alone
    # (PiSSA, OLoRA, LoRA-GA: W is split into a residual plus a non-zero B0·A0 and summed again).
    # The contract tests hold every method to its word either way.
    identity_at_init: bool = True
    source_run_kind: Optional[str] = None  # kind of the finished run it continues (method.source_run)
    library: str = "harness"  # who builds the adapter; its count stands where there is no closed form

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> Optional[int]:
        """Trainable adapter parameters (outside the head) this config gives on a model of `dims`
        (harness.methods.dims.ModelDims), from shapes alone, never by building the adapter; the
        contract tests hold every method to it. None: the method has no closed form (its library's
        count is then the reference). Every method must say which."""
        raise NotImplementedError(f"method '{cls.kind}' declares no adapter_param_count")

    # -- budget matching (harness.budget): the solver asks these, never a method's name ----------
    budget_counts: str = "trainable"  # what budget_count counts: a key of BUDGET_COUNTS
    lr_knob: str = "lr_multiplier"  # the knob a sweep's LR axis moves (${lr_grid:<method>,...,<knob>})

    @classmethod
    def budget_candidates(cls, mcfg, dims) -> Iterable[Dict[str, Any]]:
        """Knob overrides a budget solver may choose among for this preset (`mcfg`) on a model of
        `dims`, preferred first; the solver drops those the model refuses (check_against_model).
        Default: the preset as it is, one fixed count (BitFit, FullFT, LN tuning)."""
        yield {}

    @classmethod
    def budget_count(cls, mcfg, dims) -> Optional[int]:
        """The count a budget is matched on (what `budget_counts` names). Default: the trainable
        adapter count, adapter_param_count. None: no closed form, so it cannot be matched."""
        return cls.adapter_param_count(mcfg, dims)

    @classmethod
    def planned_adapter_count(cls, mcfg, dims) -> Optional[int]:
        """adapter_param_count as a plan predicts it, before anything ran: the same, unless the
        count depends on a run that does not exist yet (LoRI-S: its source run's r and targets)."""
        return cls.adapter_param_count(mcfg, dims)

    @classmethod
    def budget_source(cls, chosen: List[Dict[str, Any]]) -> Optional[Tuple[str, Dict[str, Any]]]:
        """For a method that continues a finished run (`source_run_kind`): the preset and knob
        overrides of the run a budget-matched sweep launches first so that the `chosen` knob
        settings can continue it. None (the default): it cannot be budget-matched in a sweep."""
        return None

    @classmethod
    def trains_base_parameter(cls, name: str) -> bool:
        """Does this method train the base model's parameter `name` (outside the head)? Default: no."""
        return False

    @classmethod
    def in_lora_lr_ratio(cls, method: dict) -> bool:
        """Is this configuration (a record's method dict) plain LoRA for the LoRA/FullFT optimal-LR ratio?"""
        return False

    def __init__(self, cfg):
        self.cfg = cfg
        self.inferred: Dict[str, Any] = {}  # settings this method chose; printed and recorded

    # -- checks before anything is built ------------------------------------------------------
    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        """Raise HarnessError for impossible settings (rank 0, ...)."""

    @classmethod
    def resolve_lr(cls, mcfg, default_lr: float, default_reason: str):
        """(lr, reason). Default: the shared rule (absolute method.lr, or base_lr x multiplier)."""
        return default_lr, default_reason

    @classmethod
    def identity_view(cls, method: dict) -> dict:
        """The method's part of config_id (shared lr/lr_multiplier already removed): drop knobs
        that are learning rates and replace per-run paths by what they stand for. Default: as is."""
        return method

    @classmethod
    def check_against_model(cls, mcfg, model) -> None:
        """Raise HarnessError (naming the knob and its allowed range) when a knob does not fit the
        model. Called before anything is trained, also for every job of a sweep before the first
        starts. `model` (harness.preflight.ModelInfo) has the model's `name`, transformers `config`,
        `hidden_size`, `num_layers`, `head` module names and `meta`: the model with its head on
        the meta device (every module and shape, no weights). Default: nothing to check."""

    @classmethod
    def min_max_length(cls, mcfg) -> int:
        """Smallest task.max_length the method can work with (ReFT positions need room)."""
        return 1

    # -- the one required step -----------------------------------------------------------------
    def apply(self, model, ctx: ApplyContext):
        """Wrap/modify the model, set requires_grad; return the model to train."""
        raise NotImplementedError

    # -- optional hooks (no-ops by default) ----------------------------------------------------
    def initialise_from_data(self, model, batches) -> None:
        """For a method that declares `data_init`: initialise the applied adapter from training
        batches (an endless iterator over the run's own training order, on the run's device; take
        what you need). Called once, after apply() and before the optimizer exists. A run whose
        call changes no trainable parameter is flagged `data_init_did_nothing`."""

    def lr_scale(self, name: str) -> float:
        """The run's LR times this for trainable parameter `name` (LoRA+: its B matrices).
        Default 1: one LR for every parameter."""
        return 1.0

    def on_optimizer_step(self, step: int, model) -> None:
        """After optimizer.step(), before zero_grad(): gradients are still there."""

    def rank_snapshot(self, model) -> Dict[str, int]:
        """Per-module rank now ({} for methods without a rank)."""
        return {}

    def rank_budget(self, model, step: int) -> Optional[int]:
        """Total rank budget the method's schedule allows at this step (None: no schedule)."""
        return None

    def param_report(self, model) -> Dict[str, int]:
        """Method-specific counts to add to the shared report (e.g. logical `nonzero`); {} = defaults."""
        return {}

    def on_train_end(self, model, run_dir) -> Dict[str, Any]:
        """After the last step: export what later stages need; return facts for the record
        (a 'flags' list there is lifted into the record's flags)."""
        return {}

    def state_dict(self, model) -> Dict[str, Any]:
        """Method state outside the model's parameters and buffers that a resumed run needs
        (AdaLoRA: importance scores, rank pattern); saved in every checkpoint."""
        return {}

    def load_state_dict(self, model, state: Dict[str, Any]) -> None:
        """Restore what state_dict() returned, into a freshly applied model."""

    # -- the artifact: what a user keeps after training ----------------------------------------
    def save(self, model, directory) -> None:
        """Default: every trainable tensor, by name, in trainable.safetensors."""
        from pathlib import Path

        from safetensors.torch import save_file
        state = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
        save_file(state, str(Path(directory) / "trainable.safetensors"))

    def load(self, base_model, directory, ctx: ApplyContext):
        """Rebuild the trained model from a fresh base model and a saved artifact."""
        from pathlib import Path

        from safetensors.torch import load_file
        model = self.apply(base_model, ctx)
        state = load_file(str(Path(directory) / "trainable.safetensors"))
        missing = set(state) - {n for n, _ in model.named_parameters()}
        if missing:
            raise ValueError(f"saved tensors not in the model: {sorted(missing)[:3]}")
        model.load_state_dict(state, strict=False)
        return model


def check_rank(name: str, value: int) -> None:
    from harness.errors import HarnessError
    if value < 1:
        raise HarnessError(f"method.{name} must be >= 1 (got {value})")


def check_dropout(value: float) -> None:
    from harness.errors import HarnessError
    if not 0 <= value < 1:
        raise HarnessError(f"method.dropout must be in [0, 1) (got {value})")


def trainable_names(model) -> List[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]

