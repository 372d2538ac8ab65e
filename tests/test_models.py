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


def test_head_modules_detected():
    bert = models.build(compose("model=tiny_bert"))
    assert bert.classifier == ["classifier"] and bert.pooler == ["bert.pooler"]
    llama = models.build(compose("model=tiny_llama"))
    assert llama.classifier == ["score"] and llama.pooler == []
    assert llama.model.config.pad_token_id == llama.tokenizer.pad_token_id
