"""sts_embedding: zero-shot semantic similarity of the model's own sentence embeddings.

Each STS-B validation sentence is embedded by the encoder body (no head) with the model's declared
pooling (`model.pooling`); the cosine similarity of each pair is ranked against the gold scores
(0-5): Spearman's rho, as MTEB's STSBenchmark and sentence-transformers' evaluator compute it (on
the validation split here, which the harness bundles; MTEB reports the test split).
"""

from typing import Optional

import numpy as np

from harness.probes import register
from harness.probes.base import Batches, Probe, body_inputs, check_probe_data, encoder_body, pool, probe_data, tokenize

TASK, SPLIT = "stsb", "validation"


def cosine_spearman(first, second, gold) -> float:
    """Spearman's rho between the cosine similarities of paired embeddings (rows of `first` and
    `second`) and the gold scores (float64 throughout; 0.0 when either side is constant)."""
    from harness.metrics import spearman
    a, b = np.asarray(first, np.float64), np.asarray(second, np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)).clip(min=1e-12)
    return spearman(cos, np.asarray(gold, np.float64))


@register
class StsEmbedding(Probe):
    name = "sts_embedding"
    higher_is_better = True
    what = "Spearman rho of cosine(sentence embeddings) vs STS-B validation gold scores, zero-shot (no head)"

    @classmethod
    def check(cls, cfg) -> None:
        check_probe_data(cls.name, TASK, SPLIT)

    def prepare(self, built, runtime) -> Optional[str]:
        task, raw, source = probe_data(TASK, SPLIT)
        first, second = task.text_fields
        keys = body_inputs(encoder_body(built.model))
        rows, at_limit = tokenize(built.tokenizer, list(raw[first]) + list(raw[second]), keys)
        self.pairs = len(raw)
        self.gold = np.asarray(raw[task.label_field], np.float64)
        self.batches = Batches(rows, built.tokenizer, self.cfg.train.eval_batch_size, keys)
        self.pooling = self.cfg.model.pooling
        self.info = {"what": self.what, "pooling": self.pooling, "pairs": self.pairs,
                     "sentences_at_max_tokens": at_limit, "data": {"task": TASK, "split": SPLIT, **source}}
        self.inferred = {"retention_pooling": {
            "value": self.pooling, "reason": f"model.pooling of model '{self.cfg.model.name}' (declared in its YAML):"
                                            f" how {self.name} reads a sentence embedding"}}
        return None

    def measure(self, model) -> float:
        body = encoder_body(model)
        device = next(body.parameters()).device
        embeddings = None
        for positions, batch in self.batches:
            out = body(**{k: v.to(device) for k, v in batch.items()})
            pooled = pool(out.last_hidden_state, batch["attention_mask"], self.pooling).cpu().numpy()
            if embeddings is None:
                embeddings = np.empty((2 * self.pairs, pooled.shape[1]), np.float32)
            embeddings[positions] = pooled
        return cosine_spearman(embeddings[:self.pairs], embeddings[self.pairs:], self.gold)
