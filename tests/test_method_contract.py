"""Contract tests over the whole method registry: every YAML in conf/method passes the same checks
on a tiny model (frozen base, identity at init as declared, data initialiser effective, loss falls,
save/reload, decoder or up-front refusal, a full run without sentinel flags), and its parameter
report equals the closed form its method declares (or, with none, its library's own count). Each
sentinel of harness/sentinels.py is proved by breaking its hook on purpose. Method lists come from
the registry and conf/method, and what differs between methods comes from their declarations
(harness.methods.base), never from their names."""

import copy
import functools
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import CONF, compose
from harness import models, params, train
from harness.config import effective_lr
from harness.data import FixedBatches
from harness.errors import HarnessError
from harness.evaluation import NoEvaluation
from harness.methods import METHODS, discover
from harness.methods.dims import ModelDims
from harness.preflight import model_info
from harness.run import apply_method, initialise_from_data
from harness.runtime import setup_runtime
from harness.sentinels import WHY
from harness.tracking import Tracker

METHOD_YAMLS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
# Short-schedule overrides so every method fits in 12 steps.
SHORT = {"adalora": ["method.tinit=2", "method.tfinal=3", "method.deltaT=1"]}
NO_DROPOUT = {"tiny_bert": ["++model.from_config.hidden_dropout_prob=0.0", "++model.from_config.attention_probs_dropout_prob=0.0"]}
STEPS = 12
# LRs for the fixed-batch contract, independent of the YAMLs' CPU-budget defaults (default: an
# absolute method.lr=1e-2). lori_s's LR is a ratio of its source run's, so it sets the ratio.
CONTRACT_LR = {"fullft": ["method.lr=1e-3"], "vera": ["method.lr=1e-1"], "ia3": ["method.lr=1e-1"],
               "bitfit": ["method.lr=2e-2"], "loreft": ["method.lr=2e-2"], "noreft": ["method.lr=2e-2"],
               "direft": ["method.lr=2e-2"], "loreft_r32_p10": ["method.lr=2e-2"], "lori_s": ["method.lr_ratio=1"]}


@functools.lru_cache(maxsize=None)
def _method_class(name):
    """The Method class a YAML configures."""
    return METHODS.get(compose(f"method={name}").method.kind)


def test_every_registered_kind_has_a_yaml_and_every_yaml_a_registered_kind():
    assert METHOD_YAMLS, f"no method YAML found under {CONF / 'method'}"
    assert {_method_class(m).kind for m in METHOD_YAMLS} == set(METHODS.names())


def test_every_module_of_the_methods_package_is_discovered():
    import harness.methods as package
    modules = {p.stem for p in Path(package.__file__).parent.glob("*.py") if p.stem != "__init__"}
    assert modules and all(f"harness.methods.{m}" in sys.modules for m in modules)
    assert {METHODS.get(k).__module__.rsplit(".", 1)[0] for k in METHODS.names()} == {"harness.methods"}


