"""One data pipeline for every method: load (hub or local mirror) -> tokenize once (cached) -> batches.

Local mirror layout (HARNESS_DATA_DIR): <mirror_path>/<split>.parquet, e.g. glue/sst2/train.parquet.
Tokenized datasets are cached by datasets under an explicit fingerprint of (source data, tokenizer,
max_length, fields), so every process of a sweep reuses them. Batches are padded dynamically.
"""

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from harness import label_scaling
from harness.config import BATCHINGS
from harness.errors import HarnessError
from harness.hub import BUNDLED_DATA, DATA_DIR_ENV, data_dir, data_source

TOKENIZE_VERSION = "1"  # bump when tokenization changes, so old caches are not reused
SUBSET_SEED = 0  # task.max_train_samples draws the same examples for every run seed


def _mirror_file(task_cfg, split: str) -> Optional[Path]:
    root = data_dir()
    if root is None:
        return None
    return Path(root) / task_cfg.mirror_path / f"{split}.parquet"


def check_available(task_cfg) -> dict:
    """Fail fast (one line) if the mirror lacks a split; return where the data comes from."""
    root, why = data_source()
    splits = [task_cfg.train_split, *task_cfg.eval_splits.values()]
    if root is None:
        return {"value": f"hub:{task_cfg.dataset}" + (f"/{task_cfg.subset}" if task_cfg.subset else ""), "reason": why}
    if not Path(root).is_dir():
        raise HarnessError(f"{DATA_DIR_ENV}={root} is not a directory")
    for split in splits:
        path = _mirror_file(task_cfg, split)
        if not path.is_file():
            if Path(root) == BUNDLED_DATA:
                raise HarnessError(f"task '{task_cfg.name}' is not in the data bundled with the package and the hub"
                                   f" is offline; point {DATA_DIR_ENV} at a mirror that has it")
            raise HarnessError(f"task '{task_cfg.name}': split '{split}' is missing from the local mirror ({path} not found)")
    return {"value": f"mirror:{Path(root).resolve() / task_cfg.mirror_path}", "reason": why}


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def load_split(task_cfg, split: str):
    import datasets
    datasets.disable_progress_bars()
    path = _mirror_file(task_cfg, split)
    if path is not None:
        quiet = logging.getLogger("datasets")  # it logs its own line before raising on a bad file
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            return datasets.load_dataset("parquet", data_files={split: str(path)}, split=split)
        except Exception as e:  # noqa: BLE001 - arrow/datasets raise many types for a bad file
            raise HarnessError(f"task '{task_cfg.name}': cannot read {path} ({_first_line(e)})")
        finally:
            quiet.setLevel(level)
    try:
        return datasets.load_dataset(task_cfg.dataset, task_cfg.subset, split=split)
    except Exception as e:  # noqa: BLE001 - hub/network errors come in many types
        raise HarnessError(f"cannot load {task_cfg.dataset}/{task_cfg.subset} split '{split}'"
                           f" ({_first_line(e)}); offline? point {DATA_DIR_ENV} at a local mirror")


# -- what a split must hold before anything trains -----------------------------------------------

@dataclass(frozen=True)
class SplitFacts:
    """One scan of a split (cached per file and columns): its rows, the classification labels it
    holds (bools as 0/1) and what makes it unusable under any config (one line each)."""
    rows: int
    labels: Optional[frozenset]
    problems: Tuple[str, ...]


_FACTS: Dict[tuple, SplitFacts] = {}  # scan key -> facts: a sweep reads each file once per process


def _first_true(mask) -> int:
    import pyarrow.compute as pc
    return int(pc.index(mask, True).as_py())


def _type_name(kind) -> str:
    import pyarrow as pa
    return "text" if pa.types.is_string(kind) or pa.types.is_large_string(kind) else str(kind)


