"""Training batches: `random` (slices of a shuffled epoch) and `length_grouped` (shuffled mega-batches
sorted by length): every row once per epoch, reproducible from (seed, epoch), resumable mid-epoch,
and far less padding on real sentence lengths."""

import numpy as np
import pytest
import torch

from conftest import REAL_MIRROR, compose, run_tiny
from harness import config, data
from harness.errors import HarnessError


def _batches(n=1000, size=32, batching="length_grouped", seed=3, lengths=None, group=4):
    lengths = np.random.default_rng(0).integers(3, 60, n) if lengths is None else lengths
    return data.TrainBatches(range(n), size, seed, collate=None, batching=batching, lengths=lengths, group=group)


@pytest.mark.parametrize("batching", data.BATCHINGS)
def test_every_row_once_per_epoch_in_full_batches(batching):
    tb = _batches(n=1000, batching=batching)
    for epoch in (0, 1):
        batches = tb.batch_indices(epoch)
        assert len(batches) == tb.per_epoch == 32
        assert sorted(i for b in batches for i in b) == list(range(1000))
        assert sum(len(b) < 32 for b in batches) == 1  # only the epoch's remainder is short


def test_random_batching_is_unchanged_slices_of_the_epoch_permutation():
    tb = _batches(batching="random")
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([3, 0]).generate_state(1)[0]))
    order = torch.randperm(1000, generator=g).tolist()
    assert tb.batch_indices(0) == [order[i:i + 32] for i in range(0, 1000, 32)]


def test_length_grouped_is_reproducible_and_reshuffled_each_epoch():
    a, b = _batches(), _batches()
    assert a.batch_indices(0) == b.batch_indices(0)
    assert a.batch_indices(0) != a.batch_indices(1)
    assert a.batch_indices(0) != _batches(seed=4).batch_indices(0)


def test_length_grouped_batches_hold_similar_lengths_and_the_longest_comes_first():
    lengths = np.random.default_rng(0).integers(3, 60, 1000)
    batches = _batches(lengths=lengths).batch_indices(0)
    assert lengths[batches[0]].max() == lengths.max()
    spread_grouped = np.mean([np.ptp(lengths[b]) for b in batches])
    spread_random = np.mean([np.ptp(lengths[b]) for b in _batches(lengths=lengths, batching="random").batch_indices(0)])
    assert spread_grouped < spread_random / 3
    # batches are shuffled, not ordered by length
    firsts = [lengths[b[0]] for b in batches[1:]]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)


def _padded_per_real(batches, lengths, multiple=1):
    padded = sum(len(b) * (-(-lengths[b].max() // multiple) * multiple) for b in batches)
    return padded / lengths.sum()


def test_on_real_sst2_lengths_length_grouping_removes_most_padding():
    import pandas as pd
    sentences = pd.read_parquet(f"{REAL_MIRROR}/glue/sst2/train.parquet")["sentence"][:6400]
    # whitespace words + [CLS]/[SEP]: close enough to wordpiece lengths for a padding ratio
    lengths = np.array([min(len(s.split()) + 2, 128) for s in sentences])
    random_ratio = _padded_per_real(_batches(6400, batching="random", lengths=lengths).batch_indices(0), lengths)
    grouped_ratio = _padded_per_real(_batches(6400, lengths=lengths, group=50).batch_indices(0), lengths)
    assert random_ratio > 2.0 and grouped_ratio < 1.1, (random_ratio, grouped_ratio)


def test_resume_mid_epoch_continues_with_the_same_batches():
    tb = _batches(n=200, size=8)

    class Rows(list):
        def __getitem__(self, idx):
            return {"x": [int(i) for i in idx]} if isinstance(idx, list) else super().__getitem__(idx)

    tb.dataset = Rows(range(200))
    tb.collate = lambda feats: [f["x"] for f in feats]
    it = tb.iterate()
    straight = [next(it) for _ in range(40)]  # crosses into epoch 1 (25 batches per epoch)
    resumed = tb.iterate(1, 5)
    assert [next(resumed) for _ in range(10)] == straight[30:40]


def test_a_run_with_length_grouping_and_pad_multiple_records_its_padding(use_mirror, tmp_path):
    record = run_tiny(tmp_path / "run", "train.batching=length_grouped", "train.pad_to_multiple_of=8",
                      "train.max_steps=6", "train.eval_every=6", "train.log_every=2", "train.checkpoint_every=null",
                      "train.batch_size=8")
    cost = record["cost"]
    assert record["status"] == "success" and cost["padded_tokens"] % 8 == 0
    assert cost["padded_per_real_token"] == pytest.approx(cost["padded_tokens"] / cost["train_tokens"])
    assert cost["padded_per_real_token"] >= 1.0


@pytest.mark.parametrize("override,fragment", [
    ("train.batching=sorted", "train.batching must be one of"),
    ("train.group_batches=0", "train.group_batches must be >= 1"),
    ("train.pad_to_multiple_of=0", "train.pad_to_multiple_of must be >= 1 or null"),
])
def test_impossible_batching_settings_are_refused(override, fragment):
    with pytest.raises(HarnessError, match=fragment):
        config.validate(compose(override))


def test_batching_is_part_of_both_identities():
    from omegaconf import OmegaConf

    from harness.results import config_identity, run_identity
    a, b = (OmegaConf.to_container(compose(*o), resolve=True) for o in ([], ["train.batching=random"]))
    assert run_identity(a) != run_identity(b) and config_identity(a) != config_identity(b)
