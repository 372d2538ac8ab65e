"""Budget matching: for every method, the knob setting whose parameter count is nearest a target
budget, so that methods are compared at (nearly) the same size. Used by the grid sweeper's
`budget_matched` blocks (conf/sweep/budget_matched.yaml; `python -m harness.sweeper budget_matched`
prints the plan).

Every count comes from the closed forms the methods declare, on the model's shapes (the meta-device
copy of harness.preflight, no weights), so the plan is exact before anything runs. This module names
no method: each declares, in its own file (harness/methods/base.py, "budget matching"),
  budget_candidates  the knob overrides it may move, preferred first (a tie keeps the first);
  budget_count       the count a budget is matched on, and `budget_counts` what it counts:
                     trainable (adapter parameters, head apart, the default), nonzero (LoRI-S: the
                     entries its mask keeps) or final (AdaLoRA: its count at the final rank budget);
  budget_source      for a method that continues a finished run (LoRI-S), the run to launch first.
A method that cannot come within the tolerance (relative to the budget) is listed with its nearest
count and left out of the sweep, never run at another size.
"""

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from harness.errors import HarnessError, did_you_mean

DEFAULT_TOLERANCE = 0.25  # |count - budget| / budget allowed
BLOCK_KEYS = ("methods", "budgets", "tolerance", "lr_factors")
METHOD_DIR = Path(__file__).resolve().parent.parent / "conf" / "method"


@dataclass(frozen=True)
class BudgetSpec:
    """A `budget_matched` grid block, checked."""
    methods: Tuple[str, ...]  # presets: conf/method/<name>.yaml
    budgets: Tuple[int, ...]
    tolerance: float = DEFAULT_TOLERANCE
    lr_factors: Optional[Tuple[float, ...]] = None  # multiples of each method's anchor LR; None: the preset's LR


@dataclass(frozen=True)
class Match:
    """One method's nearest knob setting for one budget."""
    budget: int
    method: str  # preset name
    knobs: Dict[str, Any]  # the candidate's knob values (what the plan prints)
    overrides: Dict[str, Any]  # those of `knobs` that differ from the preset (what the job sets)
    count: int  # budget_count: what the budget is matched on
    counts: str  # what `count` counts: trainable | nonzero | final
    adapter: int  # the trainable adapter count the run's record will report (params.adapter)

    @property
    def distance(self) -> float:
        """Relative distance from the budget, signed: +0.1 is 10% over."""
        return (self.count - self.budget) / self.budget


@dataclass(frozen=True)
class Source:
    """A run a method's matched jobs continue (LoRI-S: its lori_d run), launched first."""
    method: str  # preset of the source run
    overrides: Dict[str, Any]
    for_method: str


@dataclass
class BudgetPlan:
    model: str
    spec: BudgetSpec
    within: List[Match] = field(default_factory=list)  # per budget and method, within tolerance
    out_of_reach: List[Match] = field(default_factory=list)  # nearest setting, outside tolerance
    # (budget, method) -> the budget whose job it shares: the same knobs were nearest for both
    shared: Dict[Tuple[int, str], int] = field(default_factory=dict)
    sources: List[Source] = field(default_factory=list)

    def jobs(self) -> List[Match]:
        """The matches to run: one per distinct (method, knobs), at the budget it is nearest."""
        return [m for m in self.within if (m.budget, m.method) not in self.shared]


# ---- the block's values ---------------------------------------------------------------------------

def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _budgets(value) -> Tuple[int, ...]:
    budgets = _as_list(value)
    if not budgets:
        raise HarnessError("budget_matched: budgets is empty; give adapter-parameter counts, e.g. [5000,40000]")
    for b in budgets:
        if not _number(b) or b <= 0 or b != int(b):
            raise HarnessError(f"budget_matched: every budget must be a whole number of adapter parameters > 0"
                               f" (got {b!r} in budgets={budgets})")
    if len(set(budgets)) < len(budgets):
        raise HarnessError(f"budget_matched: a budget is listed twice (budgets={budgets})")
    return tuple(int(b) for b in budgets)


def _methods(value) -> Tuple[str, ...]:
    methods = [str(m) for m in _as_list(value)]
    if not methods:
        raise HarnessError("budget_matched: methods is empty; give method presets, e.g. [lora,loreft]")
    known = sorted(p.stem for p in METHOD_DIR.glob("*.yaml"))
    for name in methods:
        if name not in known:
            raise HarnessError(f"budget_matched: unknown method '{name}' in methods{did_you_mean(name, known)};"
                               f" known: {', '.join(known)}")
    if len(set(methods)) < len(methods):
        raise HarnessError(f"budget_matched: a method is listed twice (methods={methods})")
    return tuple(methods)