def _scan(table, fields: List[str], label_field: str, regression: bool) -> SplitFacts:
    """Text fields: text, none null or blank. Labels: finite numbers (regression) or integers /
    bools (classification), none missing."""
    import pyarrow as pa
    import pyarrow.compute as pc
    missing = [c for c in fields + [label_field] if c not in table.column_names]
    if missing:
        return SplitFacts(table.num_rows, None, (f"columns {missing} not in the data (has {table.column_names})",))
    rows, problems = table.num_rows, []
    if rows == 0:
        return SplitFacts(0, frozenset(), ())
    for name in fields:
        col = table.column(name)
        if pa.types.is_null(col.type):
            problems.append(f"text field '{name}' is empty in all {rows} rows")
            continue
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            problems.append(f"text field '{name}' holds {_type_name(col.type)}, not text")
            continue
        bad = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0), True)
        n_bad = int(pc.sum(bad).as_py() or 0)
        if n_bad:
            problems.append(f"text field '{name}' has {n_bad} null or empty value(s) (first at row {_first_true(bad)})")
    col, kind = table.column(label_field), table.column(label_field).type
    what = f"label '{label_field}'"
    if col.null_count:
        problems.append(f"{what} has {col.null_count} missing value(s) (first at row {_first_true(pc.is_null(col))})")
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
    if regression:
        if not numeric:
            problems.append(f"{what} holds {_type_name(kind)}; a regression task needs numbers")
        elif pa.types.is_floating(kind):
            bad = pc.fill_null(pc.invert(pc.is_finite(col)), False)
            n_bad = int(pc.sum(bad).as_py() or 0)
            if n_bad:
                problems.append(f"{what} has {n_bad} NaN/inf value(s) (first at row {_first_true(bad)});"
                                " regression targets must be finite")
        return SplitFacts(rows, None, tuple(problems))
    values = None
    if pa.types.is_boolean(kind) or pa.types.is_integer(kind):
        values = pc.cast(col, pa.int64())
    elif pa.types.is_floating(kind):
        bad = pc.fill_null(pc.or_(pc.invert(pc.is_finite(col)), pc.not_equal(pc.floor(col), col)), False)
        n_bad = int(pc.sum(bad).as_py() or 0)
        if n_bad:
            first = _first_true(bad)
            problems.append(f"{what} has {n_bad} non-integer value(s) (e.g. {col[first].as_py()} at row {first});"
                            " classification labels must be integers (or bools)")
        else:
            values = pc.cast(col, pa.int64())
    else:
        example = next((v for v in col.drop_null().slice(0, 1).to_pylist()), None)
        problems.append(f"{what} holds {_type_name(kind)} (e.g. {example!r}); classification labels must be integers"
                        " 0..num_labels-1 (or bools)")
    labels = frozenset(pc.unique(values.drop_null()).to_pylist()) if values is not None else None
    return SplitFacts(rows, labels, tuple(problems))


def _facts(task_cfg, split: str, ds=None) -> Tuple[SplitFacts, str]:
    """(facts, where) for a split: the mirror file read with pyarrow (a bad file is named), or
    the hub dataset (`ds` if already loaded)."""
    fields, label_field = list(task_cfg.text_fields), task_cfg.label_field
    regression = task_cfg.label_type == "regression"
    columns = (tuple(fields), label_field, regression)
    path = _mirror_file(task_cfg, split)
    if path is None:
        where = f"hub {task_cfg.dataset}" + (f"/{task_cfg.subset}" if task_cfg.subset else "")
        key = ("hub", task_cfg.dataset, task_cfg.subset, split, *columns)
        if key not in _FACTS:
            ds = ds if ds is not None else load_split(task_cfg, split)
            _FACTS[key] = _scan(ds.data.table, fields, label_field, regression)
        return _FACTS[key], where
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, *columns)
    if key not in _FACTS:
        import pyarrow.parquet as pq
        try:
            table = pq.read_table(path)
        except Exception as e:  # noqa: BLE001 - arrow raises several types for a bad file
            raise HarnessError(f"task '{task_cfg.name}': cannot read {path} ({_first_line(e)})")
        _FACTS[key] = _scan(table, fields, label_field, regression)
    return _FACTS[key], str(path)


