"""LoRI ("LoRI: Reducing Cross-Task Interference in Multi-Task Low-Rank Adaptation"), written here on
peft LoRA, since no library has it.

lori_d  LoRA with every A frozen at its random (peft default) initialisation; B trains densely.
        When it finishes it exports, into <run_dir>/lori/, its A matrices and one mask per sparsity s:
        the top (1 - s) fraction of |B| taken globally across all adapted modules.
lori_s  A fresh adapter (B = 0) with the lori_d run's A (frozen, reused so the mask fits it) and its
        mask for `sparsity`; gradients outside the mask are held at zero, so B stays zero there.
        Its knobs (r, alpha, dropout, targets) are read from the lori_d run; its LR is
        `lr_ratio` x the lori_d run's LR (the paper: 10x).
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from omegaconf import OmegaConf

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.base import ApplyContext, Knob, MethodConfig, knob_grid, preferred_first
from harness.methods.lora import Lora, LoraMethodConfig, check_lora_knobs

EXPORT_DIR = "lori"


def _mask_file(run_dir: Path, sparsity: float) -> Path:
    return Path(run_dir) / EXPORT_DIR / f"mask_s{sparsity:g}.safetensors"


def _b_only_count(mcfg, dims) -> int:
    """r x out per adapted linear: B trains, A stays frozen at its random init."""
    return sum(mcfg.r * out for _, out in dims.targets(mcfg.target_modules).values())


def _lora_modules(model):
    """{module name relative to the base model: peft LoRA layer}."""
    from peft.tuners.lora import LoraLayer
    prefix = "base_model.model."
    return {n[len(prefix):] if n.startswith(prefix) else n: m for n, m in model.named_modules()
            if isinstance(m, LoraLayer)}


@dataclass
class LoriDConfig(LoraMethodConfig):
    mask_sparsities: List[float] = field(default_factory=lambda: [0.5, 0.8, 0.9, 0.95, 0.99])


@register
class LoriD(Lora):
    kind = "lori_d"
    config_class = LoriDConfig

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        return _b_only_count(mcfg, dims)

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        check_lora_knobs(mcfg)
        if mcfg.use_dora or mcfg.rslora:
            raise HarnessError("lori_d: use_dora / rslora are not part of LoRI")
        if any(not 0 < s < 1 for s in mcfg.mask_sparsities):
            raise HarnessError(f"method.mask_sparsities must lie in (0, 1) (got {list(mcfg.mask_sparsities)})")

    def apply(self, model, ctx: ApplyContext):
        model = super().apply(model, ctx)
        for layer in _lora_modules(model).values():
            layer.lora_A["default"].weight.requires_grad_(False)  # A stays at its random init
        return model

    def on_train_end(self, model, run_dir):
        import torch
        from safetensors.torch import save_file
        layers = _lora_modules(model)
        out = Path(run_dir) / EXPORT_DIR
        out.mkdir(exist_ok=True)
        save_file({n: l.lora_A["default"].weight.detach().cpu().contiguous() for n, l in layers.items()},
                  str(out / "lora_A.safetensors"))
        magnitudes = {n: l.lora_B["default"].weight.detach().abs().cpu() for n, l in layers.items()}
        flat = torch.cat([m.flatten() for m in magnitudes.values()])
        exported = {}
        for s in self.cfg.mask_sparsities:
            keep = max(1, int(round((1 - s) * flat.numel())))
            threshold = torch.topk(flat, keep).values.min()  # global across all modules
            masks = {n: (m >= threshold).contiguous() for n, m in magnitudes.items()}
            save_file(masks, str(_mask_file(run_dir, s)))
            exported[f"{s:g}"] = sum(int(m.sum()) for m in masks.values()) / flat.numel()
        return {"mask_density_by_sparsity": exported, "export_dir": str(out)}


@dataclass
class LoriSConfig(MethodConfig):
    source_run: Optional[str] = None  # run directory of a finished lori_d run
    sparsity: float = 0.9
    lr_ratio: float = 10.0  # LR = lr_ratio x the lori_d run's LR (the paper: 10x)


# Sparsities a budget solver may choose among for LoRI-S (the paper's is 0.9).
BUDGET_SPARSITIES = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.97, 0.98, 0.99)


def _kept(sparsity: float, entries: int) -> int:
    """Entries of B a mask of `sparsity` keeps: as LoriD.on_train_end computes it."""
    return max(1, int(round((1 - sparsity) * entries)))


def _source_record(mcfg) -> dict:
    if not mcfg.source_run:
        raise HarnessError("lori_s needs method.source_run=<run directory of a finished lori_d run>")
    path = Path(mcfg.source_run) / "result.json"
    if not path.is_file():
        raise HarnessError(f"lori_s: no finished lori_d run at {mcfg.source_run} ({path} missing)")
    record = json.loads(path.read_text())
    if record.get("status") != "success" or record["labels"].get("method_kind") != "lori_d":
        raise HarnessError(f"lori_s: {mcfg.source_run} is not a successful lori_d run")
    if not _mask_file(mcfg.source_run, mcfg.sparsity).is_file():
        raise HarnessError(f"lori_s: the lori_d run exported no mask for sparsity {mcfg.sparsity:g}"
                           f" ({_mask_file(mcfg.source_run, mcfg.sparsity)} missing)")
    return record


def _source_lora_knobs(mcfg) -> LoraMethodConfig:
    """The LoRA knobs LoRI-S inherits from its lori_d run: r, alpha, dropout, targets."""
    d_method = _source_record(mcfg)["config"]["method"]
    return LoraMethodConfig(**{k: d_method[k] for k in ("r", "alpha", "dropout", "target_modules")})


def _selection_score(record: dict):
    """What LR selection may look at: the protocol's selection part, or the reported metric under
    the 'last' protocol (which has no separate selection part)."""
    evaluation = record.get("evaluation", {})
    if "selection_score" in evaluation:
        return evaluation["selection_score"]
    return record.get("metrics", {}).get(record.get("report_metric"))


def find_lori_d_run(task: str, model: str, seed) -> str:
    """Default of lori_s's method.source_run (conf/method/lori_s.yaml): in a sweep, this sweep's
    successful lori_d run with the same task, model and seed, at the LR whose mean selection score
    over seeds is best ('' outside a sweep or when there is none yet, which validation reports).
    Lets a staged sweep chain LoRI-D -> LoRI-S."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return ""
    candidates = []  # (record, directory) of successful lori_d runs of this task and model
    for path in sorted(Path(HydraConfig.get().sweep.dir).glob("*/result.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        labels = record.get("labels", {})
        if (record.get("status") == "success" and labels.get("method_kind") == "lori_d"
                and labels.get("task") == task and labels.get("model") == model):
            candidates.append((record, path.parent))
    return best_lr_run(candidates, seed)


def best_lr_run(candidates, seed) -> str:
    """The run of `seed` from the LoRI-D (configuration, LR) with the best mean selection score over
    its seeds. Configurations and LRs are kept apart (never averaged together), and an LR counts only
    with as many successful seeds as its configuration's best-covered LR (one lucky seed next to
    diverged ones does not win). '' when that winner has no run of this seed."""
    from harness.results import config_identity
    groups = {}
    for record, run_dir in candidates:
        key = (record.get("config_id") or config_identity(record["config"]), record["inferred"]["lr"]["value"])
        groups.setdefault(key, []).append((record, run_dir))
    coverage = {}
    for (config_id, _), runs in groups.items():
        coverage[config_id] = max(coverage.get(config_id, 0), len(runs))
    complete = {k: v for k, v in groups.items() if len(v) == coverage[k[0]]}
    if not complete:
        return ""
    best = max(complete, key=lambda k: sum(_selection_score(r) for r, _ in complete[k]) / len(complete[k]))
    return next((str(d) for r, d in complete[best] if str(r.get("seed")) == str(seed)), "")


# Cached per config: the source is chosen once per job, so validation, the identity, the LR and the
# A/mask actually loaded all name the same run even while other LoRI-D runs finish.
OmegaConf.register_new_resolver("lori_d_run", find_lori_d_run, replace=True, use_cache=True)


@register
class LoriS(Lora):
    kind = "lori_s"
    config_class = LoriSConfig
    source_run_kind = LoriD.kind
    matched_counterpart = "lora"  # a sparse B under a mask: does it beat dense LoRA of as many entries?
    display_knobs = (Knob("sparsity", "s{:g}"),)

    @classmethod
    def adapter_param_count(cls, mcfg, dims) -> int:
        """As its lori_d run's B (r and targets come from there); the mask zeroes entries, it
        removes no parameters (the record's `nonzero` counts those)."""
        return _b_only_count(_source_lora_knobs(mcfg), dims)

    # Matched on its mask's non-zero entries: B is dense in memory (r x out trains, which is what
    # adapter_param_count and every record's `adapter` say) but only (1 - s) of it can move.
    budget_counts = "nonzero"
    lr_knob = "lr_ratio"  # its LR is a multiple of its lori_d run's (conf/sweep/lori.yaml)

    @classmethod
    def budget_candidates(cls, mcfg, dims):
        """Sparsity only: r and targets are the lori_d run's."""
        return knob_grid(("sparsity", preferred_first(mcfg.sparsity, BUDGET_SPARSITIES)))

    @classmethod
    def budget_count(cls, mcfg, dims) -> int:
        """Entries the mask keeps, (1 - s) x the source's r x out (its non-zero count after training)."""
        return _kept(mcfg.sparsity, _b_only_count(cls._planned_source(mcfg), dims))

    @classmethod
    def planned_adapter_count(cls, mcfg, dims) -> int:
        return _b_only_count(cls._planned_source(mcfg), dims)

    @classmethod
    def budget_source(cls, chosen):
        """A budget-matched sweep first runs lori_d at its preset, exporting the mask of every
        sparsity chosen (the default source_run then finds that run in the sweep)."""
        return LoriD.kind, {"mask_sparsities": sorted({knobs["sparsity"] for knobs in chosen})}

    @classmethod
    def _planned_source(cls, mcfg) -> LoraMethodConfig:
        """The LoRA knobs of the source run: the finished run's when source_run names one, else
        those of the lori_d preset, which is what budget_source launches (a plan is made before
        that run exists)."""
        source = OmegaConf.select(mcfg, "source_run", throw_on_resolution_failure=False) \
            if OmegaConf.is_config(mcfg) else getattr(mcfg, "source_run", None)
        if source and (Path(source) / "result.json").is_file():
            d_method = json.loads((Path(source) / "result.json").read_text())["config"]["method"]
        else:
            from harness.config import method_preset
            d_method = method_preset(LoriD.kind)
        return LoraMethodConfig(**{k: d_method[k] for k in ("r", "alpha", "dropout", "target_modules")})

    @classmethod
    def validate_config(cls, mcfg, cfg) -> None:
        record = _source_record(mcfg)
        if record["labels"]["model"] != cfg.model.name:
            raise HarnessError(f"lori_s: the lori_d run used model '{record['labels']['model']}', not '{cfg.model.name}'")
        if mcfg.lr_ratio <= 0:
            raise HarnessError(f"method.lr_ratio must be > 0 (got {mcfg.lr_ratio})")

    @classmethod
    def check_against_model(cls, mcfg, model) -> None:
        """r and targets come from the lori_d run, checked when it ran on the same model."""

    @classmethod
    def identity_view(cls, method: dict) -> dict:
        """lr_ratio is an LR knob; the source run is named by its configuration (its config_id),
        since its path differs per seed and per LR while the configuration does not."""
        from harness.results import config_identity
        view = {k: v for k, v in method.items() if k not in ("lr_ratio", "source_run")}
        path = Path(method.get("source_run") or "") / "result.json"
        if method.get("source_run") and path.is_file():
            source = json.loads(path.read_text())
            view["source_config_id"] = source.get("config_id") or config_identity(source["config"])
        else:
            view["source_config_id"] = None
        return view

    @classmethod
    def resolve_lr(cls, mcfg, default_lr, default_reason):
        d_lr = _source_record(mcfg)["inferred"]["lr"]["value"]
        return d_lr * mcfg.lr_ratio, f"method.lr_ratio={mcfg.lr_ratio} x the lori_d run's lr {d_lr}"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.s_cfg = cfg
        self.cfg = _source_lora_knobs(cfg)

    def apply(self, model, ctx: ApplyContext):
        from safetensors.torch import load_file
        model = super().apply(model, ctx)
        src = Path(self.s_cfg.source_run)
        a_saved = load_file(str(src / EXPORT_DIR / "lora_A.safetensors"))
        masks = load_file(str(_mask_file(src, self.s_cfg.sparsity)))
        layers = _lora_modules(model)
        if set(layers) != set(masks):
            raise HarnessError(f"lori_s: adapted modules differ from the lori_d run's ({len(layers)} vs {len(masks)})")
        for name, layer in layers.items():
            layer.lora_A["default"].weight.data.copy_(a_saved[name])
            layer.lora_A["default"].weight.requires_grad_(False)
            b = layer.lora_B["default"].weight
            layer.register_buffer("lori_mask", masks[name].to(b.dtype))  # moves with the model
            b.register_hook(lambda grad, layer=layer: grad * layer.lori_mask)
        density = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
        self.inferred.update(a_source=f"lori_d run {src}", mask_sparsity=self.s_cfg.sparsity, mask_density=density)
        return model
