"""mlm_loss: masked-LM loss of the encoder on fixed held-out text, read by the checkpoint's own MLM head.

Text: every STS-B validation sentence (both sides), never trained on by any task here. Masking:
15% of each sentence's non-special tokens (at least one), drawn once with a fixed seed and
replaced by the mask token, so before and after see the very same inputs. The encoder body of
the run's model (adapters attached) gives the hidden states; the pretrained MLM head of the
checkpoint, loaded once and kept fixed, turns the masked positions into logits; the value is the
mean cross-entropy over all masked tokens (lower is better).

Skipped, with the reason recorded, where there is no pretrained MLM head: decoders, random
models built from a config, checkpoints saved without one (the sentence-transformers MiniLM
stores only BertModel), tokenizers without a mask token.
"""

import inspect
from typing import Optional

import numpy as np

from harness.probes import register
from harness.probes.base import Batches, Probe, body_inputs, check_probe_data, encoder_body, probe_data, tokenize

TASK, SPLIT = "stsb", "validation"
MASK_RATE, MASK_SEED = 0.15, 0


def mask_rows(rows, mask_token_id: int, rate: float = MASK_RATE, seed: int = MASK_SEED) -> int:
    """Mask `rate` of each row's non-special tokens in place (at least one; labels -100 elsewhere),
    with one seeded generator over the rows in order. Returns the number of masked tokens."""
    rng = np.random.default_rng(seed)
    masked = 0
    for row in rows:
        eligible = [i for i, special in enumerate(row.pop("special_tokens_mask")) if not special]
        labels = [-100] * len(row["input_ids"])
        if eligible:
            chosen = rng.choice(eligible, size=max(1, int(round(rate * len(eligible)))), replace=False)
            for i in chosen:
                labels[i] = row["input_ids"][i]
                row["input_ids"][i] = mask_token_id
            masked += len(chosen)
        row["labels"] = labels
    return masked


def _load_head(cfg):
    """(head module, its word embeddings or None, skip reason or None) from the checkpoint's
    masked-LM model: every child but the encoder, which is dropped (the run's own body is used)."""
    from transformers import AutoModelForMaskedLM

    from harness.models import resolve_location
    try:
        mlm, info = AutoModelForMaskedLM.from_pretrained(resolve_location(cfg.model.pretrained),
                                                         revision=cfg.model.revision, output_loading_info=True)
    except (ValueError, OSError) as e:  # no masked-LM class for this architecture, unreadable files
        return None, None, f"no masked-LM model for this checkpoint ({str(e).splitlines()[0]})"
    prefix = mlm.base_model_prefix
    missing = [k for k in info.get("missing_keys", []) if not k.startswith(prefix + ".")]
    if missing:
        return None, None, (f"the checkpoint has no masked-LM head: {len(missing)} head weight(s) missing"
                            f" (e.g. {missing[0]}); a random head would measure nothing")
    heads = [module for name, module in mlm.named_children() if name != prefix]
    if len(heads) != 1:
        return None, None, f"{type(mlm).__name__} has {len(heads)} modules besides its encoder; expected one MLM head"
    head = heads[0]
    # DeBERTa-v2's head decodes with the word embeddings it is given: the checkpoint's own
    takes_embeddings = len(inspect.signature(head.forward).parameters) == 2
    return head, (mlm.get_input_embeddings() if takes_embeddings else None), None


@register
class MlmLoss(Probe):
    name = "mlm_loss"
    higher_is_better = False
    what = ("mean cross-entropy of the checkpoint's MLM head on 15% seeded-masked tokens of the STS-B"
            " validation sentences (lower is better)")

    @classmethod
    def check(cls, cfg) -> None:
        check_probe_data(cls.name, TASK, SPLIT)

    def prepare(self, built, runtime) -> Optional[str]:
        mcfg = self.cfg.model
        if mcfg.arch != "encoder":
            return f"model '{mcfg.name}' is a {mcfg.arch}: a causal LM has no masked-LM head"
        if mcfg.from_config is not None:
            return f"model '{mcfg.name}' is built from model.from_config (random weights): no pretrained masked-LM head"
        tokenizer = built.tokenizer
        if tokenizer.mask_token_id is None:
            return f"the tokenizer of model '{mcfg.name}' has no mask token"
        head, embeddings, why = _load_head(self.cfg)
        if why:
            return why
        self.head = head.to(runtime.device).eval().requires_grad_(False)
        self.embeddings = None if embeddings is None else embeddings.to(runtime.device).requires_grad_(False)
        task, raw, source = probe_data(TASK, SPLIT)
        keys = body_inputs(encoder_body(built.model))
        texts = [t for field in task.text_fields for t in raw[field]]
        rows, at_limit = tokenize(tokenizer, texts, keys, return_special_tokens_mask=True)
        masked = mask_rows(rows, tokenizer.mask_token_id)
        self.batches = Batches(rows, tokenizer, self.cfg.train.eval_batch_size, keys)
        self.info = {"what": self.what, "sentences": len(texts), "masked_tokens": masked, "mask_rate": MASK_RATE,
                     "mask_seed": MASK_SEED, "head": type(head).__name__, "sentences_at_max_tokens": at_limit,
                     "data": {"task": TASK, "split": SPLIT, **source}}
        return None

    def measure(self, model) -> float:
        import torch.nn.functional as F
        body = encoder_body(model)
        device = next(body.parameters()).device
        total, count = 0.0, 0
        for _, batch in self.batches:
            labels = batch["labels"].to(device)
            hidden = body(**{k: v.to(device) for k, v in batch.items() if k != "labels"}).last_hidden_state
            chosen = hidden[labels != -100]  # only the masked positions reach the (vocabulary-wide) head
            logits = self.head(chosen) if self.embeddings is None else self.head(chosen, self.embeddings)
            total += float(F.cross_entropy(logits.float(), labels[labels != -100], reduction="sum"))
            count += int((labels != -100).sum())
        return total / count