def _tolerance(value) -> float:
    if not _number(value) or value <= 0:
        raise HarnessError(f"budget_matched: tolerance must be a number > 0, relative to the budget"
                           f" (0.25: within 25%; got {value!r})")
    return float(value)


def _lr_factors(value) -> Optional[Tuple[float, ...]]:
    if value is None:
        return None
    factors = _as_list(value)
    if not factors or any(not _number(f) or f <= 0 for f in factors):
        raise HarnessError(f"budget_matched: lr_factors must be numbers > 0 (got {factors})")
    return tuple(float(f) for f in factors)


def parse_spec(block) -> BudgetSpec:
    """A `budget_matched: {methods, budgets, tolerance, lr_factors}` block (plain values), checked:
    one HarnessError line naming what is wrong."""
    if not isinstance(block, dict):
        raise HarnessError(f"budget_matched must be a mapping with keys {', '.join(BLOCK_KEYS)} (got {block!r})")
    unknown = sorted(set(block) - set(BLOCK_KEYS))
    if unknown:
        raise HarnessError(f"budget_matched: unknown key(s) {unknown}; valid keys: {', '.join(BLOCK_KEYS)}")
    for key in ("methods", "budgets"):
        if block.get(key) is None:
            raise HarnessError(f"budget_matched: '{key}' is missing")
    return BudgetSpec(methods=_methods(block["methods"]), budgets=_budgets(block["budgets"]),
                      tolerance=_tolerance(block.get("tolerance", DEFAULT_TOLERANCE)),
                      lr_factors=_lr_factors(block.get("lr_factors")))


# ---- the solver ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Option:
    knobs: Dict[str, Any]
    overrides: Dict[str, Any]
    count: int
    adapter: int


def method_class(name: str):
    """The Method class of preset `name`."""
    from harness.config import method_preset
    from harness.methods import METHODS
    return METHODS.get(method_preset(name)["kind"])


def _preset_config(name: str):
    """The preset as its config dataclass (values that are interpolations, such as LoRI-S's
    source_run, need a whole job's config: they keep the dataclass default here)."""
    from harness.config import method_preset
    cls = method_class(name)
    names = {f.name for f in dataclasses.fields(cls.config_class)}
    values = {k: v for k, v in method_preset(name).items()
              if k in names and not (isinstance(v, str) and "${" in v)}
    return cls.config_class(**values)


def options(name: str, info) -> List[_Option]:
    """Every knob setting the method offers for a budget on this model (harness.preflight.ModelInfo),
    with its counts, in the method's order of preference. Settings the model refuses (a rank wider
    than a layer) are left out: the method's check says what fits, the same check every run gets."""
    cls, preset, dims = method_class(name), _preset_config(name), info.dims()
    found, refusal = [], None
    for knobs in cls.budget_candidates(preset, dims):
        mcfg = dataclasses.replace(preset, **knobs)
        try:
            cls.check_against_model(mcfg, info)
        except HarnessError as exc:
            refusal = exc
            continue
        count, adapter = cls.budget_count(mcfg, dims), cls.planned_adapter_count(mcfg, dims)
        if count is None or adapter is None:
            raise HarnessError(f"budget_matched: method '{name}' has no closed-form count in this setting"
                               f" ({_knob_text(knobs) or 'its preset'}), so no budget can be matched to it;"
                               " drop it from methods")
        shown = {k: getattr(mcfg, k) for k in knobs}
        changed = {k: v for k, v in shown.items() if v != getattr(preset, k)}
        found.append(_Option(shown, changed, int(count), int(adapter)))
    if not found:
        raise HarnessError(f"budget_matched: no knob setting of method '{name}' fits model '{info.name}'"
                           f" (the last refused: {refusal})")
    return found


def nearest(found: List[_Option], budget: int) -> _Option:
    """The option whose count is nearest the budget; on a tie, the method's preferred (first) one."""
    return min(found, key=lambda o: abs(o.count - budget))  # min keeps the first of equals


