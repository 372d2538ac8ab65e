"""Every config in conf/ composes and validates; the schema rejects unknown keys and wrong types."""

import functools
import shutil

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from conftest import CONF, compose
from harness.config import validate

# Count asserted, so a config that is silently not found fails the test (torchtune's 3-of-197 lesson).
# Methods are held to the registry instead (test_every_registered_method_kind_has_a_config): adding
# one is a method file and its YAML, nothing here.
EXPECTED = {"model": 7, "task": 9, "train": 1, "eval": 2, "logger": 2}


def group_configs():
    # sweeps, their budget profiles and launcher configs are tested in test_sweeps.py
    found = sorted(p.relative_to(CONF) for p in CONF.rglob("*.yaml")
                   if p.name != "config.yaml" and p.relative_to(CONF).parts[0] not in ("sweep", "profile", "hydra"))
    return [(str(p.parent), p.stem) for p in found]


@functools.lru_cache(maxsize=None)
def _composed(group, name):
    """`{group}={name}` composed once per module (several tests read every method config; none changes it)."""
    return compose(f"{group}={name}")


def test_config_count_is_asserted():
    counts = {}
    for group, _ in group_configs():
        counts[group] = counts.get(group, 0) + 1
    assert {g: n for g, n in counts.items() if g != "method"} == EXPECTED


def test_every_registered_method_kind_has_a_config():
    from harness.methods import METHODS
    kinds = {_composed("method", name).method.kind for group, name in group_configs() if group == "method"}
    assert kinds == set(METHODS.names())


@pytest.mark.parametrize("group,name", group_configs())
def test_every_config_composes_and_validates(group, name):
    cfg = _composed(group, name)
    node = cfg[group]
    schema = OmegaConf.get_type(node)
    assert schema is not None and schema is not dict, f"{group}/{name} does not extend its schema"
    if group == "method" and _continues_a_run(cfg):  # needs a finished run (lori_d): must say so clearly
        from harness.errors import HarnessError
        with pytest.raises(HarnessError, match="needs method.source_run"):
            validate(cfg)
        return
    validate(cfg)


def _continues_a_run(cfg) -> bool:
    from harness.methods import METHODS
    return METHODS.get(cfg.method.kind).source_run_kind is not None


def test_method_nodes_are_typed_by_their_kind():
    from harness.methods import METHODS
    for name in [n for g, n in group_configs() if g == "method"]:
        cfg = _composed("method", name)
        assert OmegaConf.get_type(cfg.method) is METHODS.get(cfg.method.kind).config_class


def test_a_variant_yaml_extends_its_parent_and_holds_only_what_differs():
    """noreft = loreft + its variant; a key the parent leaves to the schema stays the schema's."""
    from harness.config import method_preset
    parent, variant = method_preset("loreft"), method_preset("noreft")
    assert {k for k in variant if variant[k] != parent[k]} == {"label", "variant"}
    assert variant["lr_multiplier"] == parent["lr_multiplier"] == 40.0
    assert OmegaConf.load(CONF / "method/noreft.yaml").keys() == {"defaults", "label", "variant"}


def test_compose_inside_a_running_hydra_app_puts_the_app_back():
    """A run names itself and a sweep resolves its LR grid from composed presets while Hydra runs."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        running = GlobalHydra.instance().hydra
        compose("method=dora")
        assert GlobalHydra.instance().hydra is running


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