def validate_split(task_cfg, split: str, *, train: bool = False, min_rows: int = 1, needs: str = "",
                   ds=None) -> SplitFacts:
    """Raise HarnessError (one line) unless the split is usable by this task: readable, columns
    present, text in every text field, labels of the task's type, at least `min_rows` rows
    (`needs` says who needs them); classification labels in 0..num_labels-1, and in the train
    split exactly the labels 0..num_labels-1."""
    facts, where = _facts(task_cfg, split, ds)
    at = f"task '{task_cfg.name}' split '{split}' ({where})"
    if facts.problems:
        more = f" (and {len(facts.problems) - 1} more problem(s))" if len(facts.problems) > 1 else ""
        raise HarnessError(f"{at}: {facts.problems[0]}{more}")
    if facts.rows == 0:
        raise HarnessError(f"{at} has 0 rows")
    if facts.rows < min_rows:
        raise HarnessError(f"{at} has {facts.rows} row(s); {needs or 'this run'} needs at least {min_rows}")
    if facts.labels is not None:
        k = task_cfg.num_labels
        outside = sorted(x for x in facts.labels if not 0 <= x < k)
        if outside:
            raise HarnessError(f"task.num_labels={k}: {at} has labels outside 0..{k - 1}: {_few(outside)}")
        if train and facts.labels != frozenset(range(k)):
            raise HarnessError(f"task.num_labels={k} does not match {at}: labels present {_few(sorted(facts.labels))},"
                               f" expected all of 0..{k - 1}")
    return facts


def _few(values, n: int = 8) -> str:
    return "{" + ", ".join(map(str, values[:n])) + (", ..." if len(values) > n else "") + "}"


def check_task_data(task_cfg, min_eval_rows: int = 1, needs: str = "") -> dict:
    """Every split of the task, validated (cached per file): {'source': where the data comes
    from, 'rows': {split: rows}}. `min_eval_rows` / `needs`: what the evaluation protocol needs."""
    source = check_available(task_cfg)
    rows = {task_cfg.train_split: validate_split(task_cfg, task_cfg.train_split, train=True).rows}
    for split in task_cfg.eval_splits.values():
        rows[split] = validate_split(task_cfg, split, min_rows=min_eval_rows, needs=needs).rows
    return {"source": source, "rows": rows}


