"""`hydra/sweeper=grid`: Hydra's basic sweeper extended with grid blocks, config checks up front,
a stable identity per job, progress and a summary.

A sweep = the union over `grid` blocks of the cross product of (params ∪ block ∪ command-line
sweeps). Blocks let one sweep hold methods whose knobs differ (FullFT has no rank, LoRA has no
positions); `params` are the axes every block shares (task, seed). Lists in `values` are named
once and interpolated by the axes (`${hydra.sweeper.values.seeds}`). With `staged: true` each
block is launched after the previous one finished (LoRI-S jobs need their LoRI-D runs).

A `budget_matched: {methods, budgets, tolerance, lr_factors}` block is expanded by the budget solver
(harness.budget) on the model composed for the sweep: one job per method and budget, at the knobs
whose parameter count is nearest the budget, labelled `method.budget` (a label outside the run's
identity); methods out of reach are printed and left out. Its other keys are axes as in any block.

Before anything is launched, every job's config is composed and validated: a bad value anywhere in
the grid ends the command with one line and nothing trained. Skipping finished jobs happens in
the job itself (harness.run.run_job), so it works the same under every launcher.
"""

import os
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

from harness import sweep_log
from harness.errors import HarnessError, RunsFailed


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.harness_grid_sweeper.grid_sweeper.GridSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, Any]] = None  # axes crossed with every block
    grid: Optional[List[Dict[str, Any]]] = None  # blocks; jobs = union over blocks
    values: Dict[str, Any] = field(default_factory=dict)  # named value lists the axes interpolate
    staged: bool = False  # launch block after block (later blocks depend on earlier ones)


CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def lr_grid(method: str, factors, knob: str = "lr_multiplier") -> str:
    """`${lr_grid:lora,[0.3,1,3]}` -> "3,10,30": LR multipliers (of the FullFT LR) around a
    method's own anchor, the lr_multiplier of its preset conf/method/<method>.yaml as composed
    (written once: in that YAML, a parent it extends, or the schema's default).
    A method whose LR is relative to something else names its knob: `${lr_grid:lori_s,[1,3],lr_ratio}`."""
    from harness.config import method_preset
    anchor = float(method_preset(method)[knob])
    return ",".join(f"{anchor * float(f):g}" for f in factors)


def register() -> None:
    ConfigStore.instance().store(group="hydra/sweeper", name="grid", node=GridSweeperConf, provider="harness")
    OmegaConf.register_new_resolver("lr_grid", lr_grid, replace=True)


def _axis(key: str, value) -> str:
    """`key=v1,v2` from a YAML list or a sweep string."""
    if isinstance(value, (list, tuple)) or OmegaConf.is_list(value):
        value = ",".join(str(v) for v in value)
    return f"{key}={value}"


def _basic():
    # Imported late: Hydra's plugin scan re-imports its core plugins, so a class object taken
    # earlier would no longer be the one Hydra uses.
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    return BasicSweeper


MAX_DIR_NAME = 120


def _names_the_run(override: str) -> bool:
    """Does this override change what the job computes? Sweep selection, Hydra settings, the
    observation-only groups (logger) and non-semantic settings (threads, progress bars) do not, so
    they stay out of the directory name: rerunning a sweep with `train.num_threads=1` added resumes
    its interrupted jobs in their own directories instead of starting them again elsewhere."""
    from harness.results import NON_SEMANTIC, NOT_IDENTITY
    key = override.lstrip("+~").split("=", 1)[0]
    group, _, leaf = key.partition(".")
    if key == "sweep" or group == "hydra" or group in NOT_IDENTITY:
        return False
    return leaf not in NON_SEMANTIC.get(group, ())


def job_dir_name(overrides: List[str]) -> str:
    """The job's directory in the sweep: the overrides that name the run, sorted (Hydra's
    override_dirname format), so it stays put when the grid grows. Slashes become '_'; a name over
    MAX_DIR_NAME characters is cut and suffixed with a hash of the full name (file systems stop at
    255 bytes)."""
    import hashlib
    items = sorted(o for o in overrides if _names_the_run(o))
    name = ",".join(items).replace("/", "_").replace("'", "") or "default"
    if len(name) > MAX_DIR_NAME:
        name = f"{name[:MAX_DIR_NAME - 17]}-{hashlib.sha1(name.encode()).hexdigest()[:16]}"
    return name


