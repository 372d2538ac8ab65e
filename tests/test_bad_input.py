"""Every bad input ends with one clear line on stderr, exit status 2, before any training,
and leaves no success record behind (docs/bad-input.md lists these cases).

Each case runs through the CLI's own entry point: `harness.__main__.cli` with sys.argv set, in this
process (conftest.cli_in_process), so it takes the CLI's path (Hydra's composition, the schema, the
checks, preflight, the one-line message and the exit status) without a new interpreter per case. One
case per class of error also runs as a real `python -m harness` process (CLI_SMOKE), so the process
wiring (entry point, stderr, exit status) stays tested for each class."""

import json

import pytest

from conftest import cli, cli_in_process, run_tiny

# One real process per class of error: (class, overrides, fragment of the one-line message)
CLI_SMOKE = [
    ("unknown group option", ["task=sst3"], "unknown task 'sst3' (did you mean 'sst2'?)"),
    ("unknown key", ["train.batchsize=4"], "unknown config key 'train.batchsize' (did you mean 'train.batch_size'?)"),
    ("key added with +", ["+train.warmup_step=4"],
     "unknown config key 'train.warmup_step' (did you mean 'train.warmup_steps'?)"),
    ("override grammar", ["method=loreft", "method.layers=0;2;4"],
     "cannot parse override 'method.layers=0;2;4': unexpected character ';' at position 16"),
    ("value type", ["train.batch_size=abc"], "bad value for 'train.batch_size'"),
    ("range check", ["train.seed=-1"], "train.seed must be in [0, 2**32 - 1] (got -1)"),
    ("model preflight", ["method.target_modules=nothing_matches"], "matches no linear module"),
]
# (the data class: test_missing_data_dir; a sweep's up-front check: test_sweep_refuses_an_added_key_up_front;
# a run directory in use: tests/test_locks.py; all real processes)

