"""LoRA: a no-op at initialisation; targets resolved as documented; param count = closed form."""

import pytest
import torch

from conftest import compose
from harness import models, params
from harness.methods import METHODS
from harness.methods.base import ApplyContext
from harness.methods.targets import resolve_targets


def _apply(built, method_overrides=(), head="classifier"):
    cfg = compose(*method_overrides)
    head_train, head_frozen = models.head_policy(built, head)
    method = METHODS.get(cfg.method.kind)(cfg.method)
    ctx = ApplyContext(model_type=built.model.config.model_type, arch=cfg.model.arch, head_train=head_train,
                       head_frozen=head_frozen, total_steps=10, seed=0)
    return method, method.apply(built.model, ctx)


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_llama"])
def test_lora_at_init_gives_base_outputs(model):
    built = models.build(compose(f"model={model}"))
    built.model.eval()
    batch = built.tokenizer(["a good film", "the plot was dull and very long"], padding=True, return_tensors="pt")
    if model == "tiny_llama":
        batch.pop("token_type_ids")
    with torch.no_grad():
        before = built.model(**batch).logits.clone()
    _, peft_model = _apply(built, (f"model={model}", "method=lora", "method.dropout=0.1"))
    peft_model.eval()
    with torch.no_grad():
        after = peft_model(**batch).logits
    assert torch.equal(before, after)


def test_presets_on_tiny_llama():
    built = models.build(compose("model=tiny_llama"))
    names = resolve_targets(built.model, "all_linear")
    assert len(names) == 2 * 7 and not any("score" in n for n in names)
    assert resolve_targets(built.model, "qv") == [f"model.layers.{i}.self_attn.{p}_proj" for i in range(2) for p in "qv"]
    assert len(resolve_targets(built.model, "mlp")) == 2 * 3


@pytest.fixture(scope="module")
def minilm():
    return models.build(compose("model=minilm"))


def _closed_form(model, names, r):
    mods = dict(model.named_modules())
    return sum(r * (mods[n].in_features + mods[n].out_features) for n in names)


@pytest.mark.parametrize("preset,n_modules,r", [("all_linear", 36, 8), ("attention", 24, 4), ("qv", 12, 16)])
def test_lora_param_report_on_minilm_equals_closed_form(preset, n_modules, r):
    built = models.build(compose("model=minilm"))
    base_total = built.base_total
    names = resolve_targets(built.model, preset)
    assert len(names) == n_modules and not any("pooler" in n or "classifier" in n for n in names)
    expected_adapter = _closed_form(built.model, names, r)
    method, model = _apply(built, ("model=minilm", "method=lora", f"method.r={r}", f"method.target_modules={preset}"))
    report = params.param_report(model, built.classifier + built.pooler, base_total, method)
    assert report["adapter"] == expected_adapter
    assert report["head"] == 384 * 2 + 2
    assert report["trainable"] == expected_adapter + 770
    assert report["base_total"] == 22_713_986
    if preset == "all_linear":
        assert expected_adapter == 8 * 41_472 == 331_776  # REFERENCE §2: r x 41,472 over 36 encoder linears


def test_head_policy_is_honoured_by_lora_and_fullft():
    for policy, head_params in (("none", 0), ("classifier", 770), ("classifier+pooler", 770 + 147_840)):
        for method_name in ("lora", "fullft"):
            built = models.build(compose("model=minilm"))
            head_train, head_frozen = models.head_policy(built, policy)
            method, model = _apply(built, ("model=minilm", f"method={method_name}"), head=policy)
            assert params.head_trainability(model, head_train, head_frozen) == []
            report = params.param_report(model, built.classifier + built.pooler, built.base_total, method)
            assert report["head"] == head_params, (policy, method_name)
