"""A tiny run writes a complete, self-describing record; finished runs are never overwritten."""

import json
import os

import pyarrow.parquet as pq
import pytest

from conftest import run_tiny

RESULT_KEYS = {"schema_version", "status", "error", "run_id", "labels", "seed", "overrides", "started_at",
               "finished_at", "report_metric", "metrics", "evaluation", "params", "cost", "inferred",
               "provenance", "config", "data", "ranks", "method_report", "flags", "attempts", "config_id", "baseline",
               "execution", "wandb_id"}
PARAM_KEYS = {"adapter", "head", "trainable", "base_total", "stored", "nonzero", "adapter_pct_of_base",
              "trainable_pct_of_base", "count_source"}
COST_KEYS = {"train_seconds", "eval_seconds", "wall_seconds", "steps", "step_seconds_median", "tokens_per_second",
             "train_tokens", "padded_tokens", "padded_per_real_token", "peak_memory_mb", "peak_memory_kind"}
INFERRED_KEYS = {"hub", "data", "device", "precision", "cpu_threads", "pad_token", "lr", "total_steps", "head"}


def _events(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tiny_run_writes_complete_record(use_mirror, tmp_path):
    record = run_tiny(tmp_path / "run")
    on_disk = json.loads((tmp_path / "run/result.json").read_text())
    assert record.pop("record_dir") == str(tmp_path / "run")  # where the record lives (sweeps use it)
    assert on_disk == json.loads(json.dumps(record, default=str))
    assert on_disk["attempts"] == [{"started_at": on_disk["started_at"], "resumed_from_step": 0}]
    assert set(on_disk) == RESULT_KEYS
    assert on_disk["status"] == "success" and on_disk["error"] is None
    assert len(on_disk["run_id"]) == 16
    assert set(on_disk["metrics"]) == {"accuracy"} and 0 <= on_disk["metrics"]["accuracy"] <= 1
    assert set(on_disk["params"]) == PARAM_KEYS and on_disk["params"]["count_source"] == "closed_form"
    assert set(on_disk["cost"]) == COST_KEYS and on_disk["cost"]["tokens_per_second"] > 0
    assert INFERRED_KEYS <= set(on_disk["inferred"]) and "target_modules" in on_disk["inferred"]
    assert on_disk["labels"] == {"task": "sst2", "task_version": "1", "model": "tiny_bert", "model_version": "1",
                                 "method": "lora", "method_kind": "lora", "method_version": "1"}
    assert len(on_disk["config_id"]) == 16 and on_disk["config_id"] != on_disk["run_id"]
    # what precision=auto resolved to on this CPU (tests/test_precision.py fakes both kinds of CPU)
    assert on_disk["execution"] == {"device_type": "cpu", "precision": on_disk["inferred"]["precision"]["value"]}
    assert ("fp32_modules" in on_disk["inferred"]) == (on_disk["execution"]["precision"] == "bf16")
    base = on_disk["baseline"]
    assert base["predictor"] == "majority" and set(base["metrics"]) == {"accuracy"} and base["part"] == "full"
    assert sum(base["prediction_distribution"].values()) == sum(base["label_distribution"].values()) == 40
    assert base["prior_loss"] == pytest.approx(0.6931, abs=1e-3)  # the synthetic mirror is balanced
    assert ("at_baseline" in on_disk["flags"]) == base["at_baseline"]
    prov = on_disk["provenance"]
    assert {"git_sha", "git_dirty", "git_diff_sha256", "packages", "device", "weights", "data"} <= set(prov)
    assert prov["packages"]["peft"] == "0.21.2" and prov["weights"]["kind"] == "random init from config"
    assert set(prov["data"]) == {"train", "validation"} and len(prov["data"]["train"]["sha256"]) == 64
    assert (tmp_path / "run/config.yaml").is_file()

    events = _events(tmp_path / "run")
    train_events = [e for e in events if "train/loss" in e]
    assert [e["step"] for e in train_events] == [2, 4, 6]
    assert all({"train/lr", "train/grad_norm", "train/objective"} <= set(e) for e in train_events)
    assert [e["step"] for e in events if "eval/accuracy" in e] == [3, 6]


def test_split_val_decoder_fullft_record(use_mirror, tmp_path):
    record = run_tiny(tmp_path / "run", "model=tiny_llama", "method=fullft", "eval=split_val")
    ev = record["evaluation"]
    assert ev["protocol"] == "split_val" and ev["reported_step"] in (3, 6)
    assert ev["part_sizes"] == {"validation": {"select": 20, "report": 20}}
    events = _events(tmp_path / "run")
    assert any("eval/select/accuracy" in e and "eval/report/accuracy" in e for e in events)
    # the reported number is the report half at the step the select half chose
    chosen = next(e for e in events if e["step"] == ev["reported_step"] and "eval/report/accuracy" in e)
    assert record["metrics"]["accuracy"] == chosen["eval/report/accuracy"]


def test_regression_and_two_split_tasks(use_mirror, tmp_path):
    stsb = run_tiny(tmp_path / "stsb", "task=stsb")
    assert set(stsb["metrics"]) == {"pearson", "spearman"}
    # trained on z-scores of the train targets, reported in the task's units: the mean predictor is
    # the raw train mean, predictions centre near it (not near 0), and the prior loss is the
    # variance of the standardized targets (1), the unit the logged train loss is in
    scale = stsb["inferred"]["label_scaling"]["value"]
    train = pq.read_table(os.environ["HARNESS_DATA_DIR"] + "/glue/stsb/train.parquet")["label"].to_numpy()
    assert scale == {"mode": "standardize", "mean": pytest.approx(train.mean()), "sd": pytest.approx(train.std())}
    base = stsb["baseline"]
    assert base["value"] == pytest.approx(train.mean()) and base["prior_loss"] == pytest.approx(1.0)
    raw = run_tiny(tmp_path / "raw", "task=stsb", "task.label_scaling=none")
    assert raw["inferred"]["label_scaling"]["value"] == "none"
    assert raw["baseline"]["prior_loss"] == pytest.approx(train.var())
    assert "label_scaling" not in run_tiny(tmp_path / "sst2")["inferred"]
    mnli = run_tiny(tmp_path / "mnli", "task=mnli")
    assert set(mnli["metrics"]) == {"accuracy_m", "accuracy_mm"}
    assert mnli["data"]["eval_examples"] == {"m": 40, "mm": 20}


def test_standardized_predictions_are_mapped_back_to_the_task_units():
    """The evaluator turns the model's z-score outputs into task units (z * sd + mean) before any
    metric; without a scale it passes outputs through."""
    import contextlib
    from types import SimpleNamespace

    import numpy as np
    import torch

    from harness.evaluation import PROTOCOLS, Evaluator
    from harness.label_scaling import LabelScale

    outputs = np.array([-1.0, 0.0, 2.0])
    eval_set = SimpleNamespace(labels=np.array([1.0, 2.5, 5.0]),
                               batches=lambda: iter([(np.arange(3), {"x": torch.tensor(outputs).view(3, 1)})]))
    runtime = SimpleNamespace(autocast=contextlib.nullcontext, to_device=lambda batch: batch)
    model = lambda x: SimpleNamespace(logits=x)  # noqa: E731 - the model's raw output is its input
    task = SimpleNamespace(label_type="regression")
    scaled = Evaluator(task, {"validation": eval_set}, PROTOCOLS.get("last")("pearson", 0), runtime,
                       LabelScale(mean=2.5, sd=1.5))
    assert scaled._predict(model, eval_set) == pytest.approx([1.0, 2.5, 5.5])
    raw = Evaluator(task, {"validation": eval_set}, PROTOCOLS.get("last")("pearson", 0), runtime)
    assert raw._predict(model, eval_set) == pytest.approx(outputs)


def test_successful_run_is_never_overwritten(use_mirror, tmp_path):
    from harness.errors import HarnessError
    run_tiny(tmp_path / "run")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    with pytest.raises(HarnessError, match="already holds a successful run"):
        run_tiny(tmp_path / "run")
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert before == after


def test_failed_run_is_recorded_and_kept_aside_on_retry(use_mirror, tmp_path, monkeypatch):
    from harness import train

    def boom(*args, **kwargs):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(train, "train", boom)
    with pytest.raises(RuntimeError):
        run_tiny(tmp_path / "run")
    failed = json.loads((tmp_path / "run/result.json").read_text())
    assert failed["status"] == "failed" and failed["error"]["message"] == "injected failure"
    monkeypatch.undo()
    monkeypatch.setenv("HARNESS_DATA_DIR", str(use_mirror))
    assert run_tiny(tmp_path / "run")["status"] == "success"
    assert json.loads((tmp_path / "run/attempt-1/result.json").read_text())["status"] == "failed"


def test_diverged_run_is_recorded(use_mirror, tmp_path):
    from harness.train import Diverged
    with pytest.raises(Diverged):
        run_tiny(tmp_path / "run", "method.lr=1e30", "train.max_grad_norm=null", "method.r=32")
    record = json.loads((tmp_path / "run/result.json").read_text())
    assert record["status"] == "failed" and record["error"]["reason"] == "diverged"


def test_wandb_offline_sink_runs_without_account(use_mirror, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    record = run_tiny(tmp_path / "run", "logger=wandb")
    assert record["status"] == "success"
    offline_runs = list((tmp_path / "run/wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and list(offline_runs[0].glob("run-*.wandb"))


def test_code_state_is_read_once_per_invocation_and_never_inherited_from_another(monkeypatch):
    """A sweep hands its code state to every job (same invocation id): used as is. One inherited from
    another invocation (a parent process that ran a sweep) is stale: read again."""
    from harness import provenance
    from harness.sweep_log import INVOCATION_ENV
    monkeypatch.setenv(INVOCATION_ENV, "this-sweep")
    monkeypatch.setenv(provenance.CODE_STATE_ENV, json.dumps({"git_sha": "handed-down", "invocation": "this-sweep"}))
    assert provenance.code_state()["git_sha"] == "handed-down"
    monkeypatch.setenv(provenance.CODE_STATE_ENV, json.dumps({"git_sha": "stale", "invocation": "another"}))
    fresh = provenance.code_state()
    assert fresh["git_sha"] != "stale" and fresh["invocation"] == "this-sweep" and len(fresh["git_sha"]) == 40


def test_code_digest_names_the_code_also_without_git(tmp_path):
    """A checkout copied without .git (a GPU node) still records which code ran: the digest of
    harness/ and conf/, equal for equal code, different after any edit, blind to caches."""
    import shutil
    from harness import provenance
    for top in provenance.CODE_DIRS:
        shutil.copytree(provenance.REPO / top, tmp_path / top, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "harness" / "__pycache__").mkdir(exist_ok=True)
    (tmp_path / "harness" / "__pycache__" / "x.pyc").write_bytes(b"cache")
    copy = provenance.code_digest(tmp_path)
    assert copy == provenance.code_digest() and len(copy) == 64
    (tmp_path / "conf" / "model" / "minilm.yaml").write_text("edited\n")
    assert provenance.code_digest(tmp_path) != copy


def test_a_line_torn_by_a_kill_does_not_block_resume(tmp_path):
    """kill -9 mid-write can leave half a JSON line at the end of metrics.jsonl: resume drops it
    (and every event after the checkpoint's step) instead of failing on it at every retry."""
    from harness.results import _truncate_events
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 5, "train/loss": 0.7}\n{"step": 10, "train/loss": 0.6}\n'
                    '{"step": 15, "train/loss": 0.5}\n{"step": 20, "train/lo')
    _truncate_events(path, 10)
    assert [json.loads(ln)["step"] for ln in path.read_text().splitlines()] == [5, 10]


def test_records_are_as_readable_as_the_metrics_beside_them(use_mirror, tmp_path):
    import stat
    run_tiny(tmp_path / "run")
    modes = {f: stat.S_IMODE((tmp_path / "run" / f).stat().st_mode) for f in ("result.json", "config.yaml", "metrics.jsonl")}
    assert len(set(modes.values())) == 1, modes


def test_an_unwritable_run_directory_is_one_line_of_bad_input(use_mirror, tmp_path):
    import os

    from harness.errors import HarnessError
    parent = tmp_path / "ro"
    parent.mkdir()
    os.chmod(parent, 0o500)
    try:
        if os.access(parent, os.W_OK):  # root ignores permissions: make the path impossible instead
            (tmp_path / "file").write_text("x")
            target = tmp_path / "file" / "run"
        else:
            target = parent / "run"
        with pytest.raises(HarnessError, match="cannot write the run directory"):
            run_tiny(target)
    finally:
        os.chmod(parent, 0o700)