# The same checks in-process: (overrides, fragment of the one-line message)
CASES = [
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
    (["+train.warmup_step=4"], "unknown config key 'train.warmup_step' (did you mean 'train.warmup_steps'?)"),
    (["method=loreft", "method.layers=0;2;4"],
     "cannot parse override 'method.layers=0;2;4': unexpected character ';' at position 16"),
    (["train.seed=-1"], "train.seed must be in [0, 2**32 - 1] (got -1)"),
    # keys that `+` / `++` add are checked against the schemas (dataclasses) again, recursively
    (["+method.rnak=4"], "unknown config key 'method.rnak'; valid keys here: kind, label"),
    (["+train.no_such_key=1"], "unknown config key 'train.no_such_key'; valid keys here: seed,"),
    (["++train.foo=1"], "unknown config key 'train.foo'"),
    (["+train.warmup_step=4"], "unknown config key 'train.warmup_step' (did you mean 'train.warmup_steps'?)"),
    (["++train.warmup_step=4"], "unknown config key 'train.warmup_step' (did you mean 'train.warmup_steps'?)"),
    (["+task.num_label=3"], "unknown config key 'task.num_label' (did you mean 'task.num_labels'?)"),
    (["+logger.api_key=x"], "unknown config key 'logger.api_key'"),
    (["+eval.seed=1"], "unknown config key 'eval.seed'"),
    (["+model.arhc=encoder"], "unknown config key 'model.arhc' (did you mean 'model.arch'?)"),
    (["method=loreft", "+method.rank=4"], "unknown config key 'method.rank'"),
    (["method=loreft", "+method.alpha=4"], "unknown config key 'method.alpha'"),  # a LoRA knob on ReFT
    (["+foo.bar=1"], "unknown top-level config key(s) ['foo']"),
    # Hydra's override grammar: one line naming the override, what is wrong, and how to quote
    (["task=sst2é"], "cannot parse override 'task=sst2é': unexpected character 'é' at position 10"),
    (["method=loreft", "method.layers=0;2;4"], "quoted, the whole override in single quotes for the shell:"
                                               " 'method.layers=\"0;2;4\"'"),
    (["method.r=[1"], "cannot parse override 'method.r=[1': no viable alternative at input '[1'; brackets must balance"),
    (["train.seed=${oc.env:X"], "cannot parse override 'train.seed=${oc.env:X'"),
    (["+train=1"], "cannot compose the config: Config group override must be a string or a list"),
    # config-only ranges
    (["train.seed=4294967296"], "train.seed must be in [0, 2**32 - 1] (got 4294967296)"),
    (["train.seed=-1"], "train.seed must be in [0, 2**32 - 1] (got -1)"),
    (["eval.split_seed=-3"], "eval.split_seed must be in [0, 2**32 - 1] (got -3)"),
    (["train.adam_beta1=1"], "train.adam_beta1 must be in [0, 1) (got 1.0)"),
    (["train.adam_beta1=-0.1"], "train.adam_beta1 must be in [0, 1) (got -0.1)"),
    (["train.adam_beta2=1.5"], "train.adam_beta2 must be in [0, 1) (got 1.5)"),
    (["train.adam_eps=0"], "train.adam_eps must be > 0 (got 0.0)"),
    (["train.adam_eps=-1e-8"], "train.adam_eps must be > 0"),
    (["train.max_steps=null", "train.epochs=inf"], "train.epochs must be a finite number (got inf)"),
    (["train.weight_decay=inf"], "train.weight_decay must be a finite number (got inf)"),
    (["method.alpha=inf"], "method.alpha must be a finite number (got inf)"),
    (["method.dropout=nan"], "method.dropout must be a finite number (got nan)"),
    (["train.warmup_ratio=nan"], "train.warmup_ratio must be a finite number (got nan)"),
    (["train.base_lr=inf"], "train.base_lr must be a finite number (got inf)"),
    (["train.max_grad_norm=-inf"], "train.max_grad_norm must be a finite number (got -inf)"),
    (["method.lr_multiplier=nan"], "method.lr_multiplier must be a finite number (got nan)"),
    (["method=loreft", "method.dropout=inf"], "method.dropout must be a finite number"),
    (["+model.from_config.layer_norm_eps=nan"], "model.from_config.layer_norm_eps must be a finite number"),
    (["task.num_labels=1"], "task.num_labels must be 1 for a regression task and >= 2 for a classification task"
                            " (got task.label_type=classification, task.num_labels=1)"),
    (["task=stsb", "task.num_labels=2"], "(got task.label_type=regression, task.num_labels=2)"),
    (["task=stsb", "task.label_scaling=zscore"],
     "task.label_scaling must be one of ('standardize', 'none') (got 'zscore')"),
    (["task.label_type=ordinal"], "task.label_type must be one of ('classification', 'regression') (got 'ordinal')"),
    (["train.device=gpu"], "train.device must be auto, cpu, cuda or cuda:N (got 'gpu')"),
    (["train.device=cuda:x"], "train.device must be auto, cpu, cuda or cuda:N"),
    (["task.text_fields=[a,b,c]"], "task.text_fields must name one or two fields"),
    (["task.text_fields=[]"], "task.text_fields must name one or two fields"),
]


def _assert_one_line(proc, fragment):
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("harness: error: ") and fragment in lines[0], lines[0]


def _assert_no_success(run_dir):
    record = run_dir / "result.json"
    assert not record.exists() or json.loads(record.read_text())["status"] != "success"


@pytest.mark.parametrize("kind,overrides,fragment", CLI_SMOKE, ids=[c[0] for c in CLI_SMOKE])
def test_bad_input_is_one_line_from_the_real_cli(kind, overrides, fragment, mirror, tmp_path):
    run_dir = tmp_path / "run"
    proc = cli("model=tiny_bert", "logger=none", *overrides, f"hydra.run.dir={run_dir}",
               env={"HARNESS_DATA_DIR": str(mirror)})
    _assert_one_line(proc, fragment)
    _assert_no_success(run_dir)
    assert not run_dir.exists()  # refused before anything was written