def solve(spec: BudgetSpec, info) -> BudgetPlan:
    """The plan: each method's nearest setting per budget, within tolerance or out of reach."""
    plan = BudgetPlan(model=info.name, spec=spec)
    for name in spec.methods:
        cls = method_class(name)
        _check_source(name, cls, spec)
        found = options(name, info)
        for budget in spec.budgets:
            best = nearest(found, budget)
            match = Match(budget, name, best.knobs, best.overrides, best.count, cls.budget_counts, best.adapter)
            (plan.within if abs(match.distance) <= spec.tolerance else plan.out_of_reach).append(match)
    plan.shared = _shared(plan.within)
    plan.sources = _sources(plan)
    return plan


def _check_source(name: str, cls, spec: BudgetSpec) -> None:
    """A method that continues a finished run can be matched only if it says which run to launch
    first, and only when that run's method is not matched too: the default source_run picks among
    the sweep's runs of that kind, which must then all be the one configuration launched for it."""
    if not cls.source_run_kind:
        return
    source = cls.budget_source([])
    if source is None:
        raise HarnessError(f"budget_matched: method '{name}' continues a finished {cls.source_run_kind} run"
                           " and declares no budget_source, so a sweep cannot launch that run for it")
    clash = [m for m in spec.methods if method_class(m).kind == cls.source_run_kind]
    if clash:
        raise HarnessError(f"budget_matched: '{name}' continues the sweep's {cls.source_run_kind} run, so"
                           f" '{clash[0]}' cannot be budget-matched in the same sweep (its runs at other sizes"
                           " would compete as that source); match it in another sweep")


def _shared(within: List[Match]) -> Dict[Tuple[int, str], int]:
    """Budgets whose nearest setting of a method is the same job as another budget's (budgets
    closer together than the tolerance allows): the job runs once, labelled with the budget it is
    nearest to in relative terms."""
    groups: Dict[tuple, List[Match]] = {}
    for m in within:
        groups.setdefault((m.method, tuple(sorted(m.overrides.items()))), []).append(m)
    shared = {}
    for matches in groups.values():
        keep = min(matches, key=lambda m: abs(m.distance))
        shared.update({(m.budget, m.method): keep.budget for m in matches if m is not keep})
    return shared


def _sources(plan: BudgetPlan) -> List[Source]:
    sources = []
    for name in plan.spec.methods:
        cls = method_class(name)
        chosen = [m.knobs for m in plan.jobs() if m.method == name]
        if cls.source_run_kind and chosen:
            method, overrides = cls.budget_source(chosen)
            sources.append(Source(method, overrides, name))
    return sources


# ---- what the plan says ---------------------------------------------------------------------------

def _knob_text(knobs: Dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in knobs.items())


def _percent(x: float) -> str:
    return f"{100 * x:+.1f}%"


def describe(plan: BudgetPlan) -> str:
    """The plan as printed by `python -m harness.sweeper` and before a budget-matched sweep starts."""
    from harness.methods.base import BUDGET_COUNTS
    spec = plan.spec
    kinds = sorted({m.counts for m in plan.within + plan.out_of_reach})
    width = max(len(m) for m in spec.methods)
    lines = [f"[budget] model {plan.model}: {len(spec.budgets)} budget(s) x {len(spec.methods)} methods,"
             f" each at the knobs whose count is nearest the budget, within {100 * spec.tolerance:g}% of it",
             "[budget] counts: " + "; ".join(f"{k} = {BUDGET_COUNTS[k]}" for k in kinds),
             f"[budget]   {'method'.ljust(width)}  {'counts':9}  {'count':>11}  {'vs budget':>9}  knobs"]
    for budget in spec.budgets:
        lines.append(f"[budget] budget {budget:,}")
        for m in (m for m in plan.within if m.budget == budget):
            same = plan.shared.get((budget, m.method))
            note = f"  (same job as budget {same:,})" if same is not None else ""
            adapter = "" if m.counts == "trainable" else f"  adapter {m.adapter:,}"
            lines.append(f"[budget]   {m.method.ljust(width)}  {m.counts:9}  {m.count:>11,}  {_percent(m.distance):>9}"
                         f"  {_knob_text(m.knobs) or '(fixed)'}{adapter}{note}")
        missed = [m for m in plan.out_of_reach if m.budget == budget]
        if missed:
            lines.append("[budget]   out of reach (nearest count, left out): " + ", ".join(
                f"{m.method} {m.count:,} ({_percent(m.distance)}{', ' + _knob_text(m.knobs) if m.knobs else ''})"
                for m in missed))
    for s in plan.sources:
        lines.append(f"[budget] launched first, not matched: {s.method} {_knob_text(s.overrides)}"
                     f" (the run {s.for_method} continues)")
    return "\n".join(lines)
