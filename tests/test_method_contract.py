"""Contract tests over the whole method registry: every YAML in conf/method passes the same checks
on a tiny model, and its parameter report equals its closed form."""

import copy
from pathlib import Path

import pytest
import torch

from conftest import CONF, compose
from harness import models, params, train
from harness.config import effective_lr
from harness.evaluation import NoEvaluation
from harness.methods.targets import resolve_targets
from harness.run import apply_method
from harness.runtime import setup_runtime
from harness.tracking import Tracker

METHOD_YAMLS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
# Short-schedule overrides so every method fits in 12 steps.
SHORT = {"adalora": ["method.tinit=2", "method.tfinal=3", "method.deltaT=1"]}
NO_DROPOUT = {"tiny_bert": ["++model.from_config.hidden_dropout_prob=0.0", "++model.from_config.attention_probs_dropout_prob=0.0"]}
STEPS = 12


def test_every_method_yaml_is_covered():
    assert len(METHOD_YAMLS) == 13


_LORI_D_RUNS = {}


def _lori_d_run(model):
    """lori_s depends on a finished lori_d run: make one (once per model) on a synthetic mirror."""
    if model not in _LORI_D_RUNS:
        import os
        import tempfile

        from conftest import build_mirror, run_tiny
        root = Path(tempfile.mkdtemp())
        old = os.environ.get("HARNESS_DATA_DIR")
        os.environ["HARNESS_DATA_DIR"] = str(build_mirror(root / "mirror"))
        try:
            run_tiny(root / "d", f"model={model}", "method=lori_d", "train.max_steps=4", "train.eval_every=4",
                     *NO_DROPOUT.get(model, []))
        finally:
            if old is None:
                os.environ.pop("HARNESS_DATA_DIR")
            else:
                os.environ["HARNESS_DATA_DIR"] = old
        _LORI_D_RUNS[model] = root / "d"
    return _LORI_D_RUNS[model]


# Absolute LRs for the fixed-batch contract, independent of the YAMLs' CPU-budget defaults.
CONTRACT_LR = {"fullft": 1e-3, "vera": 1e-1, "ia3": 1e-1, "bitfit": 2e-2, "loreft": 2e-2, "noreft": 2e-2,
               "direft": 2e-2, "loreft_r32_p10": 2e-2}


def _cfg(name, model="tiny_bert"):
    extra = [f"method.source_run={_lori_d_run(model)}", "method.lr_ratio=1"] if name == "lori_s" else \
        [f"method.lr={CONTRACT_LR.get(name, 1e-2)}"]
    return compose(*extra, f"model={model}", f"method={name}", "logger=none", "train.progress=false",
                   f"train.max_steps={STEPS}", "train.log_every=1", *SHORT.get(name, []),
                   *NO_DROPOUT.get(model, []))


def _batch(tokenizer, arch):
    texts = ["a good and lovely film", "an awful dull plot", "great actor superb scene", "bad sad story"]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    if arch == "decoder":
        enc.pop("token_type_ids", None)
    return {**enc, "labels": torch.tensor([1, 0, 1, 0])}


class _Recorder:
    def __init__(self):
        self.losses = []

    def log(self, step, values):
        if "train/loss" in values:
            self.losses.append(values["train/loss"])

    def summary(self, values):
        pass

    def finish(self):
        pass


def _train(name, model_name="tiny_bert"):
    cfg = _cfg(name, model_name)
    runtime = setup_runtime(cfg.train)
    built = models.build(cfg)
    base_state = copy.deepcopy(built.model.state_dict())
    model, method, _ = apply_method(cfg, built, STEPS, runtime.device)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    recorder = _Recorder()
    batch = _batch(built.tokenizer, cfg.model.arch)
    train.train(model, method, [batch] * STEPS, NoEvaluation(), Tracker([recorder]), runtime, cfg.train,
                STEPS, effective_lr(cfg), regression=False)
    return cfg, built, base_state, model, method, before, recorder.losses, batch


@pytest.fixture(scope="module", params=METHOD_YAMLS)
def trained(request):
    return (request.param, *_train(request.param))


def test_base_frozen_and_unchanged(trained):
    name, cfg, built, base_state, model, method, *_ = trained
    if cfg.method.kind == "fullft":
        pytest.skip("full fine-tuning trains the base by definition")
    head = built.classifier + built.pooler
    for n, p in model.named_parameters():
        rel = n.removeprefix("base_model.model.")
        if rel in base_state and not params.is_head(n, head) and not (cfg.method.kind == "bitfit" and n.endswith(".bias")):
            assert not p.requires_grad, n
            assert torch.equal(p.detach(), base_state[rel]), f"{name}: base weight {rel} changed"


def test_adapter_parameters_change(trained):
    name, cfg, built, _, model, _, before, *_ = trained
    head = built.classifier + built.pooler
    adapter = [n for n in before if not params.is_head(n, head)]
    assert adapter, f"{name}: no adapter parameters"
    changed = [n for n in adapter if not torch.equal(before[n], dict(model.named_parameters())[n].detach())]
    assert changed, f"{name}: no adapter parameter changed"