BUDGET_BLOCK = "budget_matched"  # a grid block expanded by the budget solver (harness.budget)
_BARE_VALUE = re.compile(r"[A-Za-z_][A-Za-z0-9_.+\-]*")


def _plain(value):
    """A config node as plain Python values, interpolations resolved."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _override_value(value) -> str:
    """A knob value as Hydra override text: a string that Hydra would read as something else (a
    number, a list, text with ';') is single-quoted (quotes never reach job directory names)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    if isinstance(value, str) and not (_BARE_VALUE.fullmatch(value) and value not in ("true", "false", "null")):
        return f"'{value}'"
    return str(value)


def _method_axes(method: str, overrides: Dict[str, Any], budget: Optional[int], lr_factors) -> List[str]:
    """The axes of one budget-matched method: its preset, its knobs, its budget label and its LR grid
    around its own anchor (the method's LR knob: lr_multiplier, LoRI-S's lr_ratio)."""
    from harness.budget import method_class
    axes = [f"method={method}", *(f"method.{k}={_override_value(v)}" for k, v in overrides.items())]
    if budget is not None:
        axes.append(f"method.budget={budget}")
    if lr_factors is not None:
        knob = method_class(method).lr_knob
        axes.append(f"method.{knob}={lr_grid(method, lr_factors, knob)}")
    return axes


def _refuse_solver_axes(parser, axes: List[str]) -> None:
    """The solver chooses every method knob for one model: an axis that sets a method key would
    override its choice, and one that sweeps the model would change every count."""
    for override in parser.parse_overrides(axes):
        key = override.get_key_element().lstrip("+~")
        if key == "method" or key.startswith("method."):
            raise HarnessError(f"{BUDGET_BLOCK}: '{key}' cannot be set for the whole sweep: the budget solver"
                               " chooses each method's knobs (the rest are its preset's, conf/method/<method>.yaml)")
        if (key == "model" or key.startswith("model.")) and override.is_sweep_override():
            raise HarnessError(f"{BUDGET_BLOCK}: the knobs are solved for one model; run one sweep per model"
                               f" instead of sweeping '{key}'")


