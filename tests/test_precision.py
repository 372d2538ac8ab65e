"""Precision: bf16 autocast where the CPU executes bf16 natively (detected, printed, recorded), fp32
elsewhere; what must stay fp32 under autocast does (task head and so logits/metrics, LoReFT's
orthogonal R, AdaLoRA's importance scores)."""

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose, run_tiny
from harness import models, runtime
from harness.methods.reft import rotation
from harness.run import apply_method


def _fake_cpu(monkeypatch, tmp_path, flags: str):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 avx2 {flags}\n\nprocessor\t: 1\nflags\t\t: fpu {flags}\n")
    monkeypatch.setattr(runtime, "CPUINFO", str(info))


def _auto_cpu():
    return OmegaConf.create({"device": "cpu", "precision": "auto", "num_threads": None, "seed": 1,
                             "deterministic": True})


def test_auto_picks_bf16_on_a_cpu_with_native_bf16(monkeypatch, tmp_path):
    _fake_cpu(monkeypatch, tmp_path, "avx512f avx512_bf16")
    rt = runtime.setup_runtime(_auto_cpu())
    assert rt.precision == "bf16"
    assert rt.inferred["precision"]["reason"].startswith("auto: CPU supports bf16 (avx512_bf16)")
    assert runtime.execution(_auto_cpu()) == {"device_type": "cpu", "precision": "bf16"}


@pytest.mark.parametrize("flags", ["avx512f avx512bw", ""])
def test_auto_picks_fp32_on_a_cpu_without_it_and_says_why(monkeypatch, tmp_path, flags):
    _fake_cpu(monkeypatch, tmp_path, flags)
    rt = runtime.setup_runtime(_auto_cpu())
    assert rt.precision == "fp32" and "lacks native bf16" in rt.inferred["precision"]["reason"]


def test_unreadable_cpuinfo_means_fp32(monkeypatch, tmp_path):
    monkeypatch.setattr(runtime, "CPUINFO", str(tmp_path / "absent"))
    assert runtime.setup_runtime(_auto_cpu()).precision == "fp32"


def test_fp32_on_request_even_where_bf16_is_native(monkeypatch, tmp_path):
    _fake_cpu(monkeypatch, tmp_path, "avx512_bf16 amx_bf16")
    cfg = _auto_cpu()
    cfg.precision = "fp32"
    rt = runtime.setup_runtime(cfg)
    assert rt.precision == "fp32" and rt.inferred["precision"]["reason"] == "set by train.precision"


def test_the_run_prints_and_records_the_choice(use_mirror, tmp_path, monkeypatch, capsys):
    _fake_cpu(monkeypatch, tmp_path, "avx512_bf16")
    record = run_tiny(tmp_path / "run", "train.max_steps=4", "train.eval_every=4", "train.log_every=2",
                      "train.checkpoint_every=null")
    out = capsys.readouterr().out
    assert "precision: bf16  (auto: CPU supports bf16 (avx512_bf16)" in out
    assert record["inferred"]["precision"]["value"] == "bf16"
    assert record["execution"] == {"device_type": "cpu", "precision": "bf16"}
    assert record["inferred"]["fp32_modules"]["value"] == ["base_model.model.classifier"]


def _bf16_model(method: str, *overrides, island: bool = True):
    cfg = compose("model=tiny_bert", f"method={method}", "train.precision=bf16", *overrides)
    rt = runtime.setup_runtime(cfg.train)
    built = models.build(cfg)
    model, m, _ = apply_method(cfg, built, 20, "cpu")
    wrapped = rt.keep_fp32(model, built.classifier) if island else []
    enc = built.tokenizer(["a good film", "the plot was dull and very long indeed"], padding=True, return_tensors="pt")
    return rt, model, m, wrapped, {**enc, "labels": torch.tensor([1, 0])}


@pytest.mark.parametrize("method", ["lora", "fullft", "loreft"])
def test_the_head_runs_in_fp32_under_autocast_so_logits_are_fp32(method):
    rt, model, _, wrapped, batch = _bf16_model(method)
    assert len(wrapped) == 1 and wrapped[0].endswith("classifier")
    with rt.autocast():
        out = model(**batch)
    assert out.logits.dtype == torch.float32
    # without the island the same head emits bf16 logits: the test above can fail
    _, model2, _, _, _ = _bf16_model(method, island=False)
    with rt.autocast():
        assert model2(**batch).logits.dtype == torch.bfloat16


def test_fp32_run_wraps_nothing():
    rt = runtime.Runtime(device="cpu", precision="fp32")
    assert rt.keep_fp32(torch.nn.Sequential(), ("classifier",)) == []


def test_loreft_rotation_stays_fp32_and_orthonormal_under_autocast():
    rt, model, _, _, batch = _bf16_model("loreft", "method.r=4")
    units = [m for m in model.modules() if type(m).__name__ == "ReftUnit"]
    assert units
    with rt.autocast():
        model(**batch).loss.backward()
        rotations = [rotation(unit) for unit in units]
        assert units[0].projection.weight.dtype == torch.bfloat16  # what adapters' own forward would use
    for R in rotations:
        assert R.dtype == torch.float32
        assert torch.allclose(R @ R.T, torch.eye(R.shape[0]), atol=1e-5)
    for unit in units:
        grads = [p.grad for p in unit.parameters() if p.grad is not None]
        assert all(g.dtype == torch.float32 for g in grads)


def test_adalora_importance_scores_stay_fp32_under_autocast():
    rt, model, method, _, batch = _bf16_model("adalora")
    alloc = model.base_model.rankallocator
    for step in range(1, 4):
        with rt.autocast():
            model(**batch).loss.backward()
        method.on_optimizer_step(step, model)
        model.zero_grad()
    assert alloc.ipt and all(v.dtype == torch.float32 for v in alloc.ipt.values())
    assert all(v.dtype == torch.float32 for v in alloc.exp_avg_ipt.values())
