"""Gated tiers. slow: real MiniLM training on the real mirror (run with `pytest -m slow`).
gpu: the CUDA path, bf16 autocast (run with `pytest -m gpu` on a GPU machine)."""

import pytest
import torch

from conftest import run_tiny


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_minilm_lora_learns_sst2(real_mirror, tmp_path):
    from conftest import compose
    from harness.run import run_job
    overrides = ("model=minilm", "task=sst2", "method=lora", "logger=none", "train.progress=false",
                 "train.max_steps=150", "train.eval_every=150")
    record = run_job(compose(*overrides), tmp_path / "run", overrides=overrides)
    assert record["metrics"]["accuracy"] > 0.75  # chance is 0.51


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["lora", "loreft", "adalora"])
def test_cuda_bf16_path(use_mirror, tmp_path, method):
    extra = ["method.tinit=1", "method.tfinal=2", "method.deltaT=1"] if method == "adalora" else []
    record = run_tiny(tmp_path / "run", f"method={method}", *extra)
    assert record["inferred"]["device"]["value"] == "cuda"
    assert record["inferred"]["precision"]["value"] == "bf16"
    assert record["cost"]["peak_memory_kind"] == "cuda_max_allocated"
