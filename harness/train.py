"""THE training loop, shared by every method. It calls method hooks and never names a method.

Per optimizer step: `grad_accum` micro-batches forward/backward -> clip -> optimizer.step() ->
method.on_optimizer_step(step) (gradients still present) -> scheduler.step() -> zero_grad().
Logged every `log_every` steps: train/loss (task loss from the logits, comparable across methods),
train/objective (what was minimised, incl. any method regulariser), train/lr, train/grad_norm.
Evaluated every `eval_every` steps and after the last one.
"""

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import List

import torch  # this module is imported only when a run starts, never during config validation
import torch.nn.functional as F

from harness.errors import HarnessError


class Diverged(RuntimeError):
    reason = "diverged"


@dataclass
class LoopResult:
    steps: int
    train_seconds: float
    step_seconds_median: float
    train_tokens: int  # real (non-pad) tokens
    padded_tokens: int = 0  # tokens computed (batch x padded length): padded/real is the padding overhead
    step_durations: List[float] = field(default_factory=list)  # per step, CPU-exact (benchmarks)
    rank_history: List[dict] = field(default_factory=list)  # [{"step", "total"}]
    final_ranks: dict = field(default_factory=dict)
    resumed_from_step: int = 0  # 0: trained from scratch


def count_total_steps(tcfg, n_train: int) -> int:
    if tcfg.max_steps is not None:
        return int(tcfg.max_steps)
    per_epoch = math.ceil(n_train / (tcfg.batch_size * tcfg.grad_accum))
    return max(1, math.ceil(tcfg.epochs * per_epoch))


def count_warmup_steps(tcfg, total: int) -> int:
    warmup = tcfg.warmup_steps if tcfg.warmup_steps is not None else int(round(tcfg.warmup_ratio * total))
    if warmup >= total:
        raise HarnessError(f"warm-up ({warmup} steps) leaves no training in {total} total steps")
    return warmup


def build_optimizer(model, tcfg, lr: float, method=None):
    """AdamW over the trainable parameters, one group per (weight decay, LR): the method's
    `lr_scale` hook may give some parameters a multiple of the run's LR (LoRA+'s B matrices).
    Groups at the run's LR come first, so the logged train/lr is the run's."""
    groups = {}  # (LR scale != 1, no decay, scale) -> params, in model order within a group
    for name, p in model.named_parameters():
        if p.requires_grad:
            # No decay on biases and norms, nor on the unconstrained tensor behind a parametrization:
            # torch's orthogonal (Householder) map multiplies by int(diag(original)), so decaying it
            # below 1 silently zeroes LoReFT's R.
            plain_matrix = p.ndim >= 2 and ".parametrizations." not in name
            scale = 1.0 if method is None else float(method.lr_scale(name))
            groups.setdefault((scale != 1.0, not plain_matrix, scale), []).append(p)
    if not groups:
        raise HarnessError("the method left no trainable parameter")
    param_groups = [{"params": ps, "weight_decay": 0.0 if no_decay else tcfg.weight_decay, "lr": lr * scale}
                    for (_, no_decay, scale), ps in sorted(groups.items(), key=lambda g: g[0])]
    return torch.optim.AdamW(param_groups, lr=lr, betas=(tcfg.adam_beta1, tcfg.adam_beta2), eps=tcfg.adam_eps)


def build_scheduler(optimizer, tcfg, total: int, warmup: int):
    from transformers import get_scheduler
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[tcfg.schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total)


def task_loss(logits, labels, regression: bool):
    logits = logits.float()
    if regression:
        return F.mse_loss(logits.squeeze(-1), labels.float())
    return F.cross_entropy(logits, labels)


def _grad_norm(params, max_norm):
    return torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm is not None else float("inf"))


@dataclass
class LoopState:
    """Everything the loop carries from one step to the next; a checkpoint stores it as a dict.
    Checkpoints are taken at log boundaries (checkpoint_every is a multiple of log_every), so the
    running loss window is always empty there."""
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already consumed
    tokens: int = 0
    padded_tokens: int = 0
    durations: List[float] = field(default_factory=list)
    window_means: List[float] = field(default_factory=list)
    rank_history: List[dict] = field(default_factory=list)


