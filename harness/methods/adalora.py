"""AdaLoRA through peft (get_peft_model), driven by the loop's optimizer-step hook.

- `update_and_allocate(step)` runs in `on_optimizer_step`, i.e. after optimizer.step() and before
  zero_grad() (it needs the gradients), with the optimizer-step count 1..total_steps (never
  micro-batches), so the final masking at step total - tfinal is always reached.
- `total_step` is the run's real number of optimizer steps (ApplyContext.total_steps), never typed.
- The budget schedule (tinit, tfinal, deltaT) is a fraction of the run by default, so it fits every
  budget a sweep chooses; absolute steps override a fraction when set. Resolved values are recorded.
- Live ranks come from peft_config[...].rank_pattern (None until the first masking step), not from
  `ranknum`, which never changes. A run whose ranks never moved is flagged.
- peft returns CE + orth_reg_weight * regulariser as the loss; the loop logs the task loss apart.
"""

import re
from dataclasses import dataclass
from typing import Dict, Optional

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.base import ApplyContext, Knob, MethodConfig, check_dropout, check_rank
from harness.methods.peft_base import PeftMethod
from harness.methods.lora import rank_and_targets
from harness.methods.targets import check_rank_fits

_E_SUFFIX = re.compile(r"\.lora_E(\.default)?$")


@dataclass
class AdaLoraMethodConfig(MethodConfig):
    init_r: int = 12
    target_r: int = 8  # average final rank per module
    alpha: float = 16.0
    dropout: float = 0.0
    # Schedule as fractions of the run's optimizer steps (fit any budget) ...
    tinit_fraction: float = 0.1  # at full budget before pruning starts
    tfinal_fraction: float = 0.3  # at the final budget at the end
    deltaT_fraction: float = 0.05  # between budget reallocations
    # ... or in absolute steps, which override the fraction when set.
    tinit: Optional[int] = None
    tfinal: Optional[int] = None
    deltaT: Optional[int] = None
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.5
    target_modules: str = "all_linear"


def schedule(mcfg, total: int) -> Dict[str, int]:
    """{tinit, tfinal, deltaT} in optimizer steps of a run of `total` steps."""
    def steps(name: str, minimum: int) -> int:
        absolute = getattr(mcfg, name)
        if absolute is not None:
            return int(absolute)
        return max(minimum, int(round(total * getattr(mcfg, f"{name}_fraction"))))
    return {"tinit": steps("tinit", 0), "tfinal": steps("tfinal", 0), "deltaT": steps("deltaT", 1)}


def check_schedule(mcfg, total: int) -> Dict[str, int]:
    s = schedule(mcfg, total)
    if s["tinit"] >= total - s["tfinal"]:
        raise HarnessError(f"AdaLoRA schedule leaves no budgeting phase: tinit={s['tinit']} >= total steps"
                           f" {total} - tfinal={s['tfinal']}")
    return s