def test_loss_falls_on_a_fixed_batch(trained):
    name, *_, losses, _ = trained
    assert len(losses) == STEPS
    assert losses[-1] < losses[0], f"{name}: {losses}"


def test_save_and_reload_reproduce_logits(trained, tmp_path):
    name, cfg, built, _, model, method, _, _, batch = trained
    model.eval()
    with torch.no_grad():
        expected = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    method.save(model, tmp_path)
    fresh = models.build(cfg)
    head_train, head_frozen = models.head_policy(fresh, cfg.train.head)
    from harness.methods.base import ApplyContext
    ctx = ApplyContext(model_type=fresh.model.config.model_type, arch=cfg.model.arch, head_train=head_train,
                       head_frozen=head_frozen, total_steps=STEPS, seed=cfg.train.seed)
    reloaded = type(method)(cfg.method).load(fresh.model, tmp_path, ctx).eval()
    with torch.no_grad():
        got = reloaded(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert torch.allclose(got, expected, atol=1e-5), f"{name}: reloaded logits differ"


def _closed_form(kind, m, base, targets) -> int:
    """Adapter parameters from module shapes alone (REFERENCE §2), never from the library."""
    mods = dict(base.named_modules())
    dims = [(mods[t].in_features, mods[t].out_features) for t in targets]
    if kind == "lora":
        return sum(m.r * (i + o) + (o if m.use_dora else 0) for i, o in dims)  # DoRA: + magnitude
    if kind == "adalora":
        return sum(m.init_r * (i + o) + m.init_r for i, o in dims)
    if kind == "vera":
        return sum(m.r + o for i, o in dims)
    if kind in ("lori_d", "lori_s"):
        return sum(m.r * o for i, o in dims)  # B only: A is frozen
    raise KeyError(kind)


def test_param_report_equals_closed_form(trained):
    name, cfg, built, base_state, model, method, *_ = trained
    fresh = models.build(cfg)
    report = params.param_report(model, built.classifier + built.pooler, built.base_total, method)
    head_params = sum(p.numel() for n, p in fresh.model.named_parameters() if params.is_head(n, built.classifier))
    kind = cfg.method.kind
    if kind in ("lora", "adalora", "vera", "lori_d", "lori_s"):
        knobs = method.cfg  # lori_s takes r and targets from its lori_d run
        expected = _closed_form(kind, knobs, fresh.model, resolve_targets(fresh.model, knobs.target_modules))
    elif kind == "ia3":
        targets = resolve_targets(fresh.model, cfg.method.target_modules)
        mods = dict(fresh.model.named_modules())
        down = set(resolve_targets(fresh.model, "mlp_down"))
        expected = sum(mods[t].in_features if t in down else mods[t].out_features for t in targets)
    elif kind == "reft":
        m = cfg.method
        layers = fresh.model.config.num_hidden_layers if m.layers == "all" else len(m.layers.split(";"))
        units = 1 if m.tied_weights else (m.prefix_positions > 0) + (m.suffix_positions > 0)
        expected = layers * units * m.r * (2 * fresh.model.config.hidden_size + 1)  # r(2d+1) per unit
    elif kind == "bitfit":
        expected = sum(p.numel() for n, p in fresh.model.named_parameters()
                       if n.endswith(".bias") and not params.is_head(n, built.classifier + built.pooler))
    elif kind == "fullft":
        expected = built.base_total - sum(p.numel() for n, p in fresh.model.named_parameters()
                                          if params.is_head(n, built.classifier + built.pooler))
    else:
        raise AssertionError(f"no closed form for {kind}")
    assert report["adapter"] == expected, name
    assert report["head"] == head_params == 66  # tiny_bert classifier 32x2+2; pooler frozen by default
    assert report["base_total"] == built.base_total


def test_methods_on_a_decoder():
    for name in ("lora", "dora", "adalora", "vera", "ia3", "fullft", "lori_d", "lori_s", "loreft", "direft"):
        *_, losses, _ = _train(name, "tiny_llama")
        assert losses[-1] < losses[0], name


def test_bitfit_on_a_model_without_biases_says_so():
    from harness.errors import HarnessError
    with pytest.raises(HarnessError, match="no bias terms"):
        _train("bitfit", "tiny_llama")



@pytest.mark.parametrize("name", METHOD_YAMLS)
def test_every_method_runs_a_regression_task(name, use_mirror, tmp_path):
    from conftest import run_tiny
    extra = SHORT.get(name, []) + ([f"method.source_run={_lori_d_run('tiny_bert')}"] if name == "lori_s" else [])
    record = run_tiny(tmp_path / "run", f"method={name}", "task=stsb", "train.max_steps=6", *extra)
    assert record["status"] == "success" and set(record["metrics"]) == {"pearson", "spearman"}
