"""Resumable training state in <run_dir>/checkpoint/, enough to continue exactly where a run stopped.

Format (nothing is ever unpickled; a checkpoint cannot run code when it is read):
  tensors.safetensors  every tensor: trainable weights and buffers, optimizer state tensors, torch
                       (and CUDA) RNG states, method tensors (AdaLoRA's importance scores); numpy
                       arrays (numpy's RNG key) as their raw bytes. Metadata: run_id, step.
  state.json           everything else as JSON: loop counters and timings, LR-scheduler state,
                       python/numpy RNG states, the evaluation protocol's state, the method's
                       non-tensor state (AdaLoRA's rank pattern). Each tensor leaf is replaced by
                       {"__t__": "tensor", "key": "t7"}, a key into tensors.safetensors; tuples,
                       dicts with non-string keys and numpy scalars/arrays are tagged the same way,
                       so every structure comes back with its exact types and values.
  meta.json            run_id, step, and the size and sha256 of the two files above; written last.

Directories in the run directory (at every instant a complete checkpoint exists under a name the
loader checks, unless none was ever written):
  checkpoint/               the newest checkpoint
  checkpoint.prev/          the one before it
  checkpoint.tmp-<unique>/  a save in progress (never read; swept by the next save)
  checkpoint.trash-<...>/   an old one being deleted (never read; swept by the next save)
  checkpoint.unreadable-k/  a checkpoint that failed verification, moved aside (never deleted)
A save writes checkpoint.tmp-<unique>/ completely (files and directory fsynced), then renames
checkpoint.prev/ -> checkpoint.trash-*/, checkpoint/ -> checkpoint.prev/, checkpoint.tmp-*/ ->
checkpoint/, fsyncs the run directory and deletes the trash. A kill between two renames leaves
checkpoint/ or checkpoint.prev/ complete.

Loading tries checkpoint/, then checkpoint.prev/. A candidate is verified completely before it is
chosen (meta.json parses; the safetensors header parses; state.json parses and decodes; every
tensor it references is in the file; run_id and step agree across the three files; sizes and
sha256 match). One that fails is moved to checkpoint.unreadable-k/ and the next is tried:
`find_loadable` (called by results.prepare_run_dir before the model is built, so the decision to
resume, the truncation of metrics.jsonl and the record's `attempts` use the step actually resumed
from) does this, `read_meta` reports the same choice without moving anything, and
`Checkpointer.load` reads the first candidate left. Every checkpoint directory except the
unreadable ones is deleted when the run succeeds.
"""

import hashlib
import json
import os
import random
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

CHECKPOINT_DIR = "checkpoint"
PREV_DIR = CHECKPOINT_DIR + ".prev"
CANDIDATES = (CHECKPOINT_DIR, PREV_DIR)  # the loader's order
TMP_PREFIX = CHECKPOINT_DIR + ".tmp-"
TRASH_PREFIX = CHECKPOINT_DIR + ".trash-"
UNREADABLE_PREFIX = CHECKPOINT_DIR + ".unreadable-"
META, STATE, TENSORS = "meta.json", "state.json", "tensors.safetensors"
FORMAT = 2  # 1 was a single pickle (state.pt), never read
TAG = "__t__"


