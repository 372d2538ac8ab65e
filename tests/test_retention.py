"""Retention probes (eval.retention): the numbers they compute, that they measure the model with its
adapter attached, the record and events a run writes, resume, bad input, and the analysis."""

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import cli_in_process, compose, run_tiny

BUDGET = ("train.max_steps=20", "train.log_every=5", "train.eval_every=10", "train.checkpoint_every=10",
          "train.num_threads=1")
PROBES = "eval.retention=[sts_embedding,mlm_loss]"


# -- the numbers ----------------------------------------------------------------------------------

def test_cosine_spearman_against_a_hand_computed_rho():
    """Pairs at known angles: cosines 1, .866, .5, 0, -.5 rank 5 4 3 2 1; gold 5 3 4 1 0 ranks 5 3 4 2 1;
    d = 0 1 -1 0 0, so rho = 1 - 6*2 / (5*24) = 0.9. Lengths must not matter (cosine)."""
    from harness.probes.sts_embedding import cosine_spearman
    angles = np.radians([0, 30, 60, 90, 120])
    first = np.array([[1.0, 0.0]] * 5) * np.array([[1], [2], [3], [4], [5]])
    second = np.stack([np.cos(angles), np.sin(angles)], 1) * 7
    assert cosine_spearman(first, second, [5, 3, 4, 1, 0]) == pytest.approx(0.9, abs=1e-12)
    assert cosine_spearman(first, second, [4, 3, 2, 1, 0]) == pytest.approx(1.0)


def test_pooling_reads_real_tokens_only():
    import torch

    from harness.probes.base import pool
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                           [[100.0, 100.0], [5.0, 6.0], [7.0, 8.0]]])
    right, left = torch.tensor([1, 1, 0]), torch.tensor([0, 1, 1])
    mask = torch.stack([right, left])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 3.0], [6.0, 7.0]]  # the pad rows never count
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 2.0], [5.0, 6.0]]  # first real token
    assert pool(hidden, mask, "last").tolist() == [[3.0, 4.0], [7.0, 8.0]]  # last real token, either padding


def test_masking_is_seeded_and_spares_special_tokens():
    from harness.probes.mlm_loss import mask_rows

    def rows():
        return [{"input_ids": list(range(100, 100 + n)), "special_tokens_mask": [1] + [0] * (n - 2) + [1]}
                for n in (3, 12, 42)]
    a, b = rows(), rows()
    assert mask_rows(a, 7) == mask_rows(b, 7) == 1 + 2 + 6  # 15% of 1, 10, 40 real tokens, at least one
    assert a == b  # the same tokens every time
    for row in a:
        masked = [i for i, t in enumerate(row["input_ids"]) if t == 7]
        assert masked == [i for i, y in enumerate(row["labels"]) if y != -100]
        assert 0 not in masked and len(row["input_ids"]) - 1 not in masked  # [CLS] / [SEP] untouched
        assert all(row["labels"][i] == 100 + i for i in masked)


# -- the probe measures the model with its adapter attached ---------------------------------------

def _probe_on(method: str, *overrides):
    """(value on the base model, the run's Retention, the base model built for a run) on tiny BERT."""
    from harness import models
    from harness.probes.runner import Retention
    from harness.runtime import setup_runtime
    cfg = compose("model=tiny_bert", f"method={method}", "eval.retention=[sts_embedding]", "train.precision=fp32",
                  "train.num_threads=1", *overrides)
    runtime = setup_runtime(cfg.train)
    built = models.build(cfg)
    retention = Retention(cfg, built, runtime)
    return retention._measure("sts_embedding", built.model)[0], retention, cfg, built


def test_lora_at_init_leaves_the_probe_unchanged_and_a_trained_b_changes_it(use_mirror):
    import torch

    from harness.run import apply_method
    base, retention, cfg, built = _probe_on("lora")
    model, _, _ = apply_method(cfg, built, 10, "cpu")
    assert retention._measure("sts_embedding", model)[0] == base  # B = 0: bit for bit
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
    assert retention._measure("sts_embedding", model)[0] != base  # the probe runs through the adapter


def test_reft_interventions_are_active_in_the_probe(use_mirror):
    """LoReFT is not the identity at init (random R, W, b): through the encoder body, its
    interventions (adapters' hooks, positions from the attention mask) must change the value."""
    from harness.run import apply_method
    base, retention, cfg, built = _probe_on("loreft")
    model, _, _ = apply_method(cfg, built, 10, "cpu")
    assert retention._measure("sts_embedding", model)[0] != base