class GridSweeper(Sweeper):
    def __init__(self, max_batch_size=None, params=None, grid=None, values=None, staged=False):
        super().__init__()
        self.max_batch_size = max_batch_size
        self.params = dict(params or {})
        self.grid = [dict(block) for block in (grid or [{}])]
        self.staged = staged
        self.hydra_context = self.config = self.launcher = None
        self.budget_plans = []  # harness.budget.BudgetPlan of each budget_matched block, once expanded

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def _parse_config(self) -> List[str]:
        return [_axis(k, v) for k, v in self.params.items()]

    def expand(self, arguments: List[str]) -> List[List[List[str]]]:
        """Jobs (lists of overrides) per block, duplicates across blocks removed. A budget_matched
        block may become two blocks (methods that continue a run launched in the first)."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader if self.hydra_context else None)
        common = self._parse_config()
        seen, blocks = set(), []
        self.budget_plans = []
        for block in self.grid:
            for stage in self._stages(parser, block, common, list(arguments)):
                jobs = []
                for axes in stage:
                    for job in _basic().split_arguments(parser.parse_overrides(axes), None)[0]:
                        if tuple(sorted(job)) not in seen:
                            seen.add(tuple(sorted(job)))
                            jobs.append(job)
                blocks.append(jobs)
        return blocks

    def _stages(self, parser, block, common: List[str], arguments: List[str]) -> List[List[List[str]]]:
        """The block as stages (launched in order when staged), each a list of axis lists."""
        if BUDGET_BLOCK not in block:
            return [[common + [_axis(k, v) for k, v in block.items()] + arguments]]
        return self._budget_stages(parser, block, common, arguments)

    def _budget_stages(self, parser, block, common: List[str], arguments: List[str]) -> List[List[List[str]]]:
        """One axis list per matched (method, knobs), at the budget it is nearest to; a method that
        continues a finished run (LoRI-S) goes in a second stage, after the run it continues."""
        from harness import budget
        from harness.preflight import model_info
        spec = budget.parse_spec(_plain(block[BUDGET_BLOCK]))
        extra = [_axis(k, v) for k, v in block.items() if k != BUDGET_BLOCK]
        _refuse_solver_axes(parser, common + extra + arguments)
        if self.config is None:
            raise HarnessError(f"{BUDGET_BLOCK}: the sweep's composed config is needed to know the model")
        # The sweep's model as composed; its head follows the composed task, but no count includes
        # the head, so a task axis does not change the plan.
        plan = budget.solve(spec, model_info(self.config))
        self.budget_plans.append(plan)
        first, later = [], []
        for match in plan.jobs():
            axes = common + _method_axes(match.method, match.overrides, match.budget, spec.lr_factors) + extra
            (later if budget.method_class(match.method).source_run_kind else first).append(axes + arguments)
        for source in plan.sources:
            first.append(common + _method_axes(source.method, source.overrides, None, spec.lr_factors) + extra + arguments)
        if later and not self.staged:
            raise HarnessError(f"{BUDGET_BLOCK}: {', '.join(sorted({s.for_method for s in plan.sources}))} continues"
                               " a run the sweep launches first: set hydra.sweeper.staged=true")
        return [stage for stage in (first, later) if stage]

    def check(self, blocks: List[List[List[str]]]) -> None:
        """Compose and validate every job before any is launched. In a staged sweep, jobs of later
        blocks may need runs of earlier ones (LoRI-S): they are composed now, validated when they run."""
        from harness.config import validate
        from harness.preflight import preflight
        jobs = [(b, job) for b, block in enumerate(blocks) for job in block]
        for i, (b, overrides) in enumerate(jobs):
            try:
                cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
                if b == 0 or not self.staged:
                    validate(job_cfg)
                preflight(job_cfg, method_checks=b == 0 or not self.staged)  # model, tokenizer, data
            except Exception as exc:
                from harness.cli_errors import describe
                line, _ = describe(exc)
                raise HarnessError(f"sweep job {i} ({' '.join(overrides)}): {line}") from exc

    def sweep(self, arguments: List[str]) -> Any:
        blocks = [[[*job, f"hydra.sweep.subdir='{job_dir_name(job)}'"] for job in block]
                  for block in self.expand(arguments)]
        jobs = [job for block in blocks for job in block]
        from harness.budget import describe as describe_budget
        for budget_plan in self.budget_plans:
            print(describe_budget(budget_plan), flush=True)
        if self.budget_plans and not jobs:
            raise HarnessError(f"{BUDGET_BLOCK}: no method comes within the tolerance of any budget (plan above),"
                               " so there is nothing to run")
        self.check(blocks)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if not (sweep_dir / "multirun.yaml").exists():  # the first invocation's; each argv is in invocations.jsonl
            from harness.results import write_text_atomic
            write_text_atomic(sweep_dir / "multirun.yaml", OmegaConf.to_yaml(self.config))
        invocation = uuid.uuid4().hex[:12]
        from harness import provenance
        os.environ[sweep_log.INVOCATION_ENV] = invocation
        code = provenance.start_invocation(invocation)  # one code version for every job of this invocation
        os.environ[sweep_log.TOTAL_ENV] = str(len(jobs))
        started = time.time()
        sweep_log.append(sweep_dir / sweep_log.INVOCATIONS, {
            "event": "start", "invocation": invocation, "time": started, "argv": sys.argv,
            "jobs": len(jobs), "blocks": [len(b) for b in blocks], "code": code,
            "launcher": self.config.hydra.launcher.get("_target_")})
        print(f"[sweep] {len(jobs)} jobs ({' + '.join(str(len(b)) for b in blocks)} over {len(blocks)} blocks)"
              f" -> {sweep_dir}", flush=True)
        stages = blocks if self.staged else [jobs]
        returns, lost, idx = [], [], 0
        for k, stage in enumerate(stages):
            if k:
                _wait_for_held(sweep_dir, invocation, k + 1)
            for batch in _basic().split_overrides_to_chunks(stage, self.max_batch_size):
                if not batch:
                    continue
                results = self.launcher.launch(batch, initial_job_idx=idx)
                idx += len(batch)
                for r in results:
                    try:
                        _ = r.return_value
                    except Exception as exc:  # noqa: BLE001 - a job the launcher lost (killed, timed out)
                        lost.append(f"{type(exc).__name__}: {exc}")
                returns.append(results)
        wall = time.time() - started
        text = sweep_log.summary(sweep_dir, invocation, len(jobs), wall)
        for line in lost:
            text += f"\n[sweep]   lost by the launcher: {line.splitlines()[0] if line else line}"
        print(text, flush=True)
        events = sweep_log.read(sweep_dir / sweep_log.JOB_LOG, invocation)
        sweep_log.append(sweep_dir / sweep_log.INVOCATIONS, {
            "event": "end", "invocation": invocation, "time": time.time(), "wall_seconds": round(wall, 1),
            **sweep_log.counts(events), "lost": len(lost)})
        failed = sweep_log.counts(events)["failed"] + len(lost)
        if failed:  # every other job ran; the exit status still tells scripts that some failed
            raise RunsFailed(f"{failed} of {len(jobs)} sweep jobs failed (listed above; records in {sweep_dir})")
        return returns


def _wait_for_held(sweep_dir: Path, invocation: str, stage: int) -> None:
    """Before a later stage: wait until every earlier job this invocation left to another one is
    released (finished, failed, or its process died: the OS drops the lock). The later stage needs
    their results (LoRI-S chooses among finished LoRI-D runs), and waiting on running jobs costs
    nothing, whereas stopping here left two invocations that finished together both stopping short."""
    from harness.results import RunLock
    held = sorted({e["dir"] for e in sweep_log.read(sweep_dir / sweep_log.JOB_LOG, invocation)
                   if e["outcome"] == "held"})
    if held:
        print(f"[sweep] stage {stage} waits for {len(held)} job(s) of an earlier stage that another invocation"
              " is running", flush=True)
    for run_dir in held:
        lock = RunLock(Path(run_dir))
        if Path(run_dir).is_dir() and lock.acquire(wait_seconds=7 * 24 * 3600):
            lock.release()


def planned(name: str, overrides=()):
    """(the sweeper, its jobs per block) for `python -m harness +sweep=NAME <overrides>`, without
    launching anything; the sweeper holds the budget plans of budget_matched blocks."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from harness.config import register_configs
    register_configs()
    parser = OverridesParser.create()
    plain = [o for o, p in zip(overrides, parser.parse_overrides(list(overrides))) if not p.is_sweep_override()]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+sweep={name}", *plain], return_hydra_config=True)
    sweeper_cfg = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    sweeper_cfg.pop("_target_", None)
    sweeper = GridSweeper(**sweeper_cfg)
    sweeper.config = cfg  # the model a budget_matched block is solved for
    return sweeper, sweeper.expand([f"+sweep={name}", *overrides])


def plan(name: str, overrides=()) -> List[List[List[str]]]:
    """The jobs `python -m harness +sweep=NAME <overrides>` would launch, per block, without launching."""
    return planned(name, overrides)[1]


def main(argv: List[str]) -> None:
    """python -m harness.sweeper NAME [overrides]: print a sweep's budget plan (if it has one) and
    its jobs without running them. Bad input: one line on stderr, exit 2."""
    from harness.budget import describe as describe_budget
    from harness.cli_errors import describe
    if not argv:
        sys.exit("usage: python -m harness.sweeper NAME [overrides]")
    try:
        sweeper, jobs = planned(argv[0], argv[1:])
    except Exception as exc:  # noqa: BLE001 - every failure ends as one line + exit code, as in the CLI
        line, code = describe(exc)
        print(f"harness.sweeper: error: {line}", file=sys.stderr, flush=True)
        sys.exit(code)
    for budget_plan in sweeper.budget_plans:
        print(describe_budget(budget_plan))
    for b, block in enumerate(jobs):
        for job in block:
            print(f"block {b}: {' '.join(job)}")
    print(f"{sum(len(b) for b in jobs)} jobs in {len(jobs)} blocks")


if __name__ == "__main__":
    main(sys.argv[1:])
