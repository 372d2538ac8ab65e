"""One job: validate -> build model, data, method -> train -> write the record.

Everything that can be checked before training is checked first (config, run directory, data
availability, max_length vs tokenizer/method). From the moment the record exists, any failure
ends with status 'failed' and the error in result.json.
"""

import time
import uuid
from pathlib import Path

from omegaconf import OmegaConf

from harness import label_scaling
from harness.config import effective_lr, lr_source, validate, validate_with_tokenizer
from harness.errors import HarnessError
from harness.tracking import Redactor


def _print_inferred(inferred: dict) -> None:
    for key, item in inferred.items():
        if isinstance(item, dict) and "value" in item:
            value = item["value"]
            if isinstance(value, list) and len(value) > 6:
                value = f"{len(value)} items: {value[:3]} ... {value[-2:]}"
            print(f"[harness] {key}: {value}  ({item['reason']})")


def _labels(cfg, method_cls) -> dict:
    return {"task": cfg.task.name, "task_version": cfg.task.version, "model": cfg.model.name,
            "model_version": cfg.model.version, "method": cfg.method.label, "method_kind": cfg.method.kind,
            "method_version": method_cls.version}


def _run_name(cfg) -> str:
    return f"{cfg.task.name}-{cfg.method.label}-{cfg.model.name}-s{cfg.train.seed}"


def _display_name(cfg, resolved) -> str:
    """W&B run name: task, method label and knobs, model, seed."""
    from harness.knobs import knob_label
    knobs = knob_label(resolved["method"]).replace(" ", "-")
    return f"{cfg.task.name}-{cfg.method.label}{'-' + knobs if knobs else ''}-{cfg.model.name}-s{cfg.train.seed}"