def train(model, method, loader, evaluator, tracker, runtime, tcfg, total: int, lr: float,
          regression: bool, checkpointer=None, faults=None) -> LoopResult:
    """Train for `total` optimizer steps. `loader` has iterate(epoch, start) (harness.data) or is a
    list of batches. With a checkpointer, state is saved every `checkpoint_every` steps and on
    preemption, and a run whose checkpoint exists continues from it (resumed_from_step is set)."""
    from tqdm.auto import tqdm

    from harness import data, preemption
    from harness.faults import Injector

    if not hasattr(loader, "iterate"):
        loader = data.FixedBatches(loader)
    faults = faults or Injector("", spec="")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(model, tcfg, lr, method)
    scheduler = build_scheduler(optimizer, tcfg, total, count_warmup_steps(tcfg, total))
    state = LoopState()
    if checkpointer is not None and checkpointer.dir.is_dir():
        state = LoopState(**checkpointer.load(model, optimizer, scheduler, method, evaluator))
        print(f"[harness] resumed from the checkpoint at step {state.step}")
    resumed_from = state.step
    batches = loader.iterate(state.epoch, state.batch_in_epoch)
    model.train()
    reset_peak_memory(runtime)

    def log_ranks(step: int) -> dict:
        ranks = method.rank_snapshot(model)
        if ranks:
            total_rank = int(sum(ranks.values()))
            budget = method.rank_budget(model, step)
            extra = {"rank/total": total_rank, **({} if budget is None else {"rank/budget": budget})}
            tracker.log(step, {**{f"rank/{k}": v for k, v in ranks.items()}, **extra})
            state.rank_history.append({"step": step, "total": total_rank,
                                       **({} if budget is None else {"budget": budget})})
        return ranks

    def save_checkpoint() -> None:
        checkpointer.save(state.step, model, optimizer, scheduler, method, evaluator, asdict(state))

    if state.step == 0:
        log_ranks(0)
    window_loss = window_objective = 0.0
    window_steps, window_seconds, window_tokens = 0, 0.0, state.tokens
    bar = tqdm(total=total, initial=state.step, disable=not tcfg.progress, desc="train", dynamic_ncols=True)
    try:  # the bar is closed on any exit, so a one-line error never lands glued to it
        for step in range(state.step + 1, total + 1):
            start = time.perf_counter()
            loss_sum = objective_sum = 0.0
            for _ in range(tcfg.grad_accum):
                state.epoch, b, batch = next(batches)
                state.batch_in_epoch = b + 1
                state.tokens += int(batch["attention_mask"].sum())
                state.padded_tokens += batch["attention_mask"].numel()
                batch = runtime.to_device(batch)
                with runtime.autocast():
                    out = model(**batch)
                (out.loss / tcfg.grad_accum).backward()
                objective_sum = objective_sum + out.loss.detach()
                loss_sum = loss_sum + task_loss(out.logits.detach(), batch["labels"], regression)
            grad_norm = _grad_norm(params, tcfg.max_grad_norm)
            optimizer.step()
            method.on_optimizer_step(step, model)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum = faults.after_step(step, loss_sum)
            window_loss = window_loss + loss_sum / tcfg.grad_accum
            window_objective = window_objective + objective_sum / tcfg.grad_accum
            window_steps += 1
            state.step = step

            log_now = step % tcfg.log_every == 0 or step == total
            if log_now:
                loss = float(window_loss) / window_steps  # the only host sync: once per log window
                objective = float(window_objective) / window_steps
                if not math.isfinite(loss) or not math.isfinite(objective):
                    raise Diverged(f"loss is {loss} at step {step}")
                tracker.log(step, {"train/loss": loss, "train/objective": objective,
                                   "train/lr": scheduler.get_last_lr()[0], "train/grad_norm": float(grad_norm),
                                   "train/epoch": state.epoch})
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            elapsed = time.perf_counter() - start
            state.durations.append(elapsed)
            window_seconds += elapsed
            if log_now:
                state.window_means.append(window_seconds / window_steps)
                tracker.log(step, {"train/step_seconds": window_seconds / window_steps,
                                   "train/tokens_per_second": (state.tokens - window_tokens) / window_seconds})
                window_loss = window_objective = 0.0
                window_steps, window_seconds, window_tokens = 0, 0.0, state.tokens
            bar.update(1)
            if method.rank_interval and step % method.rank_interval == 0:
                log_ranks(step)

            if step % tcfg.eval_every == 0 or step == total:
                scores = evaluator.evaluate(model, step)
                tracker.log(step, scores)
                if scores:
                    bar.write(f"step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in scores.items()))
            if checkpointer is not None and (checkpointer.due(step, total) or preemption.pending()):
                save_checkpoint()
            if preemption.pending():
                bar.close()
                preemption.hand_over()  # submitit requeues the job and exits
    finally:
        bar.close()
    final_ranks = (log_ranks(total) if not state.rank_history or state.rank_history[-1]["step"] != total
                   else method.rank_snapshot(model))
    return LoopResult(steps=total, train_seconds=sum(state.durations),
                      step_seconds_median=statistics.median(state.window_means), train_tokens=state.tokens,
                      padded_tokens=state.padded_tokens, step_durations=state.durations,
                      rank_history=state.rank_history, final_ranks=final_ranks, resumed_from_step=resumed_from)


def _reset_process_peak() -> bool:
    """Linux: writing 5 to /proc/self/clear_refs resets the peak RSS (VmHWM), so each run of a
    sequential sweep measures its own peak, not the process's so far."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def reset_peak_memory(runtime) -> None:
    if runtime.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    else:
        _reset_process_peak()


def peak_memory(runtime) -> dict:
    """Peak memory in MB during this run: CUDA max allocated on GPU, else the process's peak RSS
    since training started (VmHWM after a reset; max RSS of the whole process where that is unavailable)."""
    import re
    import resource

    if runtime.device.startswith("cuda"):
        return {"peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20, "peak_memory_kind": "cuda_max_allocated"}
    try:
        with open("/proc/self/status") as fh:
            hwm_kb = int(re.search(r"VmHWM:\s+(\d+)", fh.read()).group(1))
        return {"peak_memory_mb": hwm_kb / 1024, "peak_memory_kind": "process_peak_rss_since_train_start"}
    except (OSError, AttributeError):
        return {"peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "peak_memory_kind": "process_max_rss"}