def _tokenizer_digest(tokenizer) -> str:
    """What decides the token ids: vocab, normalizer, pre-tokenizer... not the (mutable) truncation/padding state."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        text = json.dumps(spec, sort_keys=True)
    else:
        text = repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(f"{type(tokenizer).__name__}|{tokenizer.padding_side}|{text}".encode()).hexdigest()


def tokenize(ds, task_cfg, tokenizer, keep: List[str]):
    fields, label_field = list(task_cfg.text_fields), task_cfg.label_field
    regression = task_cfg.label_type == "regression"
    missing = [f for f in fields + [label_field] if f not in ds.column_names]
    if missing:
        raise HarnessError(f"task '{task_cfg.name}': columns {missing} not in the data (has {ds.column_names})")

    def encode(batch):
        out = tokenizer(*[batch[f] for f in fields], truncation=True, max_length=task_cfg.max_length)
        out = {k: v for k, v in out.items() if k in keep}
        out["labels"] = [float(x) if regression else int(x) for x in batch[label_field]]
        return out

    key = "|".join([ds._fingerprint, _tokenizer_digest(tokenizer), str(task_cfg.max_length), ",".join(fields),
                    label_field, task_cfg.label_type, ",".join(sorted(keep)), TOKENIZE_VERSION])
    fingerprint = hashlib.sha256(key.encode()).hexdigest()[:32]
    return ds.map(encode, batched=True, remove_columns=ds.column_names, new_fingerprint=fingerprint,
                  desc=f"tokenize {task_cfg.name}")


@dataclass
class EvalSet:
    """An eval split tokenized and sorted by length (less padding); predictions map back by position."""
    dataset: object
    positions: np.ndarray  # original row index of each sorted row
    labels: np.ndarray  # in original order
    collate: object
    batch_size: int

    def batches(self) -> Iterator[Tuple[np.ndarray, dict]]:
        for start in range(0, len(self.positions), self.batch_size):
            rows = self.dataset[start:start + self.batch_size]
            features = [dict(zip(rows, values)) for values in zip(*rows.values())]
            yield self.positions[start:start + self.batch_size], self.collate(features)


def _eval_set(ds, collate, batch_size: int) -> EvalSet:
    lengths = np.array([len(x) for x in ds["input_ids"]])
    order = np.argsort(-lengths, kind="stable")  # longest first: memory peaks at the first batch
    labels = np.array(ds["labels"])
    return EvalSet(dataset=ds.select(order), positions=order, labels=labels, collate=collate, batch_size=batch_size)


@dataclass
class TaskData:
    train: object  # tokenized datasets.Dataset
    eval_sets: Dict[str, EvalSet]
    collate: object
    train_tokens_mean: float
    sources: Dict[str, dict]  # split -> what identifies its content (file sha256 / hub fingerprint)
    train_lengths: np.ndarray = None  # tokens per training row (length-grouped batching)
    train_labels: np.ndarray = None  # as the task states them (train["labels"] may be standardized)
    label_scale: Optional[object] = None  # harness.label_scaling.LabelScale when targets are standardized


def source_identity(task_cfg, split: str, ds) -> dict:
    """sha256 of the mirror file, or the hub dataset's fingerprint (datasets hashes the files)."""
    from harness.provenance import file_sha256
    path = _mirror_file(task_cfg, split)
    if path is not None:
        return {"path": str(path.resolve()), "sha256": file_sha256(path), "rows": len(ds)}
    return {"hub": task_cfg.dataset, "subset": task_cfg.subset, "fingerprint": ds._fingerprint, "rows": len(ds)}


_PREPARED: dict = {}  # in-process cache: sweep jobs of one process share the tokenized data


def prepare(cfg, tokenizer, model_inputs) -> TaskData:
    """Tokenized train split and eval sets (memoised per task config, tokenizer and eval batch size)."""
    from omegaconf import OmegaConf
    key = (str(data_dir()), json.dumps(OmegaConf.to_container(cfg.task, resolve=True), sort_keys=True),
           _tokenizer_digest(tokenizer), tuple(sorted(model_inputs)), cfg.train.eval_batch_size,
           cfg.train.pad_to_multiple_of)
    if key not in _PREPARED:
        if len(_PREPARED) >= 4:
            _PREPARED.pop(next(iter(_PREPARED)))
        _PREPARED[key] = _prepare(cfg, tokenizer, model_inputs)
    return _PREPARED[key]


def _prepare(cfg, tokenizer, model_inputs) -> TaskData:
    from transformers import DataCollatorWithPadding
    task = cfg.task
    keep = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in model_inputs]
    train = load_split(task, task.train_split)
    validate_split(task, task.train_split, train=True, ds=train)  # cached: preflight has usually done it
    sources = {task.train_split: source_identity(task, task.train_split, train)}
    if task.max_train_samples is not None and task.max_train_samples < len(train):
        train = train.shuffle(seed=SUBSET_SEED).select(range(task.max_train_samples))
    train = tokenize(train, task, tokenizer, keep)
    train_labels = np.array(train["labels"])
    scale = label_scaling.fit(task, train_labels)
    if scale is not None:
        train = train.map(lambda b: {"labels": scale.to_training(b["labels"]).tolist()}, batched=True,
                          new_fingerprint=hashlib.sha256(f"{train._fingerprint}|{scale}".encode()).hexdigest()[:32],
                          desc="standardize targets")
    # Padding to a multiple of 8 keeps the padded length on the vector/tile width of bf16 kernels
    collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=cfg.train.pad_to_multiple_of)
    eval_sets = {}
    for tag, split in task.eval_splits.items():
        raw = load_split(task, split)
        validate_split(task, split, ds=raw)
        sources[split] = source_identity(task, split, raw)
        eval_sets[tag] = _eval_set(tokenize(raw, task, tokenizer, keep), collate, cfg.train.eval_batch_size)
    lengths = np.array([len(x) for x in train["input_ids"]])
    return TaskData(train=train, eval_sets=eval_sets, collate=collate, train_tokens_mean=float(lengths.mean()),
                    sources=sources, train_lengths=lengths, train_labels=train_labels, label_scale=scale)


