"""Model building: decoder pad-token handling, head detection."""

import torch

from conftest import compose
from harness import models


def test_decoder_scores_the_last_real_token_under_padding():
    built = models.build(compose("model=tiny_llama"))
    model, tok = built.model.eval(), built.tokenizer
    short, long = "a good film", "the plot was dull and very long indeed"
    enc = tok([short, long], padding=True, return_tensors="pt")
    enc.pop("token_type_ids", None)
    alone = tok([short], return_tensors="pt")
    alone.pop("token_type_ids", None)
    assert enc["attention_mask"][0].sum() < enc["attention_mask"].shape[1]  # the short one is padded
    with torch.no_grad():
        batched = model(**enc).logits[0]
        single = model(**alone).logits[0]
    assert torch.allclose(batched, single, atol=1e-5)


def test_missing_pad_token_falls_back_to_eos_and_is_reported():
    built = models.build(compose("model=tiny_llama"))
    tok = built.tokenizer
    tok.pad_token = None
    tok.eos_token = "[SEP]"
    info = models._ensure_pad_token(tok, "decoder")
    assert tok.pad_token == "[SEP]" and "eos_token" in info["reason"]


def test_a_run_that_changes_its_tokenizer_does_not_change_the_next_runs():
    """The tokenizer is cached per process (sweeps): each build gets its own copy, so the pad token a
    later run uses and records is the tokenizer's own, whatever an earlier run (or test) did."""
    first = models.build(compose("model=tiny_bert"))
    first.tokenizer.pad_token = None
    first.tokenizer.pad_token = "[SEP]"
    second = models.build(compose("model=tiny_bert"))
    assert second.tokenizer.pad_token == "[PAD]"
    assert second.inferred["pad_token"] == {"value": "[PAD]", "reason": "the tokenizer's own pad token"}
    assert second.model.config.pad_token_id == second.tokenizer.convert_tokens_to_ids("[PAD]")


def test_a_pooler_the_checkpoint_lacks_trains_under_the_default_head_policy():
    """DeBERTa-v3 ships no pooler weights: a frozen random pooler would sit in front of every method's
    classifier, so under train.head=classifier it trains; classifier+pooler and none are literal."""
    built = models.build(compose("model=tiny_bert"))
    assert built.untrained_head == []  # a random model from a config: nothing comes from a checkpoint
    built.untrained_head = ["bert.pooler"]  # as _not_in_checkpoint finds for DeBERTa-v3
    assert models.head_policy(built, "classifier") == (["classifier", "bert.pooler"], [])
    assert models.head_policy(built, "none") == ([], ["classifier", "bert.pooler"])
    mcfg = compose("model=minilm").model
    assert models._not_in_checkpoint(["deberta.pooler"], ["deberta.pooler.dense.weight", "classifier.weight"],
                                     mcfg) == ["deberta.pooler"]
    assert models._not_in_checkpoint(["bert.pooler"], ["classifier.weight", "classifier.bias"], mcfg) == []


def test_head_modules_detected():
    bert = models.build(compose("model=tiny_bert"))
    assert bert.classifier == ["classifier"] and bert.pooler == ["bert.pooler"]
    llama = models.build(compose("model=tiny_llama"))
    assert llama.classifier == ["score"] and llama.pooler == []
    assert llama.model.config.pad_token_id == llama.tokenizer.pad_token_id
