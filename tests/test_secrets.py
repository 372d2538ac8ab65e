"""A value read from the environment (`${oc.env:SECRET}`) is used by the run but never written
(config.yaml, result.json, W&B files) nor printed: records hold the expression, and run_id/config_id
do not depend on the value. Values of credential-named variables are scrubbed wherever they appear."""

import json

import pytest
from omegaconf import OmegaConf

from conftest import cli, compose

SECRET = "s3cr3t-value-123"


def _files_holding(root, needle: bytes):
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.timeout(240)
def test_env_secret_is_never_written_nor_printed(mirror, tmp_path):
    run_dir = tmp_path / "run"
    proc = cli("model=tiny_bert", "logger=wandb", "train.progress=false", "train.max_steps=4", "train.eval_every=2",
               "train.log_every=2", "train.batch_size=8", "logger.entity=${oc.env:SECRET}",
               "logger.group=${oc.env:SECRET}", f"hydra.run.dir={run_dir}",
               env={"HARNESS_DATA_DIR": str(mirror), "SECRET": SECRET, "WANDB_MODE": "offline"}, timeout=240)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((run_dir / "result.json").read_text())
    assert record["status"] == "success"
    assert list(run_dir.glob("wandb/offline-run-*/run-*.wandb")), "no W&B run was written"
    assert _files_holding(run_dir, SECRET.encode()) == []  # every file, W&B's binary ones included
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    # the expression is what is recorded
    assert record["config"]["logger"]["entity"] == "${oc.env:SECRET}"
    assert record["config"]["logger"]["group"] == "${oc.env:SECRET}"
    assert "logger.group=${oc.env:SECRET}" in record["overrides"]
    written = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=False)
    assert written["logger"]["group"] == written["logger"]["entity"] == "${oc.env:SECRET}"
    assert _files_holding(run_dir / "wandb", b"${oc.env:SECRET}")  # W&B's config/group got the expression


def test_bad_input_does_not_print_the_secret(tmp_path):
    proc = cli("model=tiny_bert", "logger=none", "train.schedule=${oc.env:SECRET}", f"hydra.run.dir={tmp_path / 'r'}",
               env={"SECRET": SECRET})
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "train.schedule must be one of" in lines[0] and "${oc.env:SECRET}" in lines[0]
    assert SECRET not in proc.stderr + proc.stdout
    assert not (tmp_path / "r").exists()


def _recorded(monkeypatch, value, *overrides):
    from harness.tracking import Redactor
    monkeypatch.setenv("SECRET", value)
    cfg = compose("model=tiny_bert", "logger=none", *overrides)
    return Redactor.for_config(cfg).config(OmegaConf.to_container(cfg, resolve=True))


def test_identity_does_not_depend_on_the_secret(monkeypatch):
    from harness.results import config_identity, run_identity
    a = _recorded(monkeypatch, SECRET, "model.revision=${oc.env:SECRET}")  # an identity-bearing key
    b = _recorded(monkeypatch, "another-value-456", "model.revision=${oc.env:SECRET}")
    assert a["model"]["revision"] == b["model"]["revision"] == "${oc.env:SECRET}"
    assert run_identity(a) == run_identity(b) and config_identity(a) == config_identity(b)
    assert SECRET not in json.dumps(a)


def test_nested_and_derived_env_values_are_recorded_as_expressions(monkeypatch):
    rec = _recorded(monkeypatch, SECRET, "logger.group=prefix-${oc.env:SECRET}", "logger.entity=${logger.group}")
    assert rec["logger"]["group"] == "prefix-${oc.env:SECRET}"  # by path: the expression as typed
    assert rec["logger"]["entity"] == "prefix-${oc.env:SECRET}"  # by value: the interpolated copy
    assert SECRET not in json.dumps(rec)


def test_credential_named_variable_is_scrubbed_by_value(monkeypatch):
    monkeypatch.setenv("MY_API_TOKEN", "tok-abcdef-987654")
    rec = _recorded(monkeypatch, SECRET, "logger.group=tok-abcdef-987654")  # typed literally
    assert rec["logger"]["group"] == "${oc.env:MY_API_TOKEN}"


def test_short_or_unrelated_values_are_left_alone(monkeypatch):
    from harness.tracking import looks_like_credential
    monkeypatch.setenv("SOME_TOKEN", "offline")  # too short to be a credential: `logger.mode` keeps it
    monkeypatch.setenv("UNRELATED", "tiny_bert")  # not read by the config, not credential-named
    rec = _recorded(monkeypatch, SECRET, "logger.mode=offline")
    assert rec["logger"]["mode"] == "offline" and rec["model"]["name"] == "tiny_bert"
    assert looks_like_credential("WANDB_API_KEY") and looks_like_credential("HF_TOKEN")
    assert looks_like_credential("AWS_SECRET_ACCESS_KEY") and looks_like_credential("DB_PASSWORD")
    assert not looks_like_credential("HARNESS_DATA_DIR") and not looks_like_credential("WANDB_MODE")


def test_run_record_scrubs_everything_it_writes(monkeypatch, tmp_path):
    from harness.results import RunRecord
    from harness.tracking import Redactor
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnop")
    record = Redactor().record(RunRecord(tmp_path, {"train": {"seed": 1}}, {"task": "t"}, ["a=hf_abcdefghijklmnop"]))
    record.finish("failed", RuntimeError("could not log in with hf_abcdefghijklmnop"))
    text = (tmp_path / "result.json").read_text()
    assert "hf_abcdefghijklmnop" not in text and "${oc.env:HF_TOKEN}" in text
    assert record.data["overrides"] == ["a=hf_abcdefghijklmnop"]  # in memory the run keeps what it was given


def test_a_number_from_the_environment_keeps_its_value():
    """train.seed=${oc.env:SLURM_ARRAY_TASK_ID}: the seed is recorded as the number (runs are paired by
    it), not as the expression."""
    import os

    from omegaconf import OmegaConf

    from conftest import compose
    from harness.tracking import Redactor
    os.environ["HARNESS_TEST_TASK_ID"] = "7"
    try:
        cfg = compose("model=tiny_bert", "train.seed=${oc.env:HARNESS_TEST_TASK_ID}")
        recorded = Redactor.for_config(cfg).config(OmegaConf.to_container(cfg, resolve=True))
    finally:
        del os.environ["HARNESS_TEST_TASK_ID"]
    assert recorded["train"]["seed"] == 7 and recorded["eval"]["split_seed"] == 7