def test_mlm_loss_equals_the_masked_lm_models_own_loss(use_mirror, tmp_path):
    """A tiny BertForMaskedLM checkpoint: the probe (the run's body + the checkpoint's MLM head on the
    masked positions) gives the loss BertForMaskedLM computes itself on the same inputs."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from harness import models
    from harness.probes.runner import Retention
    from harness.runtime import setup_runtime
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64)).save_pretrained(tmp_path / "mlm")
    cfg = compose("model=tiny_bert", "model.from_config=null", f"model.pretrained={tmp_path / 'mlm'}",
                  "eval.retention=[mlm_loss]", "train.precision=fp32", "train.num_threads=1")
    runtime = setup_runtime(cfg.train)
    built = models.build(cfg)
    retention = Retention(cfg, built, runtime)
    assert "skipped" not in retention.entries["mlm_loss"], retention.entries
    value = retention._measure("mlm_loss", built.model)[0]
    reference = BertForMaskedLM.from_pretrained(tmp_path / "mlm").eval()
    total = count = 0
    with torch.inference_mode():
        for _, batch in retention.probes["mlm_loss"].batches:
            n = int((batch["labels"] != -100).sum())
            total, count = total + float(reference(**batch).loss) * n, count + n
    assert count == retention.entries["mlm_loss"]["masked_tokens"] > 0
    assert value == pytest.approx(total / count, rel=1e-5)


def test_mlm_loss_is_skipped_with_its_reason_without_a_pretrained_head():
    """MiniLM's checkpoint (sentence-transformers) stores BertModel only; random models have none."""
    from harness.probes.mlm_loss import MlmLoss, _load_head
    _, _, why = _load_head(compose("model=minilm"))
    assert why.startswith("the checkpoint has no masked-LM head") and "cls.predictions" in why
    assert "random weights" in MlmLoss(compose("model=tiny_bert")).prepare(None, None)
    assert "decoder" in MlmLoss(compose("model=tiny_llama")).prepare(None, None)


# -- a run: record, events, training untouched, resume ------------------------------------------

def _events(run_dir):
    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _losses(run_dir):
    return [(e["step"], e["train/loss"]) for e in _events(run_dir) if "train/loss" in e]


def test_a_run_records_before_after_drop_and_probes_never_change_training(use_mirror, tmp_path, monkeypatch):
    straight = run_tiny(tmp_path / "straight", PROBES, *BUDGET)
    sts, mlm = straight["retention"]["sts_embedding"], straight["retention"]["mlm_loss"]
    assert sts["drop"] == pytest.approx(sts["before"] - sts["after"]) and sts["before"] != sts["after"]
    assert sts["pooling"] == "mean" and sts["pairs"] == 40 and sts["higher_is_better"] is True
    assert sts["data"]["task"] == "stsb" and len(sts["data"]["sha256"]) == 64
    assert mlm == {"higher_is_better": False, "version": "1",
                   "skipped": "model 'tiny_bert' is built from model.from_config (random weights): no pretrained"
                              " masked-LM head"}
    assert straight["inferred"]["retention_pooling"]["value"] == "mean"
    assert straight["inferred"]["retention_mlm_loss"]["value"] == "skipped"
    events = [e for e in _events(tmp_path / "straight") if any(k.startswith("retention/") for k in e)]
    assert events == [{"step": 0, "time": events[0]["time"], "retention/sts_embedding/before": sts["before"]},
                      {"step": 20, "time": events[1]["time"], "retention/sts_embedding/after": sts["after"],
                       "retention/sts_embedding/drop": sts["drop"]}]

    plain = run_tiny(tmp_path / "plain", *BUDGET)
    assert "retention" not in plain  # no probe, no field
    assert _losses(tmp_path / "plain") == _losses(tmp_path / "straight")  # probes draw no random numbers
    assert plain["metrics"] == straight["metrics"]
    assert plain["run_id"] != straight["run_id"] and plain["config_id"] != straight["config_id"]

    # crash after the step-10 checkpoint and resume: "before" is the base model's, taken from the
    # first attempt's record (not re-measured on the restored, trained weights), logged once
    crashed = tmp_path / "crashed"
    monkeypatch.setenv("HARNESS_FAULT", "error@13")
    with pytest.raises(RuntimeError, match="injected fault"):
        run_tiny(crashed, PROBES, *BUDGET)
    monkeypatch.delenv("HARNESS_FAULT")
    resumed = run_tiny(crashed, PROBES, *BUDGET)
    assert [a["resumed_from_step"] for a in resumed["attempts"]] == [0, 10]
    for key in ("before", "after", "drop"):
        assert resumed["retention"]["sts_embedding"][key] == sts[key]
    assert sum("retention/sts_embedding/before" in e for e in _events(crashed)) == 1