@pytest.mark.parametrize("overrides,fragment", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_line(overrides, fragment, mirror, tmp_path):
    run_dir = tmp_path / "run"
    proc = cli_in_process("model=tiny_bert", "logger=none", *overrides, f"hydra.run.dir={run_dir}",
                          env={"HARNESS_DATA_DIR": str(mirror)})
    _assert_one_line(proc, fragment)
    _assert_no_success(run_dir)
    assert not run_dir.exists()  # refused before anything was written


def test_max_length_below_needs(mirror, tmp_path):
    # MRPC pairs need [CLS] a [SEP] b [SEP]: 3 special tokens + 2 fields = 5
    proc = cli_in_process("model=tiny_bert", "logger=none", "task=mrpc", "task.max_length=4",
                          f"hydra.run.dir={tmp_path / 'r'}", env={"HARNESS_DATA_DIR": str(mirror)})
    _assert_one_line(proc, "task.max_length=4 is below what this run needs (5")
    _assert_no_success(tmp_path / "r")


def test_missing_data_dir(tmp_path):
    # the data class of error, through a real process (what a newcomer without a mirror meets first)
    proc = cli("model=tiny_bert", "logger=none", f"hydra.run.dir={tmp_path / 'r'}",
               env={"HARNESS_DATA_DIR": str(tmp_path / "no_such_dir")})
    _assert_one_line(proc, "is not a directory")
    assert not (tmp_path / "r").exists()  # nothing left behind


def test_split_missing_from_mirror(mirror, tmp_path):
    proc = cli_in_process("model=tiny_bert", "logger=none", "task=qnli", f"hydra.run.dir={tmp_path / 'r'}",
                          env={"HARNESS_DATA_DIR": str(mirror)})
    _assert_one_line(proc, "split 'train' is missing from the local mirror")


def test_existing_success_is_not_overwritten(use_mirror, tmp_path):
    run_tiny(tmp_path / "run")
    before = (tmp_path / "run/result.json").read_bytes()
    proc = cli_in_process("model=tiny_bert", "logger=none", f"hydra.run.dir={tmp_path / 'run'}",
                          env={"HARNESS_DATA_DIR": str(use_mirror)})
    _assert_one_line(proc, "already holds a successful run")
    assert (tmp_path / "run/result.json").read_bytes() == before


@pytest.mark.parametrize("overrides", [
    ["+model.from_config.extra_setting=1"],  # mapping fields take free keys
    ["+task.eval_splits.extra=validation", "task.report_metric=accuracy_validation"],
    ["train.seed=0"], ["train.seed=4294967295"], ["train.adam_beta1=0"], ["train.device=cuda:1"],
    ["train.max_grad_norm=null"], ["task=mrpc"], ["task=stsb"],
], ids=lambda o: " ".join(o))
def test_good_config_passes(overrides):
    from conftest import compose
    from harness.config import validate
    validate(compose("model=tiny_bert", "logger=none", *overrides))


def test_added_key_leaves_refused_run_dir_untouched(mirror, tmp_path):
    """A refused run into a directory that holds an earlier (failed) attempt changes nothing there."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "result.json").write_text(json.dumps({"status": "failed", "run_id": "x"}))
    (run_dir / "note.txt").write_text("keep me")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    proc = cli_in_process("model=tiny_bert", "logger=none", "++train.warmup_step=4", f"hydra.run.dir={run_dir}",
                          env={"HARNESS_DATA_DIR": str(mirror)})
    _assert_one_line(proc, "unknown config key 'train.warmup_step' (did you mean 'train.warmup_steps'?)")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_sweep_refuses_an_added_key_up_front(mirror, tmp_path):
    """The grid sweeper validates every job before launching any: nothing is written."""
    sweep_dir = tmp_path / "sweep"
    proc = cli("-m", "model=tiny_bert", "logger=none", "train.seed=1,2", "+train.warmup_step=4",
               f"hydra.sweep.dir={sweep_dir}", env={"HARNESS_DATA_DIR": str(mirror)})
    _assert_one_line(proc, "unknown config key 'train.warmup_step' (did you mean 'train.warmup_steps'?)")
    assert "sweep job 0" in proc.stderr
    assert not sweep_dir.exists()
