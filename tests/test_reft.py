"""ReFT: the intervention equals h + Rᵀ(Wh + b − Rh) at the chosen positions and h elsewhere."""

import pytest
import torch

from conftest import compose, run_tiny
from harness import models, params
from harness.methods.reft import _positions
from harness.run import apply_method


def _reft_model(*overrides, model="tiny_bert"):
    cfg = compose(f"model={model}", "method=loreft", *overrides)
    built = models.build(cfg)
    m, method, _ = apply_method(cfg, built, 10, "cpu")
    return built, m.eval(), method


def _expected(h, unit, positions):
    """Φ(h) = h + Rᵀ(Wh + b − Rh), computed from the unit's parameters, at `positions` of one example."""
    R = unit.projection.weight  # r x d, orthonormal rows (parametrized)
    W, b = unit.learned_source.weight, unit.learned_source.bias
    out = h.clone()
    for t in positions:
        x = h[t]
        out[t] = x + R.T @ (W @ x + b - R @ x)
    return out


@pytest.mark.parametrize("prefix,suffix", [(2, 1), (3, 0)])
def test_intervention_matches_independent_formula_with_right_padding(prefix, suffix):
    built, model, _ = _reft_model("method.r=2", f"method.prefix_positions={prefix}",
                                  f"method.suffix_positions={suffix}")
    torch.manual_seed(0)
    for n, p in model.named_parameters():  # move W, b away from their init (b starts at 0)
        if p.requires_grad and ".learned_source." in n:
            p.data.add_(0.1 * torch.randn_like(p))
    enc = built.tokenizer(["a good film", "the plot was dull and very long indeed"], padding=True, return_tensors="pt")
    mask = enc["attention_mask"]
    lengths = mask.sum(-1)
    assert lengths[0] < mask.shape[1]  # the first example is right-padded
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states
        extended = model.get_extended_attention_mask(mask, mask.shape)
        for i, layer in enumerate(model.bert.encoder.layer):
            h = layer.forward(hidden[i], attention_mask=extended)[0]  # .forward: without the ReFT hook
            units = layer.reft_layer.refts["reft"].units
            R = units[0].projection.weight
            assert torch.allclose(R @ R.T, torch.eye(2), atol=1e-5)  # LoReFT: orthonormal rows
            for b in range(2):
                n = int(lengths[b])
                expect = _expected(h[b], units[0], range(prefix))
                if suffix:
                    expect = _expected(expect, units[1], range(n - suffix, n))
                assert torch.allclose(hidden[i + 1][b], expect, atol=1e-5), (i, b)


def test_positions_short_sequences_and_left_padding():
    lengths = torch.tensor([1, 2, 3, 5, 9])
    offsets = torch.tensor([0, 0, 4, 0, 1])  # example 2 is left-padded by 4
    pref, suff = _positions(lengths, offsets, prefix=3, suffix=2)
    assert pref.shape == (5, 3) and suff.shape == (5, 2)
    for b in range(5):
        real = set(range(int(offsets[b]), int(offsets[b] + lengths[b])))
        p, s = set(pref[b].tolist()), set(suff[b].tolist())
        assert p <= real and s <= real, b  # never outside the real tokens
        if lengths[b] >= 2:
            assert not p & s, b  # prefix and suffix never edit the same token
    assert pref[4].tolist() == [1, 2, 3] and suff[4].tolist() == [8, 9]  # long enough: exact
    assert pref[2].tolist() == [4, 5, 5] and suff[2].tolist() == [6, 6]  # pyreft: repeat the last valid one
    only_prefix, _ = _positions(lengths, offsets, prefix=3, suffix=0)
    assert only_prefix[0].tolist() == [0, 0, 0] and only_prefix[4].tolist() == [1, 2, 3]


def test_short_input_changes_only_real_tokens():
    built, model, _ = _reft_model("method.prefix_positions=10", "method.suffix_positions=3")
    enc = built.tokenizer(["good", "the plot was dull and very long indeed and more"], padding=True,
                          return_tensors="pt")
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    assert torch.isfinite(out.logits).all()


def test_param_count_counts_used_units_only_minilm():
    built, model, method = _reft_model(model="minilm")
    report = params.param_report(model, built.classifier + built.pooler, built.base_total, method)
    assert report["adapter"] == 6 * (2 * 384 + 1) == 4_614  # REFERENCE: 4,614 used of adapters' 9,228
    assert report["head"] == 770


@pytest.mark.parametrize("tied,suffix,units", [(False, 0, 1), (True, 3, 1), (False, 3, 2)])
def test_param_count_by_tying(tied, suffix, units):
    built, model, method = _reft_model("method.r=2", f"method.tied_weights={tied}", f"method.suffix_positions={suffix}")
    report = params.param_report(model, built.classifier + built.pooler, built.base_total, method)
    assert report["adapter"] == 2 * units * 2 * (2 * 32 + 1)
    # R is dense (orthonormal rows) although its Householder storage is mostly zero at init
    assert report["nonzero"] == report["adapter"]


def test_bf16_autocast_keeps_projection_fp32(use_mirror, tmp_path):
    record = run_tiny(tmp_path / "run", "method=loreft", "train.precision=bf16")
    assert record["status"] == "success" and record["inferred"]["precision"]["value"] == "bf16"
    _, model, _ = _reft_model()
    assert model.bert.encoder.layer[0].reft_layer.refts["reft"].units[0].projection.weight.dtype == torch.float32


def test_max_length_must_fit_the_positions(use_mirror, tmp_path):
    from harness.errors import HarnessError
    with pytest.raises(HarnessError, match="method 'loreft_r32_p10' needs 10"):
        run_tiny(tmp_path / "run", "method=loreft_r32_p10", "task.max_length=8")


def test_weight_decay_does_not_collapse_the_orthogonal_projection(use_mirror, tmp_path):
    run_tiny(tmp_path / "run", "method=loreft", "method.r=2", "train.weight_decay=0.1", "train.max_steps=30",
             "train.eval_every=30", "train.save_artifact=true")
    from safetensors.torch import load_file
    state = load_file(str(tmp_path / "run/artifact/trainable.safetensors"))
    originals = [v for k, v in state.items() if k.endswith("parametrizations.weight.original")]
    assert originals and all(torch.equal(v.diagonal().abs(), torch.ones(2)) for v in originals)