def test_probe_settings_join_the_identity_only_when_a_probe_runs():
    from omegaconf import OmegaConf

    from harness.results import PROBE_SETTINGS, config_identity, run_identity
    resolved = OmegaConf.to_container(compose("model=tiny_bert"), resolve=True)
    bare = {g: ({k: v for k, v in c.items() if k not in PROBE_SETTINGS.get(g, ())} if isinstance(c, dict) else c)
            for g, c in resolved.items()}
    assert run_identity(resolved) == run_identity(bare) and config_identity(resolved) == config_identity(bare)
    pooled = OmegaConf.to_container(compose("model=tiny_bert", "model.pooling=cls"), resolve=True)
    assert run_identity(pooled) == run_identity(resolved)  # read by no probe here
    probed = OmegaConf.to_container(compose("model=tiny_bert", "eval.retention=[sts_embedding]"), resolve=True)
    probed_cls = OmegaConf.to_container(compose("model=tiny_bert", "eval.retention=[sts_embedding]",
                                                "model.pooling=cls"), resolve=True)
    assert len({run_identity(resolved), run_identity(probed), run_identity(probed_cls)}) == 3
    assert len({config_identity(resolved), config_identity(probed), config_identity(probed_cls)}) == 3


# -- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides,fragment", [
    (["eval.retention=[sts_embeding]"],
     "eval.retention: unknown probe 'sts_embeding' (did you mean 'sts_embedding'?); known: mlm_loss, sts_embedding"),
    (["eval.retention=[mlm_loss,mlm_loss]"], "eval.retention names ['mlm_loss'] more than once"),
    (["eval.retention=[sts_embedding]", "model.pooling=max"], "model.pooling must be one of"),
])
def test_bad_probe_settings_are_one_line_and_exit_2(overrides, fragment, mirror, tmp_path):
    run_dir = tmp_path / "run"
    proc = cli_in_process("model=tiny_bert", "logger=none", *overrides, f"hydra.run.dir={run_dir}",
                          env={"HARNESS_DATA_DIR": str(mirror)})
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("harness: error: ") and fragment in lines[0], lines[0]
    assert not run_dir.exists()


def test_a_probe_whose_data_is_missing_stops_the_run_before_training(mirror, tmp_path):
    partial = tmp_path / "mirror"
    shutil.copytree(mirror / "glue" / "sst2", partial / "glue" / "sst2")  # the task's data, not STS-B
    run_dir = tmp_path / "run"
    proc = cli_in_process("model=tiny_bert", "logger=none", "eval.retention=[sts_embedding]",
                          f"hydra.run.dir={run_dir}", env={"HARNESS_DATA_DIR": str(partial)})
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "eval.retention: probe 'sts_embedding' reads stsb 'validation'" in lines[0]
    assert not run_dir.exists()


# -- analysis ---------------------------------------------------------------------------------------