def test_a_method_module_dropped_into_a_package_is_registered(tmp_path, monkeypatch):
    """discover() imports every module of a package, so a new method file needs no import list:
    a package holding one method file, discovered into a fresh registry, registers it."""
    import harness.methods as methods
    from harness.registry import Registry
    package = tmp_path / "dropped_methods"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "probe.py").write_text(
        "from harness.methods import register\n"
        "from harness.methods.base import Method\n\n\n"
        "@register\n"
        "class Probe(Method):\n"
        "    kind = 'probe'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(methods, "METHODS", Registry("method kind"))  # the real registry stays as it is
    try:
        import dropped_methods
        assert discover(dropped_methods) == ["probe"]
        assert methods.METHODS.names() == ["probe"]
        assert methods.METHODS.get("probe").__module__ == "dropped_methods.probe"
    finally:
        for name in ("dropped_methods.probe", "dropped_methods"):
            sys.modules.pop(name, None)


_FINISHED_RUNS = {}


def _finished_run(method, model):
    """A finished tiny run of `method` (once per model) on a synthetic mirror, for a method that
    continues one (lori_s continues lori_d)."""
    if (method, model) not in _FINISHED_RUNS:
        import os
        import tempfile

        from conftest import build_mirror, run_tiny
        root = Path(tempfile.mkdtemp())
        old = os.environ.get("HARNESS_DATA_DIR")
        os.environ["HARNESS_DATA_DIR"] = str(build_mirror(root / "mirror"))
        try:
            run_tiny(root / "d", f"model={model}", f"method={method}", "train.max_steps=4", "train.eval_every=4",
                     *NO_DROPOUT.get(model, []))
        finally:
            if old is None:
                os.environ.pop("HARNESS_DATA_DIR")
            else:
                os.environ["HARNESS_DATA_DIR"] = old
        _FINISHED_RUNS[(method, model)] = root / "d"
    return _FINISHED_RUNS[(method, model)]


def _source_overrides(name, model) -> list:
    """method.source_run for a method that declares it continues a finished run of another kind."""
    source = _method_class(name).source_run_kind
    return [f"method.source_run={_finished_run(source, model)}"] if source else []


def _cfg(name, model="tiny_bert"):
    return compose(*_source_overrides(name, model), *CONTRACT_LR.get(name, ["method.lr=1e-2"]),
                   f"model={model}", f"method={name}", "logger=none", "train.progress=false",
                   f"train.max_steps={STEPS}", "train.log_every=1", *SHORT.get(name, []), *NO_DROPOUT.get(model, []))


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


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def _train(name, model_name="tiny_bert"):
    """Apply the method (and its data initialiser, on the fixed batch, as a run does on its first
    batches) and train STEPS steps on one fixed batch; what the checks below look at."""
    cfg = _cfg(name, model_name)
    runtime = setup_runtime(cfg.train)
    built = models.build(cfg)
    batch = _batch(built.tokenizer, cfg.model.arch)
    base_state = copy.deepcopy(built.model.state_dict())
    base_logits = _logits(built.model, batch)
    model, method, _ = apply_method(cfg, built, STEPS, runtime.device)
    init_flags = initialise_from_data(method, model, FixedBatches([batch]), runtime)
    init_logits = _logits(model, batch)
    frozen_after_apply = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    recorder = _Recorder()
    train.train(model, method, [batch] * STEPS, NoEvaluation(), Tracker([recorder]), runtime, cfg.train,
                STEPS, effective_lr(cfg), regression=False)
    return SimpleNamespace(name=name, cfg=cfg, built=built, base_state=base_state, model=model, method=method,
                           frozen_after_apply=frozen_after_apply, before=before, losses=recorder.losses,
                           batch=batch, base_logits=base_logits, init_logits=init_logits, init_flags=init_flags)


@pytest.fixture(scope="module", params=METHOD_YAMLS)
def trained(request):
    return _train(request.param)


def test_base_frozen_and_unchanged(trained):
    """Base weights the method does not declare it trains stay frozen; training never moves them,
    and apply() leaves them as loaded unless the method declares that it rewrites them (and then it
    must rewrite some)."""
    t = trained
    declared = type(t.method)
    if declared.is_full_finetuning:
        pytest.skip("full fine-tuning trains the base by definition")
    head = t.built.classifier + t.built.pooler
    rewritten = []
    for n, p in t.model.named_parameters():
        rel = n.removeprefix("base_model.model.").replace(".base_layer.", ".")  # peft wraps adapted linears
        if rel in t.base_state and not params.is_head(n, head) and not declared.trains_base_parameter(rel):
            assert not p.requires_grad, n
            assert torch.equal(p.detach(), t.frozen_after_apply[n]), f"{t.name}: training moved frozen {rel}"
            if not torch.equal(p.detach(), t.base_state[rel]):
                rewritten.append(rel)
    if declared.rewrites_base_weights:
        assert rewritten, f"{t.name} declares rewrites_base_weights but left every base weight as loaded"
    else:
        assert not rewritten, f"{t.name}: base weight {rewritten[0]} changed"


def test_identity_at_init_is_as_declared(trained):
    """A method that declares identity_at_init computes exactly the base model's logits once applied
    (and data-initialised); one that declares otherwise does not (rounding counts: PiSSA's residual)."""
    t = trained
    same = torch.equal(t.init_logits, t.base_logits)
    gap = float((t.init_logits - t.base_logits).abs().max())
    assert same == type(t.method).identity_at_init, f"{t.name}: identity_at_init is declared" \
        f" {type(t.method).identity_at_init} but the logits at init differ from the base's by {gap:.2e}"


def test_a_declared_data_initialiser_changes_the_adapter(trained):
    assert trained.init_flags == [], f"{trained.name}: {trained.init_flags}"


def test_adapter_parameters_change(trained):
    t = trained
    head = t.built.classifier + t.built.pooler
    adapter = [n for n in t.before if not params.is_head(n, head)]
    assert adapter, f"{t.name}: no adapter parameters"
    now = dict(t.model.named_parameters())
    changed = [n for n in adapter if not torch.equal(t.before[n], now[n].detach())]
    assert changed, f"{t.name}: no adapter parameter changed"


def test_loss_falls_on_a_fixed_batch(trained):
    assert len(trained.losses) == STEPS
    assert trained.losses[-1] < trained.losses[0], f"{trained.name}: {trained.losses}"


def test_save_and_reload_reproduce_logits(trained, tmp_path):
    t = trained
    inputs = {k: v for k, v in t.batch.items() if k != "labels"}
    t.model.eval()
    with torch.no_grad():
        expected = t.model(**inputs).logits
    t.method.save(t.model, tmp_path)
    fresh = models.build(t.cfg)
    head_train, head_frozen = models.head_policy(fresh, t.cfg.train.head)
    from harness.methods.base import ApplyContext
    ctx = ApplyContext(model_type=fresh.model.config.model_type, arch=t.cfg.model.arch, head_train=head_train,
                       head_frozen=head_frozen, total_steps=STEPS, seed=t.cfg.train.seed)
    reloaded = type(t.method)(t.cfg.method).load(fresh.model, tmp_path, ctx).eval()
    with torch.no_grad():
        got = reloaded(**inputs).logits
    assert torch.allclose(got, expected, atol=1e-5), f"{t.name}: reloaded logits differ"


def test_param_report_equals_closed_form(trained):
    """The trainable adapter count after apply equals the method's declared closed form, computed
    from the fresh model's shapes and from its meta-device copy alike (what a budget solver sees).
    A method that declares none (EVA's data-chosen ranks) is held to its library's own count."""
    t = trained
    declared = type(t.method)
    fresh = models.build(t.cfg)
    head = t.built.classifier + t.built.pooler
    report = params.param_report(t.model, head, t.built.base_total, t.method)
    expected = declared.adapter_param_count(t.cfg.method, ModelDims.of(fresh.model, head))
    if expected is None:
        assert declared.library == "peft", f"{t.name}: no closed form and no library count to hold it to"
        expected = t.model.get_nb_trainable_parameters()[0] - report["head"]
    else:
        assert declared.adapter_param_count(t.cfg.method, model_info(t.cfg).dims()) == expected, t.name
    assert report["adapter"] == expected, t.name
    head_params = sum(p.numel() for n, p in fresh.model.named_parameters() if params.is_head(n, t.built.classifier))
    assert report["head"] == head_params == 66  # tiny_bert classifier 32x2+2; pooler frozen by default
    assert report["base_total"] == t.built.base_total


@pytest.mark.parametrize("name", METHOD_YAMLS)
def test_every_method_trains_on_a_decoder_or_refuses_it_up_front(name):
    """On tiny_llama (no biases, no pooler) a method either learns or its model check refuses the
    model before anything is built, and then apply() refuses it too (never a silent no-op)."""
    cfg = _cfg(name, "tiny_llama")
    try:
        _method_class(name).check_against_model(cfg.method, model_info(cfg))
    except HarnessError:
        with pytest.raises(HarnessError):
            _train(name, "tiny_llama")
        return
    losses = _train(name, "tiny_llama").losses
    assert losses[-1] < losses[0], name


def test_bitfit_on_a_model_without_biases_says_so():
    with pytest.raises(HarnessError, match="no bias terms"):
        _train("bitfit", "tiny_llama")


@pytest.mark.parametrize("name", METHOD_YAMLS)
def test_every_method_runs_a_regression_task(name, use_mirror, tmp_path):
    from conftest import run_tiny
    record = run_tiny(tmp_path / "run", f"method={name}", "task=stsb", "train.max_steps=6", *SHORT.get(name, []),
                      *_source_overrides(name, "tiny_bert"))
    assert record["status"] == "success" and set(record["metrics"]) == {"pearson", "spearman"}
    assert not set(record["flags"]) & set(WHY), f"{name}: sentinels raised {record['flags']}"
    cfg = _cfg(name)
    closed_form = _method_class(name).adapter_param_count(cfg.method, model_info(cfg).dims())
    assert record["params"]["count_source"] == ("closed_form" if closed_form is not None
                                                else _method_class(name).library), name


# -- sentinels: a hook removed or broken on purpose is flagged in the run's record ------------------
# Methods are picked by what they declare (the registry), never by name.

def _yaml_of(kind: str) -> str:
    return next(m for m in METHOD_YAMLS if _method_class(m).kind == kind)


def _default_method():
    """The primary config's method (a plain adapter that declares nothing special)."""
    return METHODS.get(compose().method.kind)


def _short_run(tmp_path, name):
    from conftest import run_tiny
    return run_tiny(tmp_path / "run", f"method={name}", "train.max_steps=3", "train.eval_every=3")


@pytest.mark.parametrize("kind", sorted(k for k in METHODS.names() if METHODS.get(k).data_init))
def test_a_data_initialiser_removed_on_purpose_is_flagged(kind, use_mirror, tmp_path, monkeypatch):
    from harness.methods.base import Method
    monkeypatch.setattr(METHODS.get(kind), "initialise_from_data", Method.initialise_from_data)
    assert "data_init_did_nothing" in _short_run(tmp_path, _yaml_of(kind))["flags"]


def test_a_base_rewrite_the_method_does_not_declare_is_flagged(use_mirror, tmp_path, monkeypatch):
    kind = next(k for k in METHODS.names() if METHODS.get(k).rewrites_base_weights)
    monkeypatch.setattr(METHODS.get(kind), "rewrites_base_weights", False)
    assert "base_weights_rewritten" in _short_run(tmp_path, _yaml_of(kind))["flags"]


def test_a_declared_base_rewrite_that_rewrites_nothing_is_flagged(use_mirror, tmp_path, monkeypatch):
    monkeypatch.setattr(_default_method(), "rewrites_base_weights", True)
    assert "base_weights_not_rewritten" in _short_run(tmp_path, _yaml_of(_default_method().kind))["flags"]


def test_a_head_no_optimizer_step_moves_is_flagged(use_mirror, tmp_path, monkeypatch):
    """A parameter-group hook that gives the head LR 0 (tiny BERT's head is `classifier`)."""
    monkeypatch.setattr(_default_method(), "lr_scale", lambda self, name: 0.0 if "classifier" in name else 1.0)
    assert "head_never_trained" in _short_run(tmp_path, _yaml_of(_default_method().kind))["flags"]


def test_an_adapter_count_off_its_closed_form_is_flagged(use_mirror, tmp_path, monkeypatch):
    cls = _default_method()
    closed_form = cls.adapter_param_count
    monkeypatch.setattr(cls, "adapter_param_count", classmethod(lambda c, mcfg, dims: closed_form(mcfg, dims) + 1))
    assert "adapter_count_differs_from_closed_form" in _short_run(tmp_path, _yaml_of(cls.kind))["flags"]
