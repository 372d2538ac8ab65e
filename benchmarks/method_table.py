"""Every method YAML in conf/method, trained on SST-2 through the harness's own run entry
(harness.run.run_job: the same checks, loop, evaluation and record as `python -m harness`), one
after another, then one markdown table: the LR each used and where it came from (the record's
inferred LR reason), the training loss of the first and the last logged window (metrics.jsonl),
accuracy, adapter / stored / nonzero parameter counts and where the adapter count comes from.

    python benchmarks/method_table.py                             # MiniLM, 60 steps (the issue's table)
    python benchmarks/method_table.py --steps 5                   # MiniLM smoke: every method to success
    python benchmarks/method_table.py --model tiny_bert --steps 3 # a check of this script
    python benchmarks/method_table.py --methods lora,pissa,eva    # a subset

Settings: bf16 where the machine has it (train.precision=auto), length-grouped batches, no logger,
the `last` protocol (evaluated once, after the last step), no checkpoints. Records go to
--out/<method>/ (default runs/method_table-<model>-<steps>); a method whose record there already
succeeded is read back, not rerun, so an interrupted table continues. A method that continues a
finished run (lori_s) gets the run of its source method from the same table. A method that fails
is a row saying why; the table goes on.
"""

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.config import compose  # noqa: E402
from harness.methods import METHODS  # noqa: E402

FIXED = ("task=sst2", "logger=none", "eval=last", "train.progress=false", "train.precision=auto",
         "train.batching=length_grouped", "train.checkpoint_every=null")
COLUMNS = ("method", "lr (source)", "loss first → last window", "accuracy", "adapter", "stored", "nonzero",
           "count source", "flags")


def method_yamls(only=None):
    """conf/method/*.yaml names, the methods that continue another method's run last."""
    names = sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml"))
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise SystemExit(f"unknown method config(s) {unknown}; known: {', '.join(names)}")
        names = [n for n in names if n in only]
    return sorted(names, key=lambda n: _kind(n).source_run_kind is not None)


def _kind(name):
    return METHODS.get(compose(f"method={name}").method.kind)


def run_overrides(args, name, done) -> list:
    steps = args.steps
    overrides = [f"model={args.model}", f"method={name}", *FIXED, f"train.max_steps={steps}",
                 f"train.eval_every={steps}", f"train.log_every={min(10, steps)}"]
    source = _kind(name).source_run_kind
    if source:
        source_yaml = next((n for n, d in done.items() if _kind(n).kind == source), None)
        if source_yaml is None:
            raise RuntimeError(f"needs a finished {source} run in this table (run its YAML too)")
        overrides.append(f"method.source_run={done[source_yaml]}")
    return overrides


def run_one(args, name, done) -> dict:
    """The method's record (run now, or read back from an earlier successful run)."""
    from harness.run import run_job
    run_dir = Path(args.out) / name
    result = run_dir / "result.json"
    if result.is_file() and json.loads(result.read_text()).get("status") == "success":
        return json.loads(result.read_text())
    overrides = run_overrides(args, name, done)
    return run_job(compose(*overrides), run_dir, overrides=overrides)


def loss_windows(run_dir: Path):
    """(first, last) logged train/loss: the mean over the first and the last log window."""
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [e["train/loss"] for e in events if "train/loss" in e]
    return (losses[0], losses[-1]) if losses else (None, None)


def row(name, record, run_dir: Path) -> list:
    lr = record["inferred"]["lr"]
    first, last = loss_windows(run_dir)
    p = record["params"]
    accuracy = record["metrics"].get("accuracy")
    return [name, f"{lr['value']:.2g} ({lr['reason']})", f"{first:.3f} → {last:.3f}",
            f"{accuracy:.3f}" if accuracy is not None else "—", f"{p['adapter']:,}", f"{p['stored']:,}",
            f"{p['nonzero']:,}", p.get("count_source", "—"), ", ".join(record.get("flags", [])) or "—"]


def failed_row(name, exc) -> list:
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return [name, "—", "—", "—", "—", "—", "—", "—", f"failed: {type(exc).__name__}: {message[:160]}"]


def markdown(rows) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm", help="conf/model name (default minilm)")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per method (default 60)")
    parser.add_argument("--methods", default="", help="comma-separated method configs (default: all)")
    parser.add_argument("--out", default=None, help="record root (default runs/method_table-<model>-<steps>)")
    args = parser.parse_args(argv)
    args.out = args.out or str(REPO / "runs" / f"method_table-{args.model}-{args.steps}")
    rows, done = [], {}
    for name in method_yamls([m for m in args.methods.split(",") if m]):
        print(f"[method_table] {name}", flush=True)
        try:
            record = run_one(args, name, done)
            done[name] = Path(args.out) / name
            rows.append(row(name, record, done[name]))
        except Exception as exc:  # noqa: BLE001 - one failing method is a row, not the end of the table
            rows.append(failed_row(name, exc))
    table = markdown(rows)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table.md").write_text(
        f"SST-2, model {args.model}, {args.steps} steps, {' '.join(FIXED)}\n\n{table}\n")
    print(f"\nSST-2, model {args.model}, {args.steps} steps\n\n{table}")
    return 1 if any(r[-1].startswith("failed") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