class UnreadableCheckpoint(Exception):
    """A checkpoint directory that cannot be restored exactly; `why` says why, in a few words."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why  # not `reason`: results.failure_reason would take it for the record's reason


# -- nested structures <-> JSON + tensors ------------------------------------------------------

def flatten(obj) -> Tuple[object, dict]:
    """(JSON-able tree, {key: CPU tensor}) for a nested structure of dicts, lists, tuples, None,
    bool, int, float, str, torch tensors, numpy arrays and numpy scalars. The same tensor object met
    twice is stored once. Anything else raises TypeError (a checkpoint that could not be restored
    exactly is not written)."""
    import numpy as np
    import torch

    tensors, by_id, storages = {}, {}, set()

    def put(t) -> str:
        if id(t) in by_id:
            return by_id[id(t)][0]
        key = f"t{len(tensors)}"
        cpu = t.detach().to("cpu")  # written before anything trains on: no copy needed on the CPU ...
        ptr = cpu.untyped_storage().data_ptr()
        whole = cpu.is_contiguous() and cpu.storage_offset() == 0 and \
            cpu.numel() * cpu.element_size() == cpu.untyped_storage().nbytes()
        if not whole or (ptr and ptr in storages):  # ... unless a view or shared (safetensors refuses both)
            cpu = cpu.clone(memory_format=torch.contiguous_format)
        storages.add(cpu.untyped_storage().data_ptr())
        tensors[key] = cpu
        by_id[id(t)] = (key, t)  # t kept alive, so its id is not reused by another object
        return key

    def enc(x, path: str):
        if x is None or type(x) in (bool, int, float, str):
            return x
        if isinstance(x, torch.Tensor):
            return {TAG: "tensor", "key": put(x)}
        if isinstance(x, np.ndarray):
            if x.dtype.hasobject:
                raise TypeError(f"checkpoint: object array at {path}")
            raw = torch.from_numpy(np.frombuffer(np.ascontiguousarray(x).tobytes(), dtype=np.uint8).copy())
            return {TAG: "ndarray", "key": put(raw), "dtype": x.dtype.str, "shape": list(x.shape)}
        if isinstance(x, np.generic) and not x.dtype.hasobject:
            return {TAG: "npscalar", "dtype": x.dtype.str, "value": x.item()}
        if type(x) is tuple:
            return {TAG: "tuple", "items": [enc(v, f"{path}[{i}]") for i, v in enumerate(x)]}
        if type(x) is list:
            return [enc(v, f"{path}[{i}]") for i, v in enumerate(x)]
        if isinstance(x, dict):
            if all(type(k) is str for k in x) and TAG not in x:
                return {k: enc(v, f"{path}.{k}") for k, v in x.items()}
            return {TAG: "dict", "items": [[enc(k, f"{path}<key>"), enc(v, f"{path}[{k!r}]")] for k, v in x.items()]}
        raise TypeError(f"checkpoint: cannot store {type(x).__name__} at {path}")

    return enc(obj, "state"), tensors


_CHECK_ONLY = object()


def unflatten(tree, get: Callable[[str], object]):
    """The structure flatten() was given; get(key) returns the stored tensor. Malformed input raises
    UnreadableCheckpoint. With get returning _CHECK_ONLY, only the structure and references are checked."""
    import numpy as np

    def dec(x):
        if x is None or type(x) in (bool, int, float, str):
            return x
        if type(x) is list:
            return [dec(v) for v in x]
        if type(x) is not dict:
            raise UnreadableCheckpoint(f"unexpected {type(x).__name__} in state.json")
        tag = x.get(TAG)
        if tag is None:
            return {k: dec(v) for k, v in x.items()}
        if tag == "tensor":
            return get(x["key"])
        if tag == "ndarray":
            dtype = np.dtype(x["dtype"])
            if dtype.hasobject:
                raise UnreadableCheckpoint("object array in state.json")
            raw = get(x["key"])
            if raw is _CHECK_ONLY:
                return None
            return np.frombuffer(raw.numpy().tobytes(), dtype=dtype).reshape(x["shape"]).copy()
        if tag == "npscalar":
            dtype = np.dtype(x["dtype"])
            if dtype.hasobject:
                raise UnreadableCheckpoint("object scalar in state.json")
            return dtype.type(x["value"])
        if tag == "tuple":
            return tuple(dec(v) for v in x["items"])
        if tag == "dict":
            return {dec(k): dec(v) for k, v in x["items"]}
        raise UnreadableCheckpoint(f"unknown tag {tag!r} in state.json")

    try:
        return dec(tree)
    except UnreadableCheckpoint:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise UnreadableCheckpoint(f"malformed state.json ({type(exc).__name__}: {exc})") from None


# -- files ----------------------------------------------------------------------------------------

def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _digest(path: Path) -> dict:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
            size += len(chunk)
    return {"bytes": size, "sha256": h.hexdigest()}


def write_checkpoint(run_dir: Path, run_id: str, step: int, state: dict) -> Path:
    """Write `state` as run_dir/checkpoint/ with the renames of the module docstring; return it."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    _sweep(run_dir)
    tmp = run_dir / f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        tree, tensors = flatten(state)
        save_file(tensors, str(tmp / TENSORS), metadata={"run_id": run_id, "step": str(step)})
        _fsync(tmp / TENSORS)
        _write(tmp / STATE, json.dumps({"format": FORMAT, "run_id": run_id, "step": step, "state": tree},
                                       allow_nan=True).encode())
        files = {name: _digest(tmp / name) for name in (STATE, TENSORS)}
        _write(tmp / META, (json.dumps({"format": FORMAT, "run_id": run_id, "step": step, "files": files},
                                       indent=2) + "\n").encode())
        _fsync(tmp, directory=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    current, prev, trash = run_dir / CHECKPOINT_DIR, run_dir / PREV_DIR, None
    if current.is_dir():
        if prev.exists():
            trash = run_dir / f"{TRASH_PREFIX}{tmp.name[len(TMP_PREFIX):]}"
            os.replace(prev, trash)  # checkpoint/ still complete
        os.replace(current, prev)  # checkpoint.prev/ complete
    os.replace(tmp, current)  # checkpoint/ complete (and checkpoint.prev/ when there was one)
    _fsync(run_dir, directory=True)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return current


def _sweep(run_dir: Path) -> None:
    """Delete what an interrupted save left: temporary and trash directories (never read)."""
    for entry in run_dir.iterdir():
        if entry.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
            shutil.rmtree(entry, ignore_errors=True)


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise UnreadableCheckpoint(f"no {path.name}") from None
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UnreadableCheckpoint(f"{path.name}: bad JSON ({exc})") from None
    if type(value) is not dict:
        raise UnreadableCheckpoint(f"{path.name}: not a JSON object")
    return value


def verify(path: Path) -> dict:
    """The meta of the checkpoint directory `path` if it can be restored exactly; else raise
    UnreadableCheckpoint. Reads every byte (sha256) but holds no tensor in memory. Any malformed
    structure (a field of the wrong type in well-formed JSON) is unreadable too, never a crash."""
    try:
        return _verify(path)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise UnreadableCheckpoint(f"malformed ({type(exc).__name__}: {exc})") from exc


def _verify(path: Path) -> dict:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_dir():
        raise UnreadableCheckpoint("not a directory")
    if not (path / STATE).exists() and (path / "state.pt").exists():
        raise UnreadableCheckpoint("old pickle format (state.pt), never unpickled")
    meta = _read_json(path / META)
    if meta.get("format") != FORMAT or type(meta.get("step")) is not int or type(meta.get("run_id")) is not str \
            or type(meta.get("files")) is not dict or set(meta["files"]) != {STATE, TENSORS}:
        raise UnreadableCheckpoint(f"meta.json is not a format-{FORMAT} checkpoint meta")
    try:
        with safe_open(str(path / TENSORS), framework="pt") as fh:
            keys, header = set(fh.keys()), fh.metadata() or {}
    except FileNotFoundError:
        raise UnreadableCheckpoint(f"no {TENSORS}") from None
    except Exception as exc:  # SafetensorError and friends
        raise UnreadableCheckpoint(f"safetensors header error: {exc}") from None
    doc = _read_json(path / STATE)
    if type(doc.get("state")) is not dict:
        raise UnreadableCheckpoint(f"{STATE} holds no state")

    def check(key):
        if key not in keys:
            raise UnreadableCheckpoint(f"missing tensor {key!r}")
        return _CHECK_ONLY

    unflatten(doc.get("state"), check)
    if not (doc.get("run_id") == header.get("run_id") == meta["run_id"]
            and doc.get("step") == meta["step"] and header.get("step") == str(meta["step"])):
        raise UnreadableCheckpoint(
            f"mismatched run_id/step: meta.json {meta['run_id']}@{meta['step']}, {STATE}"
            f" {doc.get('run_id')}@{doc.get('step')}, {TENSORS} {header.get('run_id')}@{header.get('step')}")
    for name, want in meta["files"].items():
        got = _digest(path / name)
        if got["bytes"] != want.get("bytes"):
            raise UnreadableCheckpoint(f"{name} has {got['bytes']} bytes, meta.json says {want.get('bytes')}")
        if got["sha256"] != want.get("sha256"):
            raise UnreadableCheckpoint(f"{name} sha256 mismatch (corrupted)")
    return meta


def read_checkpoint(path: Path) -> Tuple[dict, dict]:
    """(meta, state) of a verified checkpoint directory, tensors on the CPU."""
    from safetensors.torch import load_file

    meta = verify(path)
    try:
        tensors = load_file(str(Path(path) / TENSORS), device="cpu")
    except Exception as exc:
        raise UnreadableCheckpoint(f"safetensors read error: {exc}") from None
    state = unflatten(_read_json(Path(path) / STATE)["state"], lambda key: tensors[key])
    return meta, state


# -- choosing the checkpoint to resume from -------------------------------------------------------

@dataclass
class Loadable:
    """What find_loadable found: the meta of the checkpoint to resume from (None: none), the
    directory name it is in, and one phrase per checkpoint it moved aside."""
    meta: Optional[dict] = None
    name: str = ""
    moved: List[str] = field(default_factory=list)

    def note(self, outcome: str) -> str:
        """One line: what was moved aside and why, then `outcome`."""
        return "; ".join(self.moved) + ", " + outcome if self.moved else outcome


def _move_unreadable(path: Path) -> Path:
    k = 1
    while (path.parent / f"{UNREADABLE_PREFIX}{k}").exists():
        k += 1
    aside = path.parent / f"{UNREADABLE_PREFIX}{k}"
    os.replace(path, aside)
    return aside


def find_loadable(run_dir: Path, move_aside: bool = True) -> Loadable:
    """The first candidate (checkpoint/, checkpoint.prev/) that verifies; each one before it that
    does not is moved to checkpoint.unreadable-k/ (with move_aside=False, only skipped)."""
    found = Loadable()
    for name in CANDIDATES:
        path = Path(run_dir) / name
        if not path.exists():
            continue
        try:
            found.meta, found.name = verify(path), name
            return found
        except UnreadableCheckpoint as exc:
            if move_aside:
                aside = _move_unreadable(path)
                found.moved.append(f"{name}/ unreadable ({exc.why}); moved to {aside.name}/")
    return found


def read_meta(run_dir: Path) -> Optional[dict]:
    """{run_id, step, ...} of the checkpoint a resume would use (the first that verifies), or None.
    Moves nothing; prepare_run_dir uses find_loadable, which makes the same choice."""
    return find_loadable(run_dir, move_aside=False).meta


# -- the state of a run -----------------------------------------------------------------------------

def _rng_state() -> dict:
    import numpy as np
    import torch
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import numpy as np
    import torch
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _model_state(model) -> dict:
    """Trainable parameters and persistent buffers (masks, running statistics); frozen weights are
    rebuilt from the base model and the seed."""
    params = dict(model.named_parameters())
    return {k: v.detach() for k, v in model.state_dict().items() if k not in params or params[k].requires_grad}


class Checkpointer:
    """Saves every `every` steps (None: only when asked, e.g. on preemption) and restores."""

    def __init__(self, run_dir: Path, run_id: str, every: Optional[int]):
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.every = every

    @property
    def dir(self) -> Path:
        """The checkpoint `load` reads: the first candidate present (after prepare_run_dir moved
        unreadable ones aside, the one it chose); run_dir/checkpoint (absent) when there is none."""
        for name in CANDIDATES:
            if (self.run_dir / name).is_dir():
                return self.run_dir / name
        return self.run_dir / CHECKPOINT_DIR

    def due(self, step: int, total: int) -> bool:
        return bool(self.every) and step % self.every == 0 and step < total

    def save(self, step: int, model, optimizer, scheduler, method, evaluator, loop_state: dict) -> None:
        write_checkpoint(self.run_dir, self.run_id, step, {
            "model": _model_state(model), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": _rng_state(), "loop": loop_state, "evaluator": evaluator.state_dict(),
            "method": method.state_dict(model)})

    def load(self, model, optimizer, scheduler, method, evaluator) -> dict:
        """Restore everything into freshly built objects; return the loop state. A checkpoint that
        cannot be read or applied is moved aside (the next attempt resumes from the previous one or
        starts fresh) and the error raised."""
        path = self.dir
        try:
            meta, saved = read_checkpoint(path)
            if meta["run_id"] != self.run_id:
                raise UnreadableCheckpoint(f"run_id {meta['run_id']} is not this run's {self.run_id}")
            result = model.load_state_dict(saved["model"], strict=False)
            if result.unexpected_keys:
                raise UnreadableCheckpoint(f"holds tensors the model lacks: {result.unexpected_keys[:3]}")
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            evaluator.load_state_dict(saved["evaluator"])
            method.load_state_dict(model, saved["method"])
            _set_rng_state(saved["rng"])
            return saved["loop"]
        except (UnreadableCheckpoint, KeyError, TypeError, ValueError, RuntimeError) as exc:
            import torch
            if isinstance(exc, torch.OutOfMemoryError):  # not the checkpoint's fault: keep it
                raise
            why = exc.why if isinstance(exc, UnreadableCheckpoint) else f"{type(exc).__name__}: {exc}"
            aside = _move_unreadable(path)
            raise UnreadableCheckpoint(f"{path.name}/ could not be restored ({why}); moved to {aside.name}/;"
                                       " the next attempt resumes from an earlier checkpoint or starts fresh") from exc

    def remove(self) -> None:
        """The run succeeded: delete every checkpoint directory (unreadable ones are kept)."""
        for entry in self.run_dir.iterdir() if self.run_dir.is_dir() else ():
            if entry.name in CANDIDATES or entry.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                shutil.rmtree(entry, ignore_errors=True)
