"""Golden losses: every method's first logged training losses against values stored in the repository.

Determinism and resume tests compare a run with itself, so a silent change to the training loop,
the data order, a method's initialisation or a YAML default passes them. Here each YAML in
conf/method (and two methods on a decoder) trains 20 real steps through `harness.run.run_job`
(tiny random models, the synthetic mirror of conftest.py, seed 42, loss logged every 2 steps) and
its 10 logged `train/loss` values must match tests/golden/losses.json, keyed "<model>/<method>".

An intended change (new defaults, a fixed bug, new package versions) is accepted by regenerating
the file, which records package versions and the date under "_meta":

    HARNESS_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py

(with -k, only the selected cases are rewritten; stale keys of removed methods are dropped).
Review the diff of tests/golden/losses.json before committing it.
"""

import datetime
import json
import math
import os
import platform
from importlib import metadata
from pathlib import Path

import pytest

from conftest import CONF, compose

GOLDEN = Path(__file__).resolve().parent / "golden" / "losses.json"
REGEN = os.environ.get("HARNESS_REGEN_GOLDEN") == "1"
REGEN_COMMAND = "HARNESS_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py"

METHOD_YAMLS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
DECODER_METHODS = ("lora", "loreft")  # a peft method and a ReFT method on tiny_llama
CASES = [("tiny_bert", m) for m in METHOD_YAMLS] + [("tiny_llama", m) for m in DECODER_METHODS]

STEPS, LOG_EVERY = 20, 2  # 64 training examples / batch 8 = 8 batches: 2.5 epochs, two reshuffles
RUN = ("logger=none", "train.progress=false", "train.seed=42", "train.batch_size=8",
       f"train.max_steps={STEPS}", f"train.log_every={LOG_EVERY}", "train.eval_every=10",
       "train.checkpoint_every=null",
       # fp32: `auto` picks bf16 autocast on CPUs with native bf16 only, and bf16 kernels (AVX512-BF16,
       # AMX) round differently, so a bf16 golden file would hold on one CPU family alone
       "train.precision=fp32",
       # the batches the golden file was made with (length-grouped batching has its own tests)
       "train.batching=random",
       # one thread: CPU reductions are then summed in one order whatever the machine's core count
       "train.num_threads=1")
# Per-method overrides needed by a 20-step run. AdaLoRA's YAML schedule (tinit 20, tfinal 80) is
# sized for 400 steps; this one prunes from step 4 to 14, so rank allocation is in the golden curve.
SHORT = {"adalora": ("method.tinit=4", "method.tfinal=6", "method.deltaT=2")}

# Tolerance, from measurements on this machine (2-core AMD EPYC, torch 2.13 CPU): repeated runs, in
# one process, in fresh processes and in reverse case order, reproduce every loss bit for bit (spread
# 0, with the pinned single thread). Unpinned, 2 or 4 threads move the losses by at most 1.8e-7
# absolute (2.5e-7 relative): that is the size of a changed summation order, as on another CPU or
# BLAS build. The bound atol + rtol*|golden| ~ 9e-5 on losses near 0.8 is ~400x that spread. Real
# changes measured here are far larger: a LoRA init of "gaussian" (B still 0, so only the dynamics
# change) moved 9/10 logged losses of lora/dora/lori_d/lori_s by 2e-4..3e-2, another shuffle seed
# moved every case by up to 2e-1.
RTOL, ATOL = 1e-4, 1e-5

_RECORDED: dict = {}  # regeneration: key -> [[step, loss], ...]
_RUN_DIRS: dict = {}  # (model, method) -> finished run directory (lori_s reads its lori_d run)


def _key(model, method) -> str:
    return f"{model}/{method}"


def test_every_method_yaml_is_covered():
    """Every registered method kind has a YAML here, and every YAML a case (a new method then fails
    test_golden_losses until its golden losses are generated on purpose)."""
    from harness.methods import METHODS
    assert {compose(f"method={m}").method.kind for m in METHOD_YAMLS} == set(METHODS.names()), METHOD_YAMLS
    assert {m for model, m in CASES if model == "tiny_bert"} == set(METHOD_YAMLS)