def _record(run_dir, *, label, seed, metric, after, stored, before=0.80, kind="lora"):
    from harness.results import config_identity
    run_dir.mkdir(parents=True)
    config = {"task": {"name": "sst2"}, "model": {"name": "minilm"}, "eval": {"retention": ["sts_embedding"]},
              "train": {"base_lr": 5e-5, "max_steps": 40, "seed": seed},
              "method": {"label": label, "kind": kind, "lr_multiplier": 10, "r": stored // 1000}}
    record = {"run_id": f"{label}-{seed}", "config_id": config_identity(config), "status": "success", "seed": seed,
              "report_metric": "accuracy", "metrics": {"accuracy": metric}, "evaluation": {"protocol": "last"},
              "params": {"adapter": stored, "head": 10, "trainable": stored + 10, "stored": stored, "nonzero": stored,
                         "adapter_pct_of_base": 1.0},
              "cost": {"train_seconds": 1.0, "peak_memory_mb": 100.0, "tokens_per_second": 1.0},
              "inferred": {"lr": {"value": 5e-4}}, "flags": [], "provenance": {"device": "cpu"}, "config": config,
              "retention": {"sts_embedding": {"before": before, "after": after, "drop": before - after,
                                              "higher_is_better": True},
                            "mlm_loss": {"skipped": "no head", "higher_is_better": False}}}
    (run_dir / "result.json").write_text(json.dumps(record))
    (run_dir / "metrics.jsonl").write_text("")


def test_analysis_columns_plot_and_front(tmp_path):
    """A: best score, worst retention, most params; B: less score, best retention, fewest params;
    C: dominated by B on all three. Front = A and B."""
    from harness import analysis
    sweep = tmp_path / "sweep"
    for seed in (1, 2):
        _record(sweep / f"a{seed}", label="a", seed=seed, metric=0.90 + seed / 100, after=0.60 + seed / 100,
                stored=9000)
        _record(sweep / f"b{seed}", label="b", seed=seed, metric=0.85, after=0.78, stored=2000)
        _record(sweep / f"c{seed}", label="c", seed=seed, metric=0.80, after=0.70, stored=4000)
    report = analysis.build([sweep])
    a = report.table.set_index("method").loc["a"]
    assert a["retention_sts_embedding_after_mean"] == pytest.approx(0.615)
    assert a["retention_sts_embedding_after_sd"] == pytest.approx(np.std([0.61, 0.62], ddof=1))
    assert a["retention_sts_embedding_drop_mean"] == pytest.approx(0.185)
    assert "retention_mlm_loss_after_mean" not in report.table  # skipped everywhere: no column
    assert "## Retention" in report.markdown and "| sst2 | b |" in report.markdown
    written = analysis.write(report, tmp_path / "out", with_records=False)
    assert {p.name for p in written} >= {"retention.png", "retention_front.csv"}
    front = pd.read_csv(tmp_path / "out" / "retention_front.csv")
    assert list(front["label"]) == ["a r9", "b r2"] and set(front["probe"]) == {"sts_embedding"}

    for run in sweep.glob("*/result.json"):  # the same sweep without retention: no section, no file
        record = json.loads(run.read_text())
        del record["retention"]
        run.write_text(json.dumps(record))
    plain = analysis.build([sweep])
    assert not any(c.startswith("retention_") for c in plain.table) and "## Retention" not in plain.markdown
    analysis.write(plain, tmp_path / "out", with_records=False)
    assert not (tmp_path / "out" / "retention.png").exists()  # the earlier analysis's copy is removed


def test_spearman_and_its_interval_by_hand():
    from harness.analysis.retention_stats import spearman
    out = spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert out["rho"] == pytest.approx(1 - 6 * 4 / (5 * 24))  # sum of squared rank differences = 4: 0.8
    half = 1.959964 * math.sqrt((1 + 0.8 ** 2 / 2) / 2)  # Bonett-Wright standard error, n - 3 = 2
    assert (out["ci95_low"], out["ci95_high"]) == pytest.approx((math.tanh(math.atanh(0.8) - half),
                                                                 math.tanh(math.atanh(0.8) + half)), abs=1e-5)
    # of the 120 orderings, 8 have rho >= 0.8 (identity, 4 adjacent swaps, 3 pairs of disjoint ones), 8 <= -0.8
    assert out["p_permutation"] == pytest.approx(16 / 120)
    assert np.isnan(spearman([1, 2, 3], [1, 2, 3])["rho"])  # too few configurations for an interval


def test_learns_less_forgets_less_is_paired_by_seed_against_full_finetuning(tmp_path):
    from harness import analysis
    sweep = tmp_path / "sweep"
    for seed, (full_metric, lo_metric, lo_after) in enumerate(((0.90, 0.85, 0.75), (0.91, 0.86, 0.76),
                                                               (0.92, 0.86, 0.74)), start=1):
        _record(sweep / f"full{seed}", label="full", kind="fullft", seed=seed, metric=full_metric, after=0.50,
                stored=20000)
        _record(sweep / f"lo{seed}", label="lo", seed=seed, metric=lo_metric, after=lo_after, stored=2000)
        _record(sweep / f"mid{seed}", label="mid", seed=seed, metric=0.88, after=0.60 + seed / 100, stored=5000)
    report = analysis.build([sweep])
    pairs = report.retention_pairs.set_index("method")
    assert set(pairs.index) == {"lo", "mid"} and set(pairs["reference"]) == {"full"}
    lo = pairs.loc["lo"]
    assert lo["n"] == 3 and lo["score_diff"] == pytest.approx(-(0.05 + 0.05 + 0.06) / 3)
    assert lo["drop_diff"] == pytest.approx(-(0.25 + 0.26 + 0.24) / 3) and lo["drop_ci95_high"] < 0
    assert lo["drop_p_signflip"] == pytest.approx(2 / 8)  # every sign the same: the exact minimum at n = 3
    assert "| lo | r2 | full | 3 |" in report.markdown and "yes (both intervals below 0)" in report.markdown
    trade = report.tradeoff.iloc[0]
    assert trade["configs"] == 3 and np.isnan(trade["rho"])  # 3 configurations: no interval, said as such
    written = {p.name for p in analysis.write(report, tmp_path / "out", with_records=False)}
    assert {"retention_paired.csv", "retention_tradeoff.csv"} <= written
