"""Step-time benchmark: the harness's training step vs a bare PyTorch loop (a script, not a test).

Both loops train the same model with the same method (built by the harness, same seed), on the same
fixed batch (batch size x sequence length of random tokens), with AdamW, the same LR schedule and
gradient clipping. Repeats alternate harness/bare to spread machine noise over both. Prints the
mean step time of each and their ratio per method (target on CPU: <= 1.05x).

    python benchmarks/step_time.py                                  # MiniLM, fullft + lora, CPU
    python benchmarks/step_time.py --model roberta_base --batch-size 32 --seq-len 128   # GPU, bf16 auto
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from harness import models, train
from harness.config import compose, effective_lr
from harness.evaluation import NoEvaluation
from harness.run import apply_method
from harness.runtime import setup_runtime
from harness.tracking import JsonlSink, Tracker


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _fixed_batch(tokenizer, batch_size: int, seq_len: int, num_labels: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, tokenizer.vocab_size - 1, (batch_size, seq_len), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "labels": torch.randint(0, max(num_labels, 2), (batch_size,), generator=g)}
    if num_labels == 1:
        batch["labels"] = batch["labels"].float()
    return batch


def _setup(cfg, steps):
    runtime = setup_runtime(cfg.train)
    built = models.build(cfg)
    model, method, _ = apply_method(cfg, built, steps, runtime.device)
    return runtime, built, model, method


def time_harness(cfg, batch, steps: int) -> dict:
    runtime, _, model, method = _setup(cfg, steps)
    with tempfile.TemporaryDirectory() as tmp:
        tracker = Tracker([JsonlSink(Path(tmp) / "metrics.jsonl")])
        _sync(runtime.device)
        start = time.perf_counter()
        train.train(model, method, [batch] * steps, NoEvaluation(), tracker, runtime, cfg.train, steps,
                    effective_lr(cfg), regression=cfg.task.label_type == "regression")
        _sync(runtime.device)
        seconds = time.perf_counter() - start
        tracker.finish()
    return {"step_s": seconds / steps, **train.peak_memory(runtime),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def time_bare(cfg, batch, steps: int) -> dict:
    """The same step written as plainly as possible: forward, backward, clip, step, schedule, zero."""
    runtime, _, model, _ = _setup(cfg, steps)
    t = cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=effective_lr(cfg), betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps,
                            weight_decay=t.weight_decay)
    sched = train.build_scheduler(opt, t, steps, train.count_warmup_steps(t, steps))
    batch = runtime.to_device(batch)
    model.train()
    _sync(runtime.device)
    start = time.perf_counter()
    for _ in range(steps):
        with runtime.autocast():
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    loss.item()
    _sync(runtime.device)
    return {"step_s": (time.perf_counter() - start) / steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--methods", nargs="+", default=["fullft", "lora"])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. train.precision=fp32")
    args = ap.parse_args()

    print(f"model={args.model} batch={args.batch_size} seq_len={args.seq_len} steps={args.steps} "
          f"repeats={args.repeats} torch_threads={torch.get_num_threads()}")
    print(f"{'method':<8} {'trainable':>11} {'harness ms':>11} {'bare ms':>9} {'ratio':>6} {'tokens/s':>9} {'peak MB':>8}")
    for method in args.methods:
        cfg = compose(f"model={args.model}", f"method={method}", "logger=none", "train.progress=false",
                      f"train.max_steps={args.steps}", f"train.batch_size={args.batch_size}", *args.overrides)
        batch = _fixed_batch(models.build(cfg).tokenizer, args.batch_size, args.seq_len, cfg.task.num_labels,
                             cfg.train.seed)
        time_harness(cfg, batch, 3), time_bare(cfg, batch, 3)  # warm-up: allocator, kernels, caches
        harness_runs, bare_runs = [], []
        for _ in range(args.repeats):
            harness_runs.append(time_harness(cfg, batch, args.steps))
            bare_runs.append(time_bare(cfg, batch, args.steps))
        h = statistics.median(r["step_s"] for r in harness_runs)
        b = statistics.median(r["step_s"] for r in bare_runs)
        tokens = args.batch_size * args.seq_len / h
        print(f"{method:<8} {harness_runs[0]['trainable']:>11,} {h * 1e3:>11.1f} {b * 1e3:>9.1f} {h / b:>6.3f} "
              f"{tokens:>9.0f} {harness_runs[-1]['peak_memory_mb']:>8.0f}", flush=True)
        print(f"         per-repeat harness ms {[round(r['step_s'] * 1e3, 1) for r in harness_runs]}"
              f" bare ms {[round(r['step_s'] * 1e3, 1) for r in bare_runs]}")


if __name__ == "__main__":
    main()
