"""Every bad input ends with one clear line on stderr, exit status 2, before any training,
and leaves no success record behind (the README lists these cases)."""

import json

import pytest

from conftest import cli, run_tiny

CASES = [
    # (overrides, fragment of the one-line message)
    (["task=sst3"], "unknown task 'sst3' (did you mean 'sst2'?)"),
    (["model=robeta_base"], "unknown model 'robeta_base' (did you mean 'roberta_base'?)"),
    (["method=lorra"], "unknown method 'lorra' (did you mean 'lora'?)"),
    (["eval=best"], "unknown eval 'best'"),
    (["method.rnak=4"], "unknown config key 'method.rnak'"),
    (["train.batchsize=4"], "unknown config key 'train.batchsize' (did you mean 'train.batch_size'?)"),
    (["+foo=1"], "unknown top-level config key(s) ['foo']"),
    (["train.batch_size=abc"], "bad value for 'train.batch_size'"),
    (["train.base_lr=0"], "train.base_lr must be > 0"),
    (["train.base_lr=-1e-4"], "train.base_lr must be > 0"),
    (["method.lr=-0.001"], "learning rate must be > 0"),
    (["method.lr_multiplier=0"], "learning rate must be > 0"),
    (["method.r=0"], "method.r must be >= 1"),
    (["train.batch_size=0"], "train.batch_size must be > 0"),
    (["train.grad_accum=0"], "train.grad_accum must be > 0"),
    (["train.max_steps=null"], "set exactly one of train.max_steps and train.epochs"),
    (["train.epochs=3"], "set exactly one of train.max_steps and train.epochs"),
    (["train.warmup_steps=400"], "leaves no training after warm-up"),
    (["train.schedule=step"], "train.schedule must be one of"),
    (["eval.protocol=best"], "unknown eval protocol 'best'"),
    (["train.head=pooler"], "train.head must be one of"),
    (["method.target_modules=nothing_matches"], "matches no linear module"),
]


def _assert_one_line(proc, fragment):
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("harness: error: ") and fragment in lines[0], lines[0]


def _assert_no_success(run_dir):
    record = run_dir / "result.json"
    assert not record.exists() or json.loads(record.read_text())["status"] != "success"


@pytest.mark.parametrize("overrides,fragment", CASES, ids=[c[0][0] for c in CASES])
def test_bad_input_is_one_line(overrides, fragment, mirror, tmp_path):
    run_dir = tmp_path / "run"
    proc = cli("model=tiny_bert", "logger=none", *overrides, f"hydra.run.dir={run_dir}",
               env={"HARNESS_DATA_DIR": str(mirror)})
    _assert_one_line(proc, fragment)
    _assert_no_success(run_dir)


def test_max_length_below_needs(mirror, tmp_path):
    # MRPC pairs need [CLS] a [SEP] b [SEP]: 3 special tokens + 2 fields = 5
    proc = cli("model=tiny_bert", "logger=none", "task=mrpc", "task.max_length=4", f"hydra.run.dir={tmp_path / 'r'}",
               env={"HARNESS_DATA_DIR": str(mirror)})
    _assert_one_line(proc, "task.max_length=4 is below what this run needs (5")
    _assert_no_success(tmp_path / "r")


def test_missing_data_dir(tmp_path):
    proc = cli("model=tiny_bert", "logger=none", f"hydra.run.dir={tmp_path / 'r'}",
               env={"HARNESS_DATA_DIR": str(tmp_path / "no_such_dir")})
    _assert_one_line(proc, "is not a directory")
    assert not (tmp_path / "r").exists()  # nothing left behind


def test_split_missing_from_mirror(mirror, tmp_path):
    proc = cli("model=tiny_bert", "logger=none", "task=qnli", f"hydra.run.dir={tmp_path / 'r'}",
               env={"HARNESS_DATA_DIR": str(mirror)})
    _assert_one_line(proc, "split 'train' is missing from the local mirror")


def test_existing_success_is_not_overwritten(use_mirror, tmp_path):
    run_tiny(tmp_path / "run")
    before = (tmp_path / "run/result.json").read_bytes()
    proc = cli("model=tiny_bert", "logger=none", f"hydra.run.dir={tmp_path / 'run'}",
               env={"HARNESS_DATA_DIR": str(use_mirror)})
    _assert_one_line(proc, "already holds a successful run")
    assert (tmp_path / "run/result.json").read_bytes() == before
