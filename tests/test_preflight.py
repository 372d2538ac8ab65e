"""Preflight: bad input that needs the model's config, the tokenizer or the data is refused before
anything trains, with one line naming the setting; in a sweep, for every job before the first.
No test here trains: preflight builds the model on the meta device and reads only parquet files."""

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import CONF, cli_in_process, compose
from harness import data, preflight as pf_mod
from harness.config import validate
from harness.errors import HarnessError
from harness.preflight import preflight


def _check(*overrides, model="tiny_bert"):
    cfg = compose(f"model={model}", "logger=none", *overrides)
    validate(cfg)
    return preflight(cfg)


def _refused(fragment, *overrides, model="tiny_bert"):
    with pytest.raises(HarnessError) as err:
        _check(*overrides, model=model)
    message = str(err.value)
    assert "\n" not in message and fragment in message, message
    return message


# -- the model: its config, widths, layers and positions (meta device, no weights) -------------------

MODEL_CASES = [
    # (overrides, fragment naming the setting and the allowed range)
    (["method.r=64"], "method.r=64 exceeds the smallest in/out width of the layers it adapts on model 'tiny_bert'"
                      " (32: bert.encoder.layer.0.attention.self.query is 32->32); allowed: 1..32"),
    (["method.r=100000"], "method.r=100000 exceeds the smallest in/out width"),
    (["method=dora", "method.r=33"], "method.r=33 exceeds the smallest in/out width"),
    (["method=lori_d", "method.r=33"], "method.r=33 exceeds the smallest in/out width"),
    (["method=lora", "method.r=33", "method.target_modules=mlp"], "allowed: 1..32"),
    (["method=adalora", "method.init_r=40", "method.target_r=8"], "method.init_r=40 exceeds the smallest in/out width"),
    (["method=vera", "method.r=100000"], "method.r=100000 exceeds the in x out of the layers it adapts"
                                         " on model 'tiny_bert' (1024"),
    (["method=loreft", "method.r=33"], "method.r=33 exceeds the hidden size of model 'tiny_bert' (32)"),
    (["method=noreft", "method.r=64"], "allowed: 1..32"),
    (["method=loreft", "method.layers='0;7'"], "method.layers='0;7': model 'tiny_bert' has 2 layers,"
                                               " so indices must lie in 0..1 (got [7])"),
    (["method=loreft", "method.layers='-1'"], "indices must lie in 0..1 (got [-1])"),
    (["task.max_length=100000"], "task.max_length=100000 exceeds what model 'tiny_bert' can take (512 positions)"),
    (["task=boolq", "task.max_length=513"], "task.max_length=513 exceeds what model 'tiny_bert' can take"),
    (["++model.from_config.hidden_size=30"], "model.from_config (model 'tiny_bert') is rejected by transformers"
                                             " (ValueError: The hidden size (30) is not a multiple"),
    (["++model.from_config.model_type=no_such_arch"], "model.from_config (model 'tiny_bert') is rejected"),
    (["++model.from_config.vocab_size=100"], "model.from_config.vocab_size=100: the tokenizer has 30522 tokens"),
    (["model.tokenizer=/no/such/tokenizer"], "model.tokenizer=/no/such/tokenizer: no such directory"),
    (["method=ia3", "method.target_modules=nothing"], "method.target_modules='nothing' matches no linear module"),
]


@pytest.mark.parametrize("overrides,fragment", MODEL_CASES, ids=[" ".join(c[0]) for c in MODEL_CASES])
def test_model_dependent_bad_input(overrides, fragment, use_mirror):
    _refused(fragment, *overrides)


@pytest.mark.parametrize("path", ["./no/such/model", "../no/such/model", "/no/such/model", "'~/no/such/model'"])
def test_local_model_path_that_does_not_exist(path, use_mirror):
    shown = path.strip("'")
    _refused(f"model.pretrained={shown}: no such directory", f"model.pretrained={path}", model="minilm")


