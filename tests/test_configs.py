"""Every config in conf/ composes and validates; the schema rejects unknown keys and wrong types."""

import shutil

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from conftest import CONF, compose
from harness.config import validate

# Count asserted, so a config that is silently not found fails the test (torchtune's 3-of-197 lesson).
EXPECTED = {"model": 7, "task": 9, "method": 13, "train": 1, "eval": 2, "logger": 2}


def group_configs():
    # sweeps, their budget profiles and launcher configs are tested in test_sweeps.py
    found = sorted(p.relative_to(CONF) for p in CONF.rglob("*.yaml")
                   if p.name != "config.yaml" and p.relative_to(CONF).parts[0] not in ("sweep", "profile", "hydra"))
    return [(str(p.parent), p.stem) for p in found]


def test_config_count_is_asserted():
    counts = {}
    for group, _ in group_configs():
        counts[group] = counts.get(group, 0) + 1
    assert counts == EXPECTED


@pytest.mark.parametrize("group,name", group_configs())
def test_every_config_composes_and_validates(group, name):
    cfg = compose(f"{group}={name}")
    node = cfg[group]
    schema = OmegaConf.get_type(node)
    assert schema is not None and schema is not dict, f"{group}/{name} does not extend its schema"
    if (group, name) == ("method", "lori_s"):  # needs a finished lori_d run: must say so clearly
        from harness.errors import HarnessError
        with pytest.raises(HarnessError, match="needs method.source_run"):
            validate(cfg)
        return
    validate(cfg)


def test_method_nodes_are_typed_by_their_kind():
    from harness.methods import METHODS
    for name in ("fullft", "lora"):
        cfg = compose(f"method={name}")
        assert OmegaConf.get_type(cfg.method) is METHODS.get(cfg.method.kind).config_class


def test_sweep_is_not_in_primary_defaults():
    defaults = OmegaConf.load(CONF / "config.yaml").defaults
    assert not any(isinstance(d, str) and d.startswith("sweep") or
                   (not isinstance(d, str) and "sweep" in d) for d in defaults)


@pytest.mark.parametrize("override", ["method.rnak=4", "train.batchsize=3", "task.metric=x"])
def test_misspelt_override_fails(override):
    with pytest.raises(ConfigCompositionException):
        compose(override)


def test_wrong_type_fails():
    with pytest.raises(ConfigCompositionException):
        compose("train.batch_size=abc")


def test_unknown_key_inside_a_yaml_fails(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    text = (conf / "method/lora.yaml").read_text() + "rnak: 4\n"
    (conf / "method/lora.yaml").write_text(text)
    import conftest
    monkeypatch.setattr(conftest, "CONF", conf)
    with pytest.raises(ConfigCompositionException, match="rnak"):
        conftest.compose("method=lora")


def test_lr_is_relative_to_fullft_unless_absolute():
    from harness.config import effective_lr
    assert effective_lr(compose("method=lora", "train.base_lr=2e-5", "method.lr_multiplier=10")) == pytest.approx(2e-4)
    assert effective_lr(compose("method=fullft", "train.base_lr=2e-5")) == pytest.approx(2e-5)
    assert effective_lr(compose("method=lora", "method.lr=3e-4")) == pytest.approx(3e-4)


def test_every_task_reports_a_metric_it_computes():
    from harness.config import metric_names
    for _, name in [g for g in group_configs() if g[0] == "task"]:
        task = compose(f"task={name}").task
        assert task.report_metric in metric_names(task)
