"""Throughput on real batches: the harness's loop vs a bare PyTorch loop vs HF Trainer + peft (a script,
not a test; docs/benchmarks.md says how to read it).

All three loops train the same model with the same method (built by the harness: same init, same
targets, same fp32 task head under bf16), on real SST-2 batches drawn by the same sampler with the
same padding (the harness's TrainBatches and collator; HF Trainer is handed the very same batches
through get_train_dataloader), with AdamW, the same LR schedule and clipping.
Time = the training loop from its first batch to its last step, data loading included; one-time
setup (model build, tokenization, optimizer creation) is excluded from all three. Tokens/s counts
real (non-pad) tokens. Rounds alternate loop and setting, so machine noise spreads over all of
them; the table reports the median over rounds and the [min, max].

    python benchmarks/throughput.py                          # MiniLM LoRA r8, the four CPU settings
    python benchmarks/throughput.py --steps 20 --rounds 1    # a quick look
    python benchmarks/throughput.py --sweep-overhead         # + seconds per sweep job outside train/eval
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness import data, models, train
from harness.config import compose, effective_lr
from harness.evaluation import NoEvaluation
from harness.run import apply_method, initialise_from_data
from harness.runtime import setup_runtime
from harness.tracking import JsonlSink, Tracker

REPO = Path(__file__).resolve().parent.parent
# (precision, batching, pad_to_multiple_of): today's default first, the reference of "x today"
SETTINGS = [("fp32", "random", None), ("bf16", "random", None), ("fp32", "length_grouped", None),
            ("bf16", "length_grouped", None), ("bf16", "length_grouped", 8)]
LOOPS = ("harness", "bare", "hf_trainer")


def _label(setting) -> str:
    precision, batching, pad = setting
    return f"{precision} {batching}" + (f" pad{pad}" if pad else "")


class Setting:
    """Model, data and runtime of one (precision, batching, padding) setting, built once."""

    def __init__(self, args, setting):
        precision, batching, pad = setting
        self.cfg = compose(f"model={args.model}", f"task={args.task}", f"method={args.method}", "logger=none",
                           "train.progress=false", f"train.max_steps={args.steps}", f"train.precision={precision}",
                           f"train.batching={batching}", f"train.pad_to_multiple_of={pad or 'null'}",
                           f"train.batch_size={args.batch_size}", f"task.max_length={args.max_length}",
                           "train.checkpoint_every=null", *args.overrides)
        self.runtime = setup_runtime(self.cfg.train)
        built = models.build(self.cfg)
        import inspect
        self.data = data.prepare(self.cfg, built.tokenizer, set(inspect.signature(built.model.forward).parameters))
        self.label = _label(setting)

    def model(self, steps):
        """A fresh model with the method applied (the same init every time: the seed is reset)."""
        from harness.runtime import seed_everything
        seed_everything(self.cfg.train.seed, self.cfg.train.deterministic)
        built = models.build(self.cfg)
        model, method, _ = apply_method(self.cfg, built, steps, self.runtime.device)
        initialise_from_data(method, model, self.batches(), self.runtime)  # EVA / LoRA-GA, as a run does
        self.runtime.keep_fp32(model, built.classifier)
        return model, method

    def batches(self):
        return data.train_batches(self.data, self.cfg.train)


def time_harness(s: Setting, steps: int) -> dict:
    model, method = s.model(steps)
    with tempfile.TemporaryDirectory() as tmp:
        tracker = Tracker([JsonlSink(Path(tmp) / "metrics.jsonl")])
        result = train.train(model, method, s.batches(), NoEvaluation(), tracker, s.runtime, s.cfg.train, steps,
                             effective_lr(s.cfg), regression=s.cfg.task.label_type == "regression")
        tracker.finish()
    return {"seconds": result.train_seconds, "tokens": result.train_tokens, "padded": result.padded_tokens}


def time_bare(s: Setting, steps: int) -> dict:
    """The same step written as plainly as possible: next batch, forward, backward, clip, step,
    schedule, zero; a loss read back every 10 steps, as the harness logs."""
    model, _ = s.model(steps)
    t = s.cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=effective_lr(s.cfg), betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps,
                            weight_decay=t.weight_decay)
    sched = train.build_scheduler(opt, t, steps, train.count_warmup_steps(t, steps))
    batches = s.batches().iterate()
    model.train()
    tokens = padded = 0
    start = time.perf_counter()
    for step in range(1, steps + 1):
        _, _, batch = next(batches)
        tokens += int(batch["attention_mask"].sum())
        padded += batch["attention_mask"].numel()
        with s.runtime.autocast():
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % t.log_every == 0:
            loss.item()
    return {"seconds": time.perf_counter() - start, "tokens": tokens, "padded": padded}


def _same_batches_trainer_class():
    from transformers import Trainer

    class SameBatchesTrainer(Trainer):
        """HF Trainer fed the harness's own batches (same rows, same order, same padding), so the
        three loops compute exactly the same work; Trainer still owns everything else (Accelerate,
        autocast, optimizer, scheduler, clipping, logging)."""

        def __init__(self, setting, steps, **kwargs):
            self.setting, self.steps = setting, steps
            super().__init__(**kwargs)

        def get_train_dataloader(self):
            from torch.utils.data import DataLoader
            batches = self.setting.batches()
            order = [b for epoch in range(-(-self.steps // batches.per_epoch)) for b in batches.batch_indices(epoch)]
            loader = DataLoader(self.train_dataset, batch_sampler=order[:self.steps], collate_fn=self.data_collator)
            return self.accelerator.prepare(loader)
    return SameBatchesTrainer


def time_hf_trainer(s: Setting, steps: int) -> dict:
    """transformers.Trainer on the same model (peft-wrapped for peft methods) and collator."""
    from transformers import TrainerCallback, TrainingArguments

    _SameBatchesTrainer = _same_batches_trainer_class()
    model, _ = s.model(steps)
    t = s.cfg.train
    counted = {"tokens": 0, "padded": 0}

    def count(_module, _args, kwargs):
        if model.training:
            counted["tokens"] += int(kwargs["attention_mask"].sum())
            counted["padded"] += kwargs["attention_mask"].numel()
    model.register_forward_pre_hook(count, with_kwargs=True)

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            self.start = time.perf_counter()

        def on_train_end(self, *a, **k):
            self.seconds = time.perf_counter() - self.start

    clock = Clock()
    # TrainingArguments(bf16=True) exports ACCELERATE_MIXED_PRECISION=bf16 and Accelerate keeps one
    # process-wide state: without clearing both, a Trainer created after a bf16 one silently trains
    # under bf16 autocast too (measured: its "fp32" was as fast as bf16). Checked below.
    from accelerate.state import AcceleratorState
    os.environ.pop("ACCELERATE_MIXED_PRECISION", None)
    AcceleratorState._reset_state(reset_partial_state=True)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=t.batch_size, max_steps=steps,
            learning_rate=effective_lr(s.cfg), warmup_steps=train.count_warmup_steps(t, steps),
            lr_scheduler_type={"constant": "constant_with_warmup"}.get(t.schedule, t.schedule), weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
            adam_beta1=t.adam_beta1, adam_beta2=t.adam_beta2, adam_epsilon=t.adam_eps,
            bf16=s.runtime.precision == "bf16", use_cpu=s.runtime.device == "cpu",
            logging_steps=t.log_every, save_strategy="no",
            report_to=[], disable_tqdm=True, dataloader_num_workers=0, seed=t.seed)
        trainer = _SameBatchesTrainer(s, steps, model=model, args=args, train_dataset=s.data.train,
                                      data_collator=s.data.collate, callbacks=[clock])
        expected = "bf16" if s.runtime.precision == "bf16" else "no"
        if trainer.accelerator.mixed_precision != expected:
            raise RuntimeError(f"HF Trainer runs with mixed_precision={trainer.accelerator.mixed_precision},"
                               f" not {expected}: the comparison would be unfair")
        trainer.train()
    return {"seconds": clock.seconds, **counted}


TIMERS = {"harness": time_harness, "bare": time_bare, "hf_trainer": time_hf_trainer}


def _quietly(timer, s: Setting, steps: int) -> dict:
    """A timer with the harness's and Trainer's own prints silenced (only the table is output)."""
    import contextlib
    import io
    import logging
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    logging.getLogger("adapters").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        return timer(s, steps)


def _fmt(values):
    med = statistics.median(values)
    return f"{med:>7,.0f} [{min(values):,.0f}-{max(values):,.0f}]"


def throughput(args) -> dict:
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        settings = [Setting(args, s) for s in SETTINGS if _label(s) in args.settings]
    loops = [loop for loop in LOOPS if loop in args.loops]
    for s in settings:  # warm-up: allocator, oneDNN kernels for each shape family, caches
        for loop in loops:
            _quietly(TIMERS[loop], s, 3)
    runs = {(s.label, loop): [] for s in settings for loop in loops}
    for r in range(args.rounds):
        order = settings if r % 2 == 0 else settings[::-1]
        for s in order:
            for loop in (loops if r % 2 == 0 else loops[::-1]):
                out = _quietly(TIMERS[loop], s, args.steps)
                out["tokens_per_s"] = out["tokens"] / out["seconds"]
                runs[(s.label, loop)].append(out)
                print(f"  round {r + 1} {s.label:<24} {loop:<10} {out['tokens_per_s']:>8,.0f} tokens/s"
                      f" {out['seconds'] / args.steps:.3f} s/step", flush=True)
    return runs


def report(runs: dict, args) -> list:
    med = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in runs.items()}
    # HF Trainer draws its own batches (its sampler), so its padding differs by chance: computed
    # (padded) tokens/s compares the work done per second whatever the batches held
    computed = {k: statistics.median(r["padded"] / r["seconds"] for r in v) for k, v in runs.items()}
    today = med.get((_label(SETTINGS[0]), "harness"))
    rows = []
    print(f"\nmodel={args.model} task={args.task} method={args.method} batch={args.batch_size}"
          f" max_length={args.max_length} steps={args.steps} rounds={args.rounds} threads={torch.get_num_threads()}")
    print(f"{'setting':<24} {'loop':<10} {'tokens/s median [min-max]':>27} {'s/step':>7} {'pad/real':>8}"
          f" {'vs bare':>7} {'vs HF':>6} {'x today':>7} {'computed tok/s':>14} {'vs HF':>6}")
    for (label, loop), rs in runs.items():
        tps = [r["tokens_per_s"] for r in rs]
        step_s = statistics.median(r["seconds"] for r in rs) / args.steps
        pad = statistics.median(r["padded"] / r["tokens"] for r in rs)
        bare, hf = med.get((label, "bare")), med.get((label, "hf_trainer"))
        row = {"setting": label, "loop": loop, "tokens_per_s_median": med[(label, loop)], "tokens_per_s": tps,
               "step_seconds": step_s, "padded_per_real": pad,
               "vs_bare": med[(label, loop)] / bare if bare else None,
               "vs_hf_trainer": med[(label, loop)] / hf if hf else None,
               "vs_today": med[(label, loop)] / today if today else None,
               "computed_tokens_per_s": computed[(label, loop)],
               "computed_vs_hf_trainer": computed[(label, loop)] / computed[(label, "hf_trainer")]
               if (label, "hf_trainer") in computed else None, "runs": rs}
        rows.append(row)
        ratio = lambda x: f"{x:>6.2f}" if x else "     -"  # noqa: E731
        print(f"{label:<24} {loop:<10} {_fmt(tps):>27} {step_s:>7.3f} {pad:>8.2f} {ratio(row['vs_bare']):>7}"
              f" {ratio(row['vs_hf_trainer']):>6} {ratio(row['vs_today']):>7} {computed[(label, loop)]:>14,.0f}"
              f" {ratio(row['computed_vs_hf_trainer']):>6}")
    return rows


def sweep_overhead(sweep_args, label) -> dict:
    """Seconds per job spent outside training and evaluation in one in-process sweep: the sweep's
    wall time, less the interpreter's imports (timed apart), less Σ(train + eval seconds) of its
    records, per job. Includes composition, planning, identity, preflight, model copy, data
    preparation (tokenization is cached across runs), record writing and logger init/finish."""
    env = dict(os.environ)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import harness.run, harness.sweeper, torch, transformers, peft, adapters,"
                    " datasets, hydra"], check=True, env=env)
    imports = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "harness", *sweep_args, f"hydra.sweep.dir={tmp}/sweep"],
                              cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"sweep failed: {proc.stderr[-2000:]}")
        records = [json.loads(p.read_text()) for p in Path(tmp, "sweep").rglob("result.json")]
    work = sum(r["cost"]["train_seconds"] + r["cost"]["eval_seconds"] for r in records)
    n = len(records)
    out = {"sweep": label, "jobs": n, "wall_s": wall, "imports_s": imports, "train_eval_s": work,
           "overhead_per_job_s": (wall - imports - work) / n}
    print(f"{label:<28} jobs={n:<3} wall={wall:6.1f}s imports={imports:5.1f}s train+eval={work:6.1f}s"
          f" -> overhead/job={out['overhead_per_job_s']:.2f}s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--method", default="lora")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=40, help="timed steps per loop and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--settings", nargs="+", default=[_label(s) for s in SETTINGS], metavar="SETTING",
                    help=f"of: {', '.join(repr(_label(s)) for s in SETTINGS)}")
    ap.add_argument("--loops", nargs="+", default=list(LOOPS), choices=LOOPS)
    ap.add_argument("--sweep-overhead", action="store_true", help="also time a tiny and a MiniLM sweep's overhead")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--json", type=Path, help="write the measurements here")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every setting")
    args = ap.parse_args()
    out = {"args": {k: str(v) for k, v in vars(args).items()}}
    if not args.no_throughput:
        out["throughput"] = report(throughput(args), args)
    if args.sweep_overhead:
        print("\nsweep overhead (in-process sweeps, logger=none):")
        out["sweep_overhead"] = [
            sweep_overhead(["+sweep=smoke"], "smoke (tiny_bert, 8 jobs)"),
            sweep_overhead(["-m", "method=lora,fullft,loreft", "train.seed=1,2", "train.max_steps=10",
                            "train.eval_every=10", "train.checkpoint_every=null", "task.max_train_samples=640",
                            "logger=none", "train.progress=false"], "MiniLM SST-2 (6 jobs x 10 steps)"),
        ]
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