def test_bitfit_on_a_model_without_biases(use_mirror):
    _refused("bitfit: model 'tiny_llama' has no bias terms", "method=bitfit", model="tiny_llama")


def test_limits_are_inclusive(use_mirror):
    _check("method.r=32")
    _check("method=loreft", "method.r=32", "method.layers='0;1'")
    _check("task.max_length=512")
    _check("method=vera")  # r=256 > width 32 is VeRA's usual regime (the paper: r=1024 on a 768 model)


def _continues_a_run(name) -> bool:
    """lori_s needs a finished lori_d run (method.source_run), which preflight cannot make up."""
    from harness.methods import METHODS
    return METHODS.get(compose(f"method={name}").method.kind).source_run_kind is not None


METHOD_YAMLS = sorted(p.stem for p in (CONF / "method").glob("*.yaml") if not _continues_a_run(p.stem))


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_llama"])
def test_every_method_default_passes(model, use_mirror):
    """No false alarms: every method's defaults fit both tiny models (lori_s needs a lori_d run)."""
    for method in METHOD_YAMLS:
        if method == "bitfit" and model == "tiny_llama":
            continue
        _check(f"method={method}", model=model)


@pytest.mark.parametrize("task", ["sst2", "mrpc", "stsb", "mnli", "boolq"])
@pytest.mark.parametrize("protocol", ["last", "split_val"])
def test_every_mirrored_task_passes(task, protocol, use_mirror):
    result = _check(f"task={task}", f"eval={protocol}")
    assert result["rows"][compose(f"task={task}").task.train_split] == 64
    assert result["data"]["value"].startswith("mirror:")


@pytest.mark.parametrize("name", ["smoke", "lora_vs_reft", "rank_sweep", "adalora_budget"])
def test_every_job_of_the_named_sweeps_passes(name, use_mirror):
    """The sweeps' own grids (LoRA r up to 256 on MiniLM, LoReFT r 32) are within the limits."""
    from harness.sweeper import plan
    for block in plan(name, []):
        for job in block:
            cfg = compose(*job)
            validate(cfg)
            preflight(cfg)