@register
class AdaLora(PeftMethod):
    kind = "adalora"
    config_class = AdaLoraMethodConfig
    rank_adaptive = True
    matched_counterpart = "lora"  # SVD-shaped LoRA with pruned ranks: does the allocation beat uniform ranks?
    display_knobs = (Knob(("init_r", "target_r"), "r{}->{}"), Knob("alpha", "a{:g}"), Knob("target_modules"),
                     Knob("dropout", "drop{:g}", quiet=True))

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        """P (init_r x in), Q (out x init_r) and E (init_r) per target, all trainable from the start
        (pruning masks E; it never removes parameters)."""
        return sum(mcfg.init_r * (i + o + 1) for i, o in dims.targets(mcfg.target_modules).values())

    # Matched on the final budget (target_r per module on average): what it keeps after pruning;
    # it trains at init_r, which adapter_param_count counts and every record reports as `adapter`.
    budget_counts = "final"

    @classmethod
    def budget_count(cls, mcfg, dims) -> int:
        """target_r x (in + out + 1) per target: the final total rank (target_r x modules, peft's
        target_rank) priced at the average module. Where the pruning puts that rank is learnt, so
        the count a run ends with (its `nonzero`) differs by how uneven the modules' widths are."""
        return sum(mcfg.target_r * (i + o + 1) for i, o in dims.targets(mcfg.target_modules).values())

    @classmethod
    def budget_candidates(cls, mcfg, dims):
        """Target rank 1..init_r (init_r, the count it trains at, stays the preset's) and target preset."""
        return rank_and_targets(mcfg, ranks=range(1, mcfg.init_r + 1), rank_knob="target_r")

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        check_rank("init_r", mcfg.init_r)
        check_rank("target_r", mcfg.target_r)
        check_dropout(mcfg.dropout)
        if mcfg.target_r > mcfg.init_r:
            raise HarnessError(f"method.target_r={mcfg.target_r} exceeds method.init_r={mcfg.init_r}")
        if any(v is not None and v < 0 for v in (mcfg.tinit, mcfg.tfinal)) or (
                mcfg.deltaT is not None and mcfg.deltaT < 1):
            raise HarnessError("method.tinit and method.tfinal must be >= 0 and method.deltaT >= 1")
        for name in ("tinit_fraction", "tfinal_fraction", "deltaT_fraction"):
            if not 0 <= getattr(mcfg, name) < 1:
                raise HarnessError(f"method.{name} must be in [0, 1) (got {getattr(mcfg, name)})")
        if mcfg.orth_reg_weight < 0:
            raise HarnessError(f"method.orth_reg_weight must be >= 0 (got {mcfg.orth_reg_weight})")
        if cfg.train.max_steps is not None:
            check_schedule(mcfg, cfg.train.max_steps)

    @classmethod
    def check_against_model(cls, mcfg, model) -> None:
        check_rank_fits("init_r", mcfg.init_r, model, mcfg.target_modules)  # P and Q have init_r orthogonal rows

    def describe(self, model, targets) -> dict:
        c = self.cfg
        return {"lora_scale": c.alpha / c.init_r, "initial_budget": c.init_r * len(targets),
                "final_budget": c.target_r * len(targets)}

    def peft_config(self, targets, ctx: ApplyContext):
        from peft import AdaLoraConfig
        c = self.cfg
        steps = check_schedule(c, ctx.total_steps)
        self.rank_interval = steps["deltaT"]  # log ranks at every reallocation
        self.inferred["total_step"] = ctx.total_steps
        self.inferred["schedule"] = steps
        return AdaLoraConfig(init_r=c.init_r, target_r=c.target_r, lora_alpha=c.alpha, lora_dropout=c.dropout,
                             beta1=c.beta1, beta2=c.beta2, **steps,
                             orth_reg_weight=c.orth_reg_weight, total_step=ctx.total_steps,
                             target_modules=targets, **self.head_kwargs(ctx))

    def on_optimizer_step(self, step: int, model) -> None:
        model.base_model.update_and_allocate(step)

    def state_dict(self, model):
        """The RankAllocator's running importance estimates and the rank pattern fixed at tfinal."""
        alloc = model.base_model.rankallocator
        return {"ipt": dict(alloc.ipt), "exp_avg_ipt": dict(alloc.exp_avg_ipt),
                "exp_avg_unc": dict(alloc.exp_avg_unc),
                "rank_pattern": model.peft_config["default"].rank_pattern}

    def load_state_dict(self, model, state):
        alloc = model.base_model.rankallocator
        device = next(model.parameters()).device  # checkpoints hold the scores on the CPU
        for key in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
            getattr(alloc, key).clear()
            getattr(alloc, key).update({n: t.to(device) for n, t in state[key].items()})
        model.peft_config["default"].rank_pattern = state["rank_pattern"]

    def rank_snapshot(self, model):
        pattern = model.peft_config["default"].rank_pattern
        if pattern is None:  # before the first masking step every module is at init_r
            return {name: self.cfg.init_r for name in self.inferred.get("target_modules", [])}
        return {_E_SUFFIX.sub("", k): int(sum(bool(x) for x in mask)) for k, mask in pattern.items()}

    def rank_budget(self, model, step: int):
        return int(model.base_model.rankallocator.budget_schedule(step)[0])

    def param_report(self, model):
        """Logically non-zero adapter parameters: r_final x (in + out + 1) per module."""
        ranks = self.rank_snapshot(model)
        modules = dict(model.base_model.model.named_modules())
        nonzero = sum(r * (modules[name].in_features + modules[name].out_features + 1)
                      for name, r in ranks.items())
        return {"nonzero": nonzero}

    def on_train_end(self, model, run_dir):
        ranks = self.rank_snapshot(model)
        moved = any(r != self.cfg.init_r for r in ranks.values())
        return {"final_total_rank": sum(ranks.values()), "ranks_moved": moved,
                **({} if moved else {"flags": ["ranks_never_moved"]})}
