"""Loading from a local mirror, tokenization reuse, and clear errors for missing data."""

import numpy as np
import pytest

from conftest import compose
from harness import data
from harness.errors import HarnessError
from harness.models import build


@pytest.fixture(scope="module")
def tokenizer():
    return build(compose("model=tiny_bert")).tokenizer


KEEP = {"input_ids", "attention_mask", "token_type_ids"}


def test_mirror_loads_and_tokenizes(use_mirror, tokenizer):
    cfg = compose("model=tiny_bert", "task=mrpc", "task.max_length=16")
    assert data.check_available(cfg.task)["value"].startswith("mirror:")
    td = data.prepare(cfg, tokenizer, KEEP)
    assert len(td.train) == 64 and set(td.train.column_names) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert max(len(x) for x in td.train["input_ids"]) <= 16
    es = td.eval_sets["validation"]
    raw = data.load_split(cfg.task, "validation")
    assert np.array_equal(es.labels, np.array(raw["label"]))  # labels stay in original order
    seen = np.concatenate([pos for pos, _ in es.batches()])
    assert sorted(seen.tolist()) == list(range(len(raw)))  # every example predicted exactly once


def test_regression_labels_are_float_and_bool_labels_int(use_mirror, tokenizer):
    stsb = data.prepare(compose("model=tiny_bert", "task=stsb"), tokenizer, KEEP)
    assert isinstance(stsb.train[0]["labels"], float)
    boolq = data.prepare(compose("model=tiny_bert", "task=boolq"), tokenizer, KEEP)
    assert set(boolq.train["labels"]) == {0, 1}


def test_tokenization_is_cached_across_calls(use_mirror, tokenizer):
    cfg = compose("model=tiny_bert", "task=sst2")
    first = data.prepare(cfg, tokenizer, KEEP).train
    second = data.prepare(cfg, tokenizer, KEEP).train
    assert first._fingerprint == second._fingerprint
    assert first.cache_files and first.cache_files[0]["filename"] == second.cache_files[0]["filename"]
    other = data.prepare(compose("model=tiny_bert", "task=sst2", "task.max_length=8"), tokenizer, KEEP).train
    assert other._fingerprint != first._fingerprint


def test_max_train_samples_is_the_same_subset_for_every_seed(use_mirror, tokenizer):
    a = data.prepare(compose("model=tiny_bert", "task.max_train_samples=10", "train.seed=1"), tokenizer, KEEP).train
    b = data.prepare(compose("model=tiny_bert", "task.max_train_samples=10", "train.seed=2"), tokenizer, KEEP).train
    assert len(a) == 10 and a["input_ids"] == b["input_ids"]


def test_missing_split_in_mirror(use_mirror):
    with pytest.raises(HarnessError, match="split 'train' is missing from the local mirror"):
        data.check_available(compose("task=qnli").task)


def test_missing_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(HarnessError, match="is not a directory"):
        data.check_available(compose("task=sst2").task)


def test_real_mirror_sizes(real_mirror):
    cfg = compose("task=sst2")
    assert len(data.load_split(cfg.task, "validation")) == 872
    boolq = data.load_split(compose("task=boolq").task, "validation")
    assert {"question", "passage", "answer"} <= set(boolq.column_names) and len(boolq) == 1000


def test_validate_split_reports_rows_and_labels(use_mirror):
    boolq = data.validate_split(compose("task=boolq").task, "train", train=True)
    assert boolq.rows == 64 and boolq.labels == {0, 1}  # bool labels count as 0/1
    assert data.validate_split(compose("task=stsb").task, "validation").labels is None  # regression


def test_prepare_refuses_labels_that_int_would_truncate(mirror, tmp_path, monkeypatch, tokenizer):
    """Labels 0.5/1.5 were silently truncated by int(); loading the split for training now refuses them."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq
    root = tmp_path / "mirror"
    shutil.copytree(mirror, root)
    pq.write_table(pa.table({"sentence": ["a good film", "a bad film"], "label": [0.5, 1.5]}),
                   root / "glue/sst2/validation.parquet")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(root))
    with pytest.raises(HarnessError, match=r"split 'validation' .*label 'label' has 2 non-integer value\(s\)"):
        data.prepare(compose("model=tiny_bert", "task=sst2", "task.max_length=12"), tokenizer, KEEP)


def test_bundled_data_is_used_offline_without_a_mirror(monkeypatch):
    """A fresh machine with no HARNESS_DATA_DIR and no hub: the mirror shipped with the package,
    recorded as such; a task it lacks is one line pointing at HARNESS_DATA_DIR."""
    from harness import data, hub
    from harness.errors import HarnessError
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    monkeypatch.setattr(hub, "_decision", {"hub": "offline", "reason": "huggingface.co unreachable (2 s probe)"})
    source = data.check_available(compose("task=sst2").task)
    assert source["value"] == f"mirror:{hub.BUNDLED_DATA / 'glue/sst2'}" and "bundled" in source["reason"]
    assert data.load_split(compose("task=boolq").task, "validation").num_rows == 1000
    with pytest.raises(HarnessError, match="'qnli' is not in the data bundled with the package"):
        data.check_available(compose("task=qnli").task)
    monkeypatch.setattr(hub, "_decision", {"hub": "online", "reason": "huggingface.co reachable"})
    assert data.check_available(compose("task=sst2").task)["value"] == "hub:nyu-mll/glue/sst2"  # hub stays the default