def run_job(cfg, run_dir: Path, overrides=(), sweep_dir: Path = None) -> dict:
    """Run one configured job in run_dir; return its record (raise on failure, after recording it).

    A directory holding a checkpoint of the same config resumes from it. In a sweep (sweep_dir
    set), a job whose successful record already exists anywhere in the sweep is skipped: the
    earlier record is returned with "skipped": True.
    """
    from harness.hub import configure_hub
    from harness.methods import METHODS
    from harness.preflight import preflight
    from harness.results import RunLock, find_success, run_identity
    from harness.runtime import execution as runtime_execution

    run_dir = Path(run_dir)
    hub = configure_hub()
    validate(cfg)
    method_cls = METHODS.get(cfg.method.kind)
    resolved = Redactor.for_config(cfg).config(OmegaConf.to_container(cfg, resolve=True))  # no secrets, ever
    execution = runtime_execution(cfg.train)  # what device/precision 'auto' means here: part of the identity
    run_id = run_identity(resolved, execution)
    done = find_success(sweep_dir, run_id) if sweep_dir is not None else None
    if done is not None:
        print(f"[harness] skipped: {run_id} already succeeded in {done['record_dir']}")
        return {**done, "skipped": True}
    data_source = preflight(cfg)["data"]  # model, method and data checks: a refused run writes nothing
    lock = RunLock(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        acquired = lock.acquire(_requeue_wait())
    except OSError as exc:  # read-only or unwritable output: bad input, said plainly, before anything runs
        raise HarnessError(f"cannot write the run directory {run_dir} ({exc.strerror or exc});"
                           " choose a writable hydra.run.dir / hydra.sweep.dir") from exc
    if not acquired:  # another process is writing this run: never two writers on one run
        return _held_elsewhere(lock, run_id, run_dir, in_sweep=sweep_dir is not None)
    try:
        return _run_locked(cfg, run_dir, run_id, resolved, method_cls, data_source, hub, overrides, sweep_dir,
                           execution)
    finally:
        lock.release()


def _requeue_wait() -> float:
    """Seconds to wait for a run's lock: a SLURM job requeued after its node died may find the dead
    holder's lock still alive on NFS until the lease runs out (~90 s), so it waits instead of
    leaving its own run to nobody. First attempts never wait."""
    import os
    return 300.0 if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0 else 0.0


def _held_elsewhere(lock, run_id: str, run_dir: Path, in_sweep: bool) -> dict:
    """A sweep job another invocation is running is left to it (reported as 'held'); a single run
    into a directory in use is refused."""
    if not in_sweep:
        raise HarnessError(f"{run_dir} is in use by another process ({lock.holder()}); wait for it to finish"
                           " or choose another hydra.run.dir")
    print(f"[harness] skipped: {run_dir} is being run by another process ({lock.holder()})")
    return {"run_id": run_id, "record_dir": str(run_dir), "skipped": True, "held_by": lock.holder()}


def _run_locked(cfg, run_dir, run_id, resolved, method_cls, data_source, hub, overrides, sweep_dir,
                execution) -> dict:
    """The rest of run_job, under the run directory's lock."""
    from harness import preemption
    from harness.probes.runner import carried as retention_carried
    from harness.results import RunRecord, prepare_run_dir, write_text_atomic

    prep = prepare_run_dir(run_dir, run_id, in_sweep=sweep_dir is not None)
    if prep.action == "skip":
        print(f"[harness] skipped: {run_id} already succeeded in {run_dir}")
        return {**prep.previous, "record_dir": str(run_dir), "skipped": True}
    if prep.note:
        print(f"[harness] {prep.note}")

    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
    record = Redactor.for_config(cfg).record(RunRecord(run_dir, resolved, _labels(cfg, method_cls), _overrides(overrides),
                                                         execution))
    record.update(report_metric=cfg.task.report_metric)
    # One W&B run per run, across its attempts: a resumed attempt continues the same W&B run id
    record.update(wandb_id=f"{run_id}-{uuid.uuid4().hex[:8]}")
    if prep.action == "resume":
        record.update(started_at=prep.previous["started_at"],
                      wandb_id=prep.previous.get("wandb_id") or record.data["wandb_id"],
                      attempts=prep.previous.get("attempts", []) + [
                          {"started_at": record.started, "resumed_from_step": prep.resume_step}])
        record.update(**retention_carried(prep.previous))  # the base model's probe values, measured once
    preemption.install()  # under submitit: checkpoint before a requeue
    print(f"[harness] run {run_id} -> {run_dir}")
    tracker = None
    try:
        from harness.tracking import make_tracker
        tracker = make_tracker(cfg, run_dir, _display_name(cfg, resolved), resolved, record.data["wandb_id"])
        _execute(cfg, record, tracker, method_cls, data_source, hub, run_dir)
        tracker.summary({**{f"final/{k}": v for k, v in record.data["metrics"].items()},
                         **{f"params/{k}": v for k, v in record.data["params"].items()}})
        record.finish("success")
        print(f"[harness] success: {record.data['metrics']} -> {record.path}")
        return {**record.data, "record_dir": str(run_dir)}
    except BaseException as exc:
        record.finish("interrupted" if isinstance(exc, (SystemExit, KeyboardInterrupt)) else "failed", exc)
        raise
    finally:
        if tracker is not None:
            tracker.finish()


def _overrides(explicit):
    """The overrides as typed: `${oc.env:X}` stays an expression (Hydra's list would resolve it)."""
    if explicit:
        return list(explicit)
    try:
        from hydra.core.hydra_config import HydraConfig
        return list(OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False))
    except ValueError:  # not running under Hydra (tests call run_job directly)
        return []


def apply_method(cfg, built, total: int, device: str):
    """The configured method applied to a built model under the head policy (checked)."""
    from harness import models, params
    from harness.methods import METHODS
    from harness.methods.base import ApplyContext

    head_train, head_frozen = models.head_policy(built, cfg.train.head)
    method = METHODS.get(cfg.method.kind)(cfg.method)
    ctx = ApplyContext(model_type=built.model.config.model_type, arch=cfg.model.arch, head_train=head_train,
                       head_frozen=head_frozen, total_steps=total, seed=cfg.train.seed)
    model = method.apply(built.model, ctx).to(device)
    wrong = params.head_trainability(model, head_train, head_frozen)
    if wrong:
        raise HarnessError(f"method '{cfg.method.kind}' broke the head policy: {wrong[0]}")
    return model, method, (head_train, head_frozen)