def test_pretrained_position_limit_subtracts_the_padding_offset():
    """RoBERTa-style learned positions start after the padding index: 514 embeddings, 512 tokens."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification
    config = AutoConfig.for_model("roberta", max_position_embeddings=514, num_hidden_layers=1, hidden_size=32,
                                  num_attention_heads=4, intermediate_size=64)
    with torch.device("meta"):
        meta = AutoModelForSequenceClassification.from_config(config)
    assert pf_mod._position_limit(config, meta) == 512


def test_model_info_is_cached_per_model_and_head(use_mirror):
    a = pf_mod.model_info(compose("model=tiny_bert"))
    assert pf_mod.model_info(compose("model=tiny_bert", "method=loreft", "train.seed=3")) is a
    assert pf_mod.model_info(compose("model=tiny_bert", "task=mnli")) is not a  # 3 labels: another head
    assert a.meta.bert.embeddings.word_embeddings.weight.is_meta  # never any real weights


def test_refused_run_writes_nothing(use_mirror, tmp_path):
    from conftest import run_tiny
    with pytest.raises(HarnessError, match="method.r=64 exceeds"):
        run_tiny(tmp_path / "run", "method.r=64")
    assert not (tmp_path / "run").exists()


# -- the data: a tmp copy of the synthetic mirror with one odd file ---------------------------------

@pytest.fixture
def odd_mirror(mirror, tmp_path, monkeypatch):
    """A writable copy of the synthetic mirror; returns write(relative path, columns) to replace a file."""
    root = tmp_path / "mirror"
    shutil.copytree(mirror, root)
    monkeypatch.setenv("HARNESS_DATA_DIR", str(root))

    def write(rel, columns):
        path = root / rel
        pq.write_table(pa.table(columns), path)  # NaN stays NaN, None is null
        return path
    write.root = root
    return write


def _sst2(labels, texts=None):
    return {"sentence": texts or [f"a fine film number {i}" for i in range(len(labels))], "label": labels}


DATA_CASES = [
    # (file, columns, overrides, fragment)
    ("glue/sst2/train.parquet", _sst2([0, 1, 0.5, 1.5]), [],
     "split 'train' ({root}/glue/sst2/train.parquet): label 'label' has 2 non-integer value(s) (e.g. 0.5 at row 2)"),
    ("glue/sst2/train.parquet", _sst2(["neg", "pos"]), [],
     "label 'label' holds text (e.g. 'neg'); classification labels must be integers 0..num_labels-1"),
    ("glue/sst2/train.parquet", _sst2([0.0, 1.0, None]), [], "label 'label' has 1 missing value(s) (first at row 2)"),
    ("glue/sst2/validation.parquet", _sst2([0, 1, 2, 1]), [],
     "task.num_labels=2: task 'sst2' split 'validation' ({root}/glue/sst2/validation.parquet)"
     " has labels outside 0..1: {2}"),
    ("glue/sst2/validation.parquet", _sst2([-1, -1, -1, -1]), [], "has labels outside 0..1: {-1}"),
    ("glue/sst2/train.parquet", _sst2([1, 1, 1, 1]), [],
     "task.num_labels=2 does not match task 'sst2' split 'train'"),
    ("glue/sst2/train.parquet", _sst2([0, 1], texts=["fine", None]), [],
     "text field 'sentence' has 1 null or empty value(s) (first at row 1)"),
    ("glue/sst2/validation.parquet", _sst2([0, 1, 0], texts=["fine", "", "  "]), [],
     "split 'validation' ({root}/glue/sst2/validation.parquet): text field 'sentence' has 2 null or empty value(s)"),
    ("glue/sst2/train.parquet", {"sentence": [1, 2], "label": [0, 1]}, [],
     "text field 'sentence' holds int64, not text"),
    ("glue/sst2/train.parquet", {"text": ["a", "b"], "label": [0, 1]}, [], "columns ['sentence'] not in the data"),
    ("glue/sst2/train.parquet", {"sentence": pa.array([], pa.string()), "label": pa.array([], pa.int64())}, [],
     "split 'train' ({root}/glue/sst2/train.parquet) has 0 rows"),
    ("glue/sst2/validation.parquet", {"sentence": pa.array([], pa.string()), "label": pa.array([], pa.int64())}, [],
     "split 'validation' ({root}/glue/sst2/validation.parquet) has 0 rows"),
    ("glue/sst2/validation.parquet", _sst2([0, 1, 0]), ["eval=split_val"],
     "has 3 row(s); eval.protocol=split_val (2 per part: select, report) needs at least 4"),
    ("glue/stsb/train.parquet", {"sentence1": ["a", "b", "c"], "sentence2": ["d", "e", "f"],
                                 "label": [1.0, float("nan"), float("inf")]}, ["task=stsb"],
     "label 'label' has 2 NaN/inf value(s) (first at row 1); regression targets must be finite"),
    ("glue/stsb/train.parquet", {"sentence1": ["a"], "sentence2": ["d"], "label": ["high"]}, ["task=stsb"],
     "label 'label' holds text; a regression task needs numbers"),
]


@pytest.mark.parametrize("rel,columns,overrides,fragment", DATA_CASES, ids=[c[3][:40] for c in DATA_CASES])
def test_bad_data_is_refused(rel, columns, overrides, fragment, odd_mirror):
    odd_mirror(rel, columns)
    _refused(fragment.replace("{root}", str(odd_mirror.root)), *overrides)


def test_num_labels_against_the_labels_present(use_mirror):
    _refused("task.num_labels=5 does not match task 'sst2' split 'train'", "task.num_labels=5")
    message = _refused("labels present {0, 1}, expected all of 0..4", "task.num_labels=5")
    assert "train.parquet" in message


def test_small_validation_is_enough_for_last_but_not_split_val(odd_mirror):
    odd_mirror("glue/sst2/validation.parquet", _sst2([1]))
    assert _check("eval=last")["rows"]["validation"] == 1
    _refused("needs at least 4", "eval=split_val")
    odd_mirror("glue/sst2/validation.parquet", _sst2([0, 1, 0, 1]))
    assert _check("eval=split_val")["rows"]["validation"] == 4


def test_integral_float_and_bool_labels_are_fine(odd_mirror):
    odd_mirror("glue/sst2/train.parquet", _sst2([0.0, 1.0, 1.0]))
    _check()
    _check("task=boolq")  # the mirror's BoolQ labels are bools: 0/1


def test_corrupt_parquet_is_named_without_an_offline_hint(odd_mirror):
    path = odd_mirror.root / "glue/sst2/train.parquet"
    path.write_bytes(b"PAR1 this is not parquet " * 8)
    message = _refused(f"task 'sst2': cannot read {path} (ArrowInvalid: ")
    assert "offline" not in message
    with pytest.raises(HarnessError) as err:  # the late path (datasets) says the same, in one line
        data.load_split(compose("task=sst2").task, "train")
    assert str(err.value).startswith(f"task 'sst2': cannot read {path}") and "offline" not in str(err.value)


def test_data_scan_is_cached_per_file(odd_mirror, monkeypatch):
    reads = []
    real = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda path, *a, **k: reads.append(str(path)) or real(path, *a, **k))
    odd_mirror("glue/sst2/train.parquet", _sst2([0, 1, 0, 1]))
    for seed in (1, 2, 3):
        _check(f"train.seed={seed}", "method=loreft")
    assert len(reads) == 2  # train and validation, once each
    odd_mirror("glue/sst2/train.parquet", _sst2([0, 1, 0.5]))  # the file changed: read again
    _refused("non-integer", "train.seed=1")
    assert len(reads) == 3


# -- the CLI: one line, exit 2, nothing launched ---------------------------------------------------
# Through the CLI's entry point in this process (conftest.cli_in_process). A real process per class of
# error (a sweep's up-front check, model preflight, missing data) is in tests/test_bad_input.py.

def _one_line(proc):
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("harness: error: "), proc.stderr
    return lines[0]


def test_sweep_refuses_every_job_before_launching_any(use_mirror, tmp_path):
    sweep_dir = tmp_path / "smoke"
    line = _one_line(cli_in_process("+sweep=smoke", "task.max_length=2", f"hydra.sweep.dir={sweep_dir}"))
    assert "sweep job 0 (" in line and "task.max_length=2 is below what this run needs" in line
    assert not sweep_dir.exists()


def test_sweep_checks_later_jobs_against_the_model(use_mirror, tmp_path):
    """Only a later job is bad (LoRA r=64 on the 32-wide tiny model): still nothing is launched."""
    sweep_dir = tmp_path / "smoke"
    line = _one_line(cli_in_process("+sweep=smoke", "hydra.sweeper.values.lora_ranks=[2,64]",
                                    f"hydra.sweep.dir={sweep_dir}"))
    assert "method.r=64 exceeds the smallest in/out width" in line and "sweep job 0 (" not in line
    assert not sweep_dir.exists()


def test_corrupt_parquet_is_one_line_on_the_cli(odd_mirror, tmp_path):
    path = odd_mirror.root / "glue/sst2/train.parquet"
    path.write_bytes(b"garbage" * 10)
    line = _one_line(cli_in_process("model=tiny_bert", "logger=none", f"hydra.run.dir={tmp_path / 'run'}",
                                    env={"HARNESS_DATA_DIR": str(odd_mirror.root)}))
    assert f"cannot read {path}" in line and "offline" not in line
    assert not (tmp_path / "run").exists()