def test_golden_file_has_no_stale_cases():
    if REGEN:
        pytest.skip("regenerating: stale cases are dropped when the file is written")
    stale = set(_load_golden()) - {"_meta"} - {_key(*c) for c in CASES}
    assert not stale, f"golden cases without a method YAML: {sorted(stale)}; regenerate with: {REGEN_COMMAND}"


@pytest.fixture(scope="module")
def golden_env(mirror, tmp_path_factory):
    """One shared synthetic mirror for the module; torch's thread count restored afterwards."""
    import torch
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_DATA_DIR", str(mirror))
        yield tmp_path_factory.mktemp("golden")
    torch.set_num_threads(threads)
    if REGEN and _RECORDED:
        _write_golden()


def _losses(run_dir: Path) -> list:
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [[e["step"], e["train/loss"]] for e in events if "train/loss" in e]


def _run(root: Path, model: str, method: str) -> Path:
    if (model, method) not in _RUN_DIRS:
        from harness.run import run_job
        from harness.methods import METHODS
        extra = list(SHORT.get(method, ()))
        source = METHODS.get(compose(f"method={method}").method.kind).source_run_kind
        if source:  # lori_s retrains under the masks of this module's own golden lori_d run
            extra.append(f"method.source_run={_run(root, model, source)}")
        overrides = [f"model={model}", f"method={method}", *RUN, *extra]
        run_dir = root / f"{model}-{method}"
        record = run_job(compose(*overrides), run_dir, overrides=overrides)
        assert record["status"] == "success", record.get("error")
        _RUN_DIRS[(model, method)] = run_dir
    return _RUN_DIRS[(model, method)]


def _load_golden() -> dict:
    return json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}


def _write_golden() -> None:
    from harness.provenance import PACKAGES, _cpu_name
    old = _load_golden()
    valid = {_key(*c) for c in CASES}
    entries = {k: v for k, v in old.items() if k in valid}  # keep unselected cases, drop removed ones
    entries.update(_RECORDED)

    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    meta = {
        "regenerate": REGEN_COMMAND,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "packages": {name: version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "overrides": list(RUN),
        "short_schedules": {k: list(v) for k, v in SHORT.items()},
        "tolerance": {"rtol": RTOL, "atol": ATOL},
        "format": "key '<model>/<method>': [[step, train/loss], ...] from metrics.jsonl",
    }
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    # one [step, loss] pair a line: a regenerated file diffs line by line
    body = [f"  {json.dumps(k)}: [\n" + ",\n".join(f"    {json.dumps(pair)}" for pair in entries[k]) + "\n  ]"
            for k in sorted(entries)]
    head = '{\n  "_meta": ' + json.dumps(meta, indent=2).replace("\n", "\n  ")
    GOLDEN.write_text(",\n".join([head, *body]) + "\n}\n")
    print(f"\n[golden] wrote {len(entries)} cases to {GOLDEN}")


@pytest.mark.parametrize("model,method", CASES, ids=[_key(*c) for c in CASES])
def test_golden_losses(golden_env, model, method):
    got = _losses(_run(golden_env, model, method))
    assert len(got) == STEPS // LOG_EVERY and all(math.isfinite(loss) for _, loss in got), got
    key = _key(model, method)
    if REGEN:
        _RECORDED[key] = got
        return
    golden = _load_golden()
    if key not in golden:
        pytest.fail(f"no golden losses for '{key}' in {GOLDEN.relative_to(CONF.parent)}; "
                    f"generate them with: {REGEN_COMMAND}", pytrace=False)
    expected = golden[key]
    assert [s for s, _ in got] == [s for s, _ in expected], f"{key}: logged steps differ"
    bad = [(s, e, g) for (s, g), (_, e) in zip(got, expected) if not abs(g - e) <= ATOL + RTOL * abs(e)]
    if bad:
        lines = "\n".join(f"  step {s:>3}: golden {e:.8f}  got {g:.8f}  (diff {g - e:+.2e})" for s, e, g in bad)
        pytest.fail(f"{key}: {len(bad)}/{len(got)} losses differ from the golden values "
                    f"(rtol {RTOL}, atol {ATOL}):\n{lines}\n"
                    f"If the change is intended, regenerate: {REGEN_COMMAND}", pytrace=False)