class TrainBatches:
    """Training batches, reshuffled every epoch. Epoch e's batches depend only on (seed, e), so a
    resumed run continues at any (epoch, batch) with exactly the batches it would have seen.

    batching=random: consecutive slices of a random permutation (each batch pads to its longest row).
    batching=length_grouped: the permutation is cut into mega-batches of `group` x batch_size rows,
    each sorted by length and cut into batches, and the batches are shuffled, with the one holding
    the longest row first (memory peaks at step 1, not mid-run). Batches then hold rows of similar
    length, so far less padding is computed; each batch is still a random draw of the data."""

    def __init__(self, dataset, batch_size: int, seed: int, collate, batching: str = "random",
                 lengths=None, group: int = 50):
        if batching not in BATCHINGS:
            raise HarnessError(f"train.batching must be one of {BATCHINGS} (got '{batching}')")
        self.dataset, self.batch_size, self.seed, self.collate = dataset, batch_size, seed, collate
        self.batching, self.lengths, self.group = batching, lengths, group
        self.per_epoch = -(-len(dataset) // batch_size)  # the last batch of an epoch may be short

    def _generator(self, epoch: int):
        import torch
        seed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])
        return torch.Generator().manual_seed(seed)

    def batch_indices(self, epoch: int) -> List[List[int]]:
        import torch
        g = self._generator(epoch)
        order = torch.randperm(len(self.dataset), generator=g).tolist()
        size = self.batch_size
        if self.batching == "random":
            return [order[b * size:(b + 1) * size] for b in range(self.per_epoch)]
        batches, mega = [], size * self.group
        for start in range(0, len(order), mega):
            chunk = sorted(order[start:start + mega], key=lambda i: -self.lengths[i])  # stable: ties stay random
            batches += [chunk[b:b + size] for b in range(0, len(chunk), size)]
        shuffled = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        longest = max(range(len(shuffled)), key=lambda b: self.lengths[shuffled[b][0]])
        shuffled[0], shuffled[longest] = shuffled[longest], shuffled[0]
        return shuffled

    def iterate(self, epoch: int = 0, start: int = 0):
        """Yields (epoch, index of the batch within the epoch, batch) forever."""
        while True:
            batches = self.batch_indices(epoch)
            for b in range(start, self.per_epoch):
                rows = self.dataset[batches[b]]
                yield epoch, b, self.collate([dict(zip(rows, values)) for values in zip(*rows.values())])
            epoch, start = epoch + 1, 0


class FixedBatches:
    """The same list of ready batches, cycled (benchmarks and contract tests)."""

    def __init__(self, batches):
        self.batches = list(batches)

    def iterate(self, epoch: int = 0, start: int = 0):
        while True:
            for b in range(start, len(self.batches)):
                yield epoch, b, self.batches[b]
            epoch, start = epoch + 1, 0


def train_batches(data: TaskData, tcfg) -> TrainBatches:
    return TrainBatches(data.train, tcfg.batch_size, tcfg.seed, data.collate, tcfg.batching,
                        data.train_lengths, tcfg.group_batches)