def initialise_from_data(method, model, loader, runtime) -> list:
    """The data-driven initialiser a method declares (`data_init`: EVA, LoRA-GA), run once before
    the optimizer exists on the run's own first training batches (epoch 0 from its start: what
    training then sees, so no data beyond the train split), on the run's device. Returns the
    sentinel's flags: an initialiser that changed no trainable parameter did not run."""
    if not method.data_init:
        return []
    from harness import sentinels
    before = sentinels.trainable(model)
    method.initialise_from_data(model, (runtime.to_device(batch) for _, _, batch in loader.iterate(0, 0)))
    return sentinels.data_init_flags(before, model)


def _raise_flags(record, flags) -> None:
    """Sentinel and method flags into the record, each said once on the console."""
    from harness.sentinels import WHY
    for flag in flags:
        print(f"[harness] warning: flagged {flag}" + (f" ({WHY[flag]})" if flag in WHY else ""))
    record.data["flags"].extend(flags)


def _execute(cfg, record, tracker, method_cls, data_source, hub, run_dir):
    import inspect

    from harness import data as data_mod
    from harness import models, params, provenance, sentinels, train
    from harness.checkpoint import Checkpointer
    from harness.evaluation import PROTOCOLS, Evaluator
    from harness.faults import Injector
    from harness.methods.dims import ModelDims
    from harness.probes.runner import Retention
    from harness.runtime import setup_runtime

    runtime = setup_runtime(cfg.train)
    inferred = {"hub": {"value": hub["hub"], "reason": hub["reason"]}, "data": data_source, **runtime.inferred}
    built = models.build(cfg)
    validate_with_tokenizer(cfg, built.tokenizer, method_cls)
    model_inputs = set(inspect.signature(built.model.forward).parameters)
    task_data = data_mod.prepare(cfg, built.tokenizer, model_inputs)
    total = train.count_total_steps(cfg.train, len(task_data.train))
    lr = effective_lr(cfg)
    loader = data_mod.train_batches(task_data, cfg.train)
    retention = Retention(cfg, built, runtime)  # eval.retention's probes: the base model first
    retention.before(built.model, record, tracker)
    dims = ModelDims.of(built.model, built.classifier + built.pooler)  # before a method wraps its linears
    base_weights = sentinels.BaseWeights(built.model)
    model, method, (head_train, head_frozen) = apply_method(cfg, built, total, runtime.device)
    _raise_flags(record, initialise_from_data(method, model, loader, runtime) + base_weights.flags(method))
    fp32_modules = runtime.keep_fp32(model, built.classifier)

    inferred.update(built.inferred)
    inferred.update(label_scaling.inferred(cfg.task, task_data.label_scale))
    inferred.update(retention.inferred)
    inferred.update({
        "lr": {"value": lr, "reason": lr_source(cfg)},
        "total_steps": {"value": total, "reason": "train.max_steps" if cfg.train.max_steps is not None
                        else f"train.epochs={cfg.train.epochs} x {len(task_data.train)} examples"},
        "head": {"value": {"train": head_train, "frozen": head_frozen},
                 "reason": f"train.head={cfg.train.head}" + (
                     f"; {built.untrained_head} not in the checkpoint (random), so trained with the classifier"
                     if built.untrained_head and cfg.train.head == "classifier" else "")},
    })
    if fp32_modules:
        inferred["fp32_modules"] = {"value": fp32_modules, "reason": "the task head runs in fp32 under bf16"
                                    " autocast: logits, loss and metrics from fp32 values"}
    inferred.update({k: {"value": v, "reason": f"chosen by method '{cfg.method.kind}'"}
                     for k, v in method.inferred.items()})
    _print_inferred(inferred)
    param_counts = params.param_report(model, built.classifier + built.pooler, built.base_total, method)
    source, count_flags = sentinels.count_source(method, cfg.method, dims, param_counts["adapter"])
    param_counts.update(source)
    _raise_flags(record, count_flags)
    print(f"[harness] params: {param_counts}")
    record.update(inferred=inferred, params=param_counts,
                  provenance={**provenance.collect(runtime.device), "weights": built.weights,
                              "data": task_data.sources},
                  data={"train_examples": len(task_data.train),
                        "eval_examples": {t: len(es.labels) for t, es in task_data.eval_sets.items()},
                        "train_tokens_mean": task_data.train_tokens_mean})
    record.write()

    protocol = PROTOCOLS.get(cfg.eval.protocol)(cfg.task.report_metric, cfg.eval.split_seed)
    evaluator = Evaluator(cfg.task, task_data.eval_sets, protocol, runtime, task_data.label_scale)
    checkpointer = Checkpointer(run_dir, record.data["run_id"], cfg.train.checkpoint_every)
    head_weights = sentinels.HeadWeights(model, head_train)
    started = time.perf_counter()
    result = train.train(model, method, loader, evaluator, tracker, runtime, cfg.train, total, lr,
                         regression=cfg.task.label_type == "regression", checkpointer=checkpointer,
                         faults=Injector(_run_name(cfg)))
    reported, evaluation = evaluator.result()
    _finish_method(cfg, record, method, model, run_dir, result, built.classifier + built.pooler, built.base_total)
    _raise_flags(record, head_weights.flags())
    base = evaluator.baseline(task_data.train_labels, cfg.train.seed)
    if base["at_baseline"]:
        record.data["flags"].append("at_baseline")
        print(f"[harness] warning: indistinguishable from the {base['predictor']} predictor"
              f" ({cfg.task.report_metric} {reported[cfg.task.report_metric]:.4f} vs"
              f" {base['metrics'][base['metric']]:.4f}): flagged at_baseline")
    record.update(baseline=base)
    record.update(metrics=reported, evaluation=evaluation, cost={
        "train_seconds": result.train_seconds,
        "eval_seconds": evaluator.seconds,
        "wall_seconds": time.perf_counter() - started,
        "steps": result.steps,
        "step_seconds_median": result.step_seconds_median,
        "tokens_per_second": result.train_tokens / result.train_seconds,
        "train_tokens": result.train_tokens,
        "padded_tokens": result.padded_tokens,
        "padded_per_real_token": result.padded_tokens / max(result.train_tokens, 1),
        **train.peak_memory(runtime),
    })
    retention.after(model, result.steps, record, tracker)  # the adapted model as trained (not in wall_seconds)
    checkpointer.remove()  # the run is complete: its record and artifact are what is kept


