"""LoRI: A frozen at init, masks exported by lori_d, lori_s keeps B zero outside its mask."""

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_tiny

D_ARGS = ("method=lori_d", "train.max_steps=8", "train.eval_every=8", "method.lr_multiplier=20")


@pytest.fixture
def lori_d_run(use_mirror, tmp_path):
    run_tiny(tmp_path / "d", *D_ARGS, "train.save_artifact=true")
    return tmp_path / "d"


def _adapter_state(run_dir):
    return load_file(str(run_dir / "artifact/adapter_model.safetensors"))


def test_lori_d_keeps_a_at_init_and_exports_global_masks(lori_d_run):
    a_exported = load_file(str(lori_d_run / "lori/lora_A.safetensors"))
    saved = _adapter_state(lori_d_run)
    a_saved = {k: v for k, v in saved.items() if ".lora_A." in k}
    assert len(a_saved) == len(a_exported) == 12
    for name, a in a_exported.items():
        key = next(k for k in a_saved if f".{name}.lora_A." in k)
        assert torch.equal(a_saved[key], a)  # the A it trained with is the A it exported
    bs = torch.cat([v.abs().flatten() for k, v in saved.items() if ".lora_B." in k])
    for s in (0.5, 0.9, 0.99):
        masks = load_file(str(lori_d_run / f"lori/mask_s{s:g}.safetensors"))
        kept = torch.cat([m.flatten() for m in masks.values()])
        assert kept.float().mean().item() == pytest.approx(1 - s, abs=1 / kept.numel() + 1e-3)
        # global top-k: every kept |B| is at least every dropped |B|
        assert bs[kept].min() >= bs[~kept].max()


def test_lori_d_a_unchanged_by_training(use_mirror, tmp_path):
    from conftest import compose
    from harness import models
    from harness.run import apply_method
    cfg = compose("model=tiny_bert", *D_ARGS)
    model, _, _ = apply_method(cfg, models.build(cfg), 8, "cpu")
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".lora_A." in n)
    assert all(p.requires_grad for n, p in model.named_parameters() if ".lora_B." in n)


def test_lori_s_trains_b_only_inside_the_mask(lori_d_run, tmp_path):
    record = run_tiny(tmp_path / "s", "method=lori_s", f"method.source_run={lori_d_run}", "method.sparsity=0.9",
                      "train.max_steps=8", "train.eval_every=8", "train.save_artifact=true", "train.weight_decay=0.1")
    masks = load_file(str(lori_d_run / "lori/mask_s0.9.safetensors"))
    density = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert density == pytest.approx(0.1, abs=0.01)
    saved = _adapter_state(tmp_path / "s")
    a_d = load_file(str(lori_d_run / "lori/lora_A.safetensors"))
    inside = 0
    for name, mask in masks.items():
        b = saved[next(k for k in saved if f".{name}.lora_B." in k)]
        assert torch.count_nonzero(b[~mask]) == 0, name  # zero outside the mask, weight decay included
        inside += int(torch.count_nonzero(b[mask]))
        a = saved[next(k for k in saved if f".{name}.lora_A." in k)]
        assert torch.equal(a, a_d[name])  # A reused from the lori_d run
    assert inside > 0
    assert record["params"]["nonzero"] == inside <= round(0.1 * record["params"]["adapter"]) + 1
    d_lr = __import__("json").loads((lori_d_run / "result.json").read_text())["inferred"]["lr"]["value"]
    assert record["inferred"]["lr"]["value"] == pytest.approx(10 * d_lr)


@pytest.mark.parametrize("args,fragment", [
    ((), "needs method.source_run"),
    (("method.source_run=/nonexistent",), "no finished lori_d run"),
    (("method.sparsity=0.42",), "exported no mask for sparsity 0.42"),
])
def test_lori_s_fails_clearly_without_its_lori_d_run(lori_d_run, tmp_path, args, fragment):
    from harness.errors import HarnessError
    source = () if args and args[0].startswith("method.source_run") or not args else (f"method.source_run={lori_d_run}",)
    with pytest.raises(HarnessError, match=fragment):
        run_tiny(tmp_path / "s", "method=lori_s", *source, *args)


def test_lori_s_takes_the_lori_d_run_whose_lr_won_on_the_selection_split():
    """Not the first directory: the (configuration, LR) with the best mean selection score over seeds;
    an LR with fewer successful seeds than its configuration's others does not compete."""
    from harness.methods.lori import best_lr_run

    def rec(lr, seed, select, report, config="d1"):
        return {"inferred": {"lr": {"value": lr}}, "seed": seed, "report_metric": "accuracy", "config_id": config,
                "metrics": {"accuracy": report}, "evaluation": {"selection_score": select}}
    candidates = [(rec(1e-4, 1, 0.60, 0.99), "a-lr1e-4-s1"), (rec(1e-4, 2, 0.62, 0.99), "a-lr1e-4-s2"),
                  (rec(1e-3, 1, 0.70, 0.50), "b-lr1e-3-s1"), (rec(1e-3, 2, 0.66, 0.50), "b-lr1e-3-s2")]
    assert best_lr_run(candidates, 2) == "b-lr1e-3-s2"  # best selection mean, though its reported score is worst
    assert best_lr_run(candidates[:2], 1) == "a-lr1e-4-s1"
    assert best_lr_run(candidates, 3) == ""  # the winner has no run of this seed: no silent fallback
    lucky = candidates + [(rec(3e-3, 1, 0.95, 0.9), "c-lr3e-3-s1")]  # its seed 2 diverged
    assert best_lr_run(lucky, 1) == "b-lr1e-3-s1"
    other = candidates + [(rec(1e-3, 1, 0.99, 0.9, config="d2"), "d2-s1"), (rec(1e-3, 2, 0.30, 0.9, config="d2"), "d2-s2")]
    assert best_lr_run(other, 1) == "b-lr1e-3-s1"  # d2's mean 0.645 < 0.68: configurations are not pooled
