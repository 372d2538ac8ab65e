"""Run and configuration identity: config_id groups the seeds and LRs of one configuration and
nothing else; settings that cannot change a result change neither id."""

import pytest
from omegaconf import OmegaConf

from conftest import compose
from harness.results import config_identity, run_identity


def _ids(*overrides):
    resolved = OmegaConf.to_container(compose("model=tiny_bert", *overrides), resolve=True)
    return run_identity(resolved), config_identity(resolved)


BASE = _ids()


@pytest.mark.parametrize("overrides", [("train.seed=7",), ("method.lr_multiplier=3",), ("method.lr=1e-3",),
                                       ("train.base_lr=1e-4",), ("train.seed=7", "method.lr_multiplier=30")])
def test_seeds_and_learning_rates_share_the_configuration(overrides):
    run_id, config_id = _ids(*overrides)
    assert config_id == BASE[1] and run_id != BASE[0]


@pytest.mark.parametrize("overrides", [("method.rslora=true",), ("method.dropout=0.1",), ("method.use_dora=true",),
                                       ("method.r=4",), ("method.alpha=32",), ("task.max_length=64",),
                                       ("train.max_steps=200",), ("eval=split_val",), ("method=fullft",)])
def test_a_knob_or_budget_change_is_another_configuration(overrides):
    run_id, config_id = _ids(*overrides)
    assert config_id != BASE[1] and run_id != BASE[0]


@pytest.mark.parametrize("overrides", [("train.progress=false",), ("train.num_threads=1",),
                                       ("train.eval_batch_size=7",), ("train.checkpoint_every=20",),
                                       ("train.save_artifact=true",), ("logger=none",)])
def test_settings_that_cannot_change_a_result_change_no_identity(overrides):
    assert _ids(*overrides) == BASE


def test_label_scaling_is_a_configuration_of_a_regression_task_only():
    """Standardized and raw STS-B targets train different models; on SST-2 the setting does nothing,
    so a classification run's ids are those it had before the setting existed."""
    assert _ids("task=stsb", "task.label_scaling=none")[1] != _ids("task=stsb")[1]
    assert _ids("task.label_scaling=none") == BASE
    resolved = OmegaConf.to_container(compose("model=tiny_bert"), resolve=True)
    del resolved["task"]["label_scaling"]  # a record written before the setting existed
    assert (run_identity(resolved), config_identity(resolved)) == BASE


def test_reft_tied_weights_layers_and_variant_are_configurations():
    ids = {_ids("method=loreft", *o)[1] for o in [(), ("method.tied_weights=true",), ("method.layers='0'",),
                                                 ("method=noreft",), ("method=direft",)]}
    assert len(ids) == 5


def test_what_auto_resolves_to_is_part_of_both_identities():
    """A CPU fp32 run and a GPU bf16 run of one config (device=auto, precision=auto) are different
    runs and configurations: a GPU sweep never skips a job because its CPU twin succeeded."""
    resolved = OmegaConf.to_container(compose("model=tiny_bert"), resolve=True)
    cpu, gpu = {"device_type": "cpu", "precision": "fp32"}, {"device_type": "cuda", "precision": "bf16"}
    assert run_identity(resolved, cpu) != run_identity(resolved, gpu)
    assert config_identity(resolved, cpu) != config_identity(resolved, gpu)
    assert run_identity(resolved, cpu) == run_identity(resolved, dict(cpu))