def _finish_method(cfg, record, method, model, run_dir: Path, result, head_modules, base_total) -> None:
    """After training: recount params (nonzero changes), save the artifact (its size is `stored`),
    run the method's end hook, record ranks."""
    import tempfile

    from safetensors import safe_open

    from harness import params

    def saved_params(directory: Path) -> int:
        total = 0
        for f in directory.rglob("*.safetensors"):
            with safe_open(str(f), framework="pt") as fh:
                total += sum(_numel(fh.get_slice(k).get_shape()) for k in fh.keys())
        return total

    if cfg.train.save_artifact:
        artifact = run_dir / "artifact"
        artifact.mkdir(exist_ok=True)
        method.save(model, artifact)
        stored = saved_params(artifact)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            method.save(model, Path(tmp))
            stored = saved_params(Path(tmp))
    report = dict(method.on_train_end(model, run_dir))
    flags = list(report.pop("flags", []))
    counts = params.param_report(model, head_modules, base_total, method)
    counts["stored"] = stored
    record.update(params={**record.data["params"], **counts}, method_report=report)  # count_source stays
    _raise_flags(record, flags)
    if result.rank_history:
        record.update(ranks={"initial_total": result.rank_history[0]["total"],
                             "final_total": result.rank_history[-1]["total"],
                             "final": result.final_ranks, "history": result.rank_history})


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
