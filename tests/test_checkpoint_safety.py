"""Checkpoints are safe to read and safe to interrupt: nothing in them is unpickled (a crafted file
cannot run code), every piece of state comes back exactly, a kill at any instant of a save leaves a
loadable checkpoint, and an unreadable one is moved aside (one line) while the run resumes from the
previous good checkpoint or starts fresh, and then succeeds with each step logged once."""

import json
import math
import os
import pickle
import random
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import REPO, run_tiny
from harness import checkpoint as ck

BUDGET = ("train.max_steps=20", "train.log_every=5", "train.eval_every=10", "train.checkpoint_every=10")
LONGER = ("train.max_steps=30", "train.log_every=5", "train.eval_every=10", "train.checkpoint_every=10")


def _steps(run_dir):
    events = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [e["step"] for e in events if "train/loss" in e]


def _curve(run_dir):
    events = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(e["step"], e["train/loss"]) for e in events if "train/loss" in e]


def _crash(run_dir, monkeypatch, at, *overrides):
    monkeypatch.setenv("HARNESS_FAULT", f"error@{at}")
    with pytest.raises(RuntimeError, match=f"injected fault at step {at}"):
        run_tiny(run_dir, *overrides)
    monkeypatch.delenv("HARNESS_FAULT")


def _unreadable_lines(text):
    return [ln for ln in text.splitlines() if "unreadable (" in ln]


# -- (a) nothing is unpickled ----------------------------------------------------------------------

class _Payload:
    """Unpickling this writes a marker file (what an attacker's code would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('executed')",)


def test_the_crafted_pickle_does_run_code_when_unpickled(tmp_path):
    """The payload used below is live: unpickling it (here, deliberately) writes its marker."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.read_text() == "executed"


def test_no_unpickling_call_anywhere_in_the_harness():
    pattern = re.compile(r"\btorch\.load\s*\(|\bpickle\.loads?\s*\(|weights_only\s*=\s*False|allow_pickle\s*=\s*True"
                         r"|\bjoblib\.load\s*\(|\bdill\.loads?\s*\(|\bUnpickler\b")
    hits = [f"{path.relative_to(REPO)}:{i}: {line.strip()}" for path in sorted((REPO / "harness").rglob("*.py"))
            for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_a_crafted_state_pt_is_never_executed_and_the_run_starts_fresh(use_mirror, tmp_path, monkeypatch, capsys):
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    _crash(run_dir, monkeypatch, 13, *BUDGET)
    cdir = run_dir / "checkpoint"
    for f in cdir.iterdir():
        f.unlink()
    torch.save({"model": _Payload(marker)}, cdir / "state.pt")  # the old format, crafted
    (cdir / "meta.json").write_text(json.dumps({"run_id": json.loads((run_dir / "result.json").read_text())["run_id"],
                                                "step": 10}))
    capsys.readouterr()
    record = run_tiny(run_dir, *BUDGET)
    out = capsys.readouterr().out
    assert not marker.exists()
    assert record["status"] == "success"
    assert [a["resumed_from_step"] for a in record["attempts"]] == [0]
    lines = _unreadable_lines(out)
    assert len(lines) == 1 and "old pickle format" in lines[0] and "checkpoint.unreadable-1/" in lines[0] \
        and "starting fresh" in lines[0], out
    assert (run_dir / "attempt-1" / "checkpoint.unreadable-1" / "state.pt").is_file()  # kept, never read
    assert _steps(run_dir) == [5, 10, 15, 20]


def test_a_pickle_beside_a_good_checkpoint_is_ignored(use_mirror, tmp_path, monkeypatch):
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    _crash(run_dir, monkeypatch, 13, *BUDGET)
    torch.save({"model": _Payload(marker)}, run_dir / "checkpoint" / "state.pt")
    record = run_tiny(run_dir, *BUDGET)
    assert not marker.exists()
    assert [a["resumed_from_step"] for a in record["attempts"]] == [0, 10]
    assert _steps(run_dir) == [5, 10, 15, 20]


# -- (b) an unreadable checkpoint ------------------------------------------------------------------

def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def test_truncated_checkpoint_is_moved_aside_and_the_run_starts_fresh(use_mirror, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    _crash(run_dir, monkeypatch, 13, *BUDGET)
    _truncate(run_dir / "checkpoint" / ck.TENSORS)
    capsys.readouterr()
    record = run_tiny(run_dir, *BUDGET)
    out = capsys.readouterr().out
    lines = _unreadable_lines(out)
    assert len(lines) == 1, out
    assert lines[0].startswith("[harness] checkpoint/ unreadable (safetensors header error:")
    assert "moved to checkpoint.unreadable-1/, starting fresh" in lines[0]
    assert record["status"] == "success"
    assert [a["resumed_from_step"] for a in record["attempts"]] == [0]
    assert _steps(run_dir) == [5, 10, 15, 20]
    assert (run_dir / "attempt-1" / "checkpoint.unreadable-1" / ck.TENSORS).is_file()  # never deleted


def test_newest_checkpoint_bad_falls_back_to_the_previous_one(use_mirror, tmp_path, monkeypatch, capsys):
    straight = run_tiny(tmp_path / "straight", *LONGER)
    run_dir = tmp_path / "run"
    _crash(run_dir, monkeypatch, 23, *LONGER)  # checkpoints at 10 (checkpoint.prev/) and 20 (checkpoint/)
    assert ck.read_meta(run_dir)["step"] == 20
    _truncate(run_dir / "checkpoint" / ck.TENSORS, keep=0.9)
    assert ck.read_meta(run_dir)["step"] == 10  # read_meta agrees with what load will use
    capsys.readouterr()
    record = run_tiny(run_dir, *LONGER)
    out = capsys.readouterr().out
    lines = _unreadable_lines(out)
    assert len(lines) == 1, out
    assert re.fullmatch(r"\[harness\] checkpoint/ unreadable \(safetensors header error: .*\); moved to "
                        r"checkpoint\.unreadable-1/, resuming from checkpoint\.prev/ at step 10", lines[0]), lines[0]
    assert [a["resumed_from_step"] for a in record["attempts"]] == [0, 10]
    assert _curve(run_dir) == _curve(tmp_path / "straight")  # each step once, and exactly as uninterrupted
    assert record["metrics"] == straight["metrics"]
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint.unreadable-1"]


# -- (c) a kill in the middle of a save --------------------------------------------------------------

class _Killed(BaseException):
    pass


def test_a_kill_between_the_renames_of_a_run_leaves_a_loadable_checkpoint(use_mirror, tmp_path, monkeypatch):
    """The save at step 20 dies after checkpoint/ -> checkpoint.prev/ and before the new one is put in place."""
    run_dir = tmp_path / "run"
    real_replace = os.replace

    def replace(src, dst):
        if os.path.basename(src).startswith(ck.TMP_PREFIX) and (run_dir / ck.PREV_DIR).exists():
            raise _Killed("killed between the renames")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(_Killed):
        run_tiny(run_dir, *LONGER)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not (run_dir / "checkpoint").exists()
    assert len(list(run_dir.glob(ck.TMP_PREFIX + "*"))) == 1  # the new one, complete but never committed
    assert ck.read_meta(run_dir)["step"] == 10

    record = run_tiny(run_dir, *LONGER)
    assert record["status"] == "success"
    assert [a["resumed_from_step"] for a in record["attempts"]] == [0, 10]
    assert _steps(run_dir) == [5, 10, 15, 20, 25, 30]
    assert not [p for p in run_dir.iterdir() if p.name.startswith("checkpoint")]  # all removed on success


# -- unit level: a small model, optimizer, scheduler, method and evaluator ---------------------------

class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = torch.nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.a = torch.nn.Linear(4, 3)
        self.b = torch.nn.Linear(3, 2, bias=False)
        self.register_buffer("mask", torch.tensor([1.0, 0.0, 1.0]))

    def forward(self, x):
        return self.b(self.a(self.frozen(x)) * self.mask)


class _Method:
    """AdaLoRA-shaped method state: tensor dicts and a rank pattern of bool lists (None before tfinal)."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.state = {"ipt": {"a.weight": torch.rand(3, 4, generator=g)},
                      "exp_avg_ipt": {"a.weight": torch.rand(3, 4, generator=g), "b.weight": torch.rand(2, 3, generator=g)},
                      "exp_avg_unc": {},
                      "rank_pattern": {"a.lora_E": [True, False, True], "b.lora_E": [False]}, "unset": None}

    def state_dict(self, model):
        return self.state

    def load_state_dict(self, model, state):
        self.state = state


class _Evaluator:
    """Evaluator-shaped state: protocol history with numpy and python floats, ints, lists, dicts."""

    def __init__(self, seconds=0.0):
        self.state = {"protocol": {"report_metric": "accuracy", "split_seed": 7, "sizes": {"select": 20, "report": 20},
                                   "best": {"step": 10, "score": np.float64(0.625), "report": {"accuracy": 0.1 + 0.2}},
                                   "history": [{"step": 10, "full": {"accuracy": np.float32(0.5), "f1": float("nan")}}]},
                      "seconds": seconds, "reported_predictions": {"validation": [0, 1, 1, 0]}}

    def state_dict(self):
        return self.state

    def load_state_dict(self, state):
        self.state = state


TCFG = SimpleNamespace(weight_decay=0.01, adam_beta1=0.9, adam_beta2=0.999, adam_eps=1e-8, schedule="linear",
                       warmup_steps=2, warmup_ratio=0.0)


def _objects(seed):
    from harness.train import build_optimizer, build_scheduler
    torch.manual_seed(seed)
    model = _Net()
    optimizer = build_optimizer(model, TCFG, 1e-2)
    scheduler = build_scheduler(optimizer, TCFG, 10, 2)
    return model, optimizer, scheduler, _Method(seed), _Evaluator(seconds=float(seed))


def _train(model, optimizer, scheduler, steps=3):
    for _ in range(steps):
        model(torch.randn(5, 4)).pow(2).sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)


def _same(a, b, path="state"):
    """Equal values with identical types (tensors: dtype, shape and bytes; floats: bits, NaN included)."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert a.device == b.device, path
        def raw(t):
            return t.contiguous().reshape(-1).view(torch.uint8)
        assert torch.equal(raw(a), raw(b)), path
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), path
    elif isinstance(a, (float, np.floating)):
        assert (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b)), path
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} != {list(b)}"
        for k in a:
            _same(a[k], b[k], f"{path}[{k!r}]")
    else:
        assert a == b, path


def test_flatten_round_trips_every_kind_of_leaf():
    base = torch.arange(12, dtype=torch.float32)
    shared = torch.ones(3)
    value = {
        "none": None, "bools": [True, False], "ints": [0, -1, 2**62, 2**80], "str": "ünïcode",
        "floats": [0.1 + 0.2, -0.0, 1e-310, float("inf"), float("-inf"), float("nan")],
        "tuple": (1, (2.5, None), [3]), "empty": {"l": [], "t": (), "d": {}},
        "int_keys": {0: "a", 1: {"step": torch.tensor(3.0)}}, "tuple_keys": {(1, "x"): 2},
        "tagged": {ck.TAG: "tensor", "key": "t0"},  # a plain dict that looks like a reference
        "tensors": [torch.tensor(1.5), torch.zeros(0), torch.randn(2, 3).to(torch.bfloat16),
                    torch.tensor([1, 2], dtype=torch.int64), torch.tensor([True, False]),
                    torch.randint(0, 255, (7,), dtype=torch.uint8), torch.randn(3, 4).t(), base[2:5], base[::3],
                    torch.randn(2, dtype=torch.float16), torch.randn(2, dtype=torch.float64)],
        "shared": [shared, shared],
        "numpy": [np.arange(5, dtype=np.uint32), np.eye(2), np.array([], dtype=np.int16), np.array([True]),
                  np.float64(0.3), np.float32(0.7), np.int64(-4), np.bool_(True)],
        "np_rng": np.random.RandomState(3).get_state(), "py_rng": random.Random(3).getstate(),
    }
    tree, tensors = ck.flatten(value)
    text = json.dumps(tree)  # JSON, and nothing else
    back = ck.unflatten(json.loads(text), lambda key: tensors[key])
    _same(value, back)
    assert len(tensors) == len(value["tensors"]) + 1 + 1 + 5  # the shared tensor is stored once
    with pytest.raises(TypeError, match="cannot store"):
        ck.flatten({"x": object()})
    with pytest.raises(TypeError, match="object array"):
        ck.flatten({"x": np.array([None])})


def test_every_piece_of_state_round_trips(tmp_path):
    """(d) weights and buffers, optimizer and scheduler state, every RNG, loop, evaluator and method
    state come back equal; frozen weights are not stored; the files are safetensors and JSON."""
    model, optimizer, scheduler, method, evaluator = _objects(0)
    _train(model, optimizer, scheduler)
    random.random(), np.random.rand(), torch.rand(1)
    loop = {"step": 3, "epoch": 1, "batch_in_epoch": 2, "tokens": 123, "durations": [0.1, 0.25],
            "window_means": [0.2], "rank_history": [{"step": 0, "total": 12, "budget": 12}]}
    saver = ck.Checkpointer(tmp_path, "run-a", every=1)
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    saver.save(3, model, optimizer, scheduler, method, evaluator, loop)
    expected_draws = (random.random(), np.random.rand(), torch.rand(3))
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == [ck.META, ck.STATE, ck.TENSORS]

    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    fresh = _objects(1)  # other seed: every value differs until loaded
    frozen_before = fresh[0].frozen.weight.clone()
    got_loop = ck.Checkpointer(tmp_path, "run-a", every=1).load(*fresh)
    model2, optimizer2, scheduler2, method2, evaluator2 = fresh
    _same(random.getstate(), rng[0])
    _same(np.random.get_state(), rng[1])
    _same(torch.get_rng_state(), rng[2])
    _same((random.random(), np.random.rand(), torch.rand(3)), expected_draws)
    _same(got_loop, loop)
    trained = {k: v for k, v in model.state_dict().items() if not k.startswith("frozen.")}
    _same({k: v for k, v in model2.state_dict().items() if not k.startswith("frozen.")}, trained)
    assert torch.equal(model2.frozen.weight, frozen_before)  # rebuilt from the seed, never stored
    _same(optimizer2.state_dict(), optimizer.state_dict())
    _same(scheduler2.state_dict(), scheduler.state_dict())
    _same(method2.state, method.state)
    _same(evaluator2.state, evaluator.state)
    # and, with the same frozen weights (the harness rebuilds them from the seed), training goes on identically
    model2.frozen.load_state_dict(model.frozen.state_dict())
    torch.manual_seed(5)
    _train(model, optimizer, scheduler, 2)
    torch.manual_seed(5)
    _train(model2, optimizer2, scheduler2, 2)
    _same(model2.state_dict(), model.state_dict())
    _same(optimizer2.state_dict(), optimizer.state_dict())


def _saved(tmp_path, steps=(1, 2)):
    objs = _objects(0)
    saver = ck.Checkpointer(tmp_path, "run-a", every=1)
    for step in steps:
        _train(*objs[:3], steps=1)
        saver.save(step, *objs, {"step": step})
    return saver, objs


def _corrupt_bad_json(d):
    (d / ck.STATE).write_text((d / ck.STATE).read_text()[:-5])


def _corrupt_missing_tensor(d):
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(d / ck.TENSORS))
    tensors.pop(sorted(tensors)[0])
    save_file(tensors, str(d / ck.TENSORS), metadata={"run_id": "run-a", "step": "2"})


def _corrupt_run_id(d):
    meta = json.loads((d / ck.META).read_text())
    (d / ck.META).write_text(json.dumps({**meta, "run_id": "run-b"}))


def _corrupt_bit_flip(d):
    data = bytearray((d / ck.TENSORS).read_bytes())
    data[-3] ^= 0xFF
    (d / ck.TENSORS).write_bytes(bytes(data))


def _corrupt_no_meta(d):
    (d / ck.META).unlink()


def _corrupt_truncated(d):
    _truncate(d / ck.TENSORS, keep=0.95)


def _corrupt_meta_structure(d):
    meta = json.loads((d / ck.META).read_text())
    meta["files"] = {name: "not a dict" for name in meta["files"]}  # valid JSON, wrong shape
    (d / ck.META).write_text(json.dumps(meta))


@pytest.mark.parametrize("damage, why", [
    (_corrupt_meta_structure, "malformed"),
    (_corrupt_truncated, "safetensors header error"), (_corrupt_bad_json, "state.json: bad JSON"),
    (_corrupt_missing_tensor, "missing tensor"), (_corrupt_run_id, "mismatched run_id/step"),
    (_corrupt_bit_flip, "sha256 mismatch"), (_corrupt_no_meta, "no meta.json")])
def test_an_unreadable_checkpoint_is_moved_aside_and_the_previous_one_used(tmp_path, damage, why):
    saver, _ = _saved(tmp_path)
    damage(tmp_path / "checkpoint")
    assert ck.read_meta(tmp_path)["step"] == 1  # read_meta moves nothing ...
    assert (tmp_path / "checkpoint").is_dir()
    found = ck.find_loadable(tmp_path)  # ... find_loadable moves the unreadable one aside
    assert found.meta["step"] == 1 and found.name == ck.PREV_DIR
    assert len(found.moved) == 1 and why in found.moved[0] and "checkpoint.unreadable-1/" in found.moved[0]
    assert not (tmp_path / "checkpoint").exists() and (tmp_path / "checkpoint.unreadable-1").is_dir()
    assert saver.dir.name == ck.PREV_DIR
    assert saver.load(*_objects(3)) == {"step": 1}


def test_with_no_readable_checkpoint_nothing_is_chosen_and_nothing_deleted(tmp_path):
    _saved(tmp_path)
    _truncate(tmp_path / "checkpoint" / ck.TENSORS)
    _corrupt_bad_json(tmp_path / ck.PREV_DIR)
    found = ck.find_loadable(tmp_path)
    assert found.meta is None and len(found.moved) == 2
    assert found.note("starting fresh").endswith("moved to checkpoint.unreadable-2/, starting fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.unreadable-1", "checkpoint.unreadable-2"]


def test_load_of_a_checkpoint_that_does_not_fit_moves_it_aside(tmp_path):
    """A checkpoint that verifies but cannot be applied fails this attempt once, not every retry."""
    saver, _ = _saved(tmp_path)
    other = _objects(0)
    other[0].extra = torch.nn.Linear(2, 2)  # a model that is not the one saved: missing weights are fine ...
    optimizer = torch.optim.AdamW(other[0].parameters())  # ... a different optimizer layout is not
    with pytest.raises(ck.UnreadableCheckpoint, match="moved to checkpoint.unreadable-1/"):
        saver.load(other[0], optimizer, *other[2:])
    assert ck.read_meta(tmp_path)["step"] == 1


@pytest.mark.parametrize("kill_at", [1, 2, 3])
def test_a_kill_at_any_rename_of_a_save_leaves_a_loadable_checkpoint(tmp_path, monkeypatch, kill_at):
    """Every instant of a save: after each rename a complete checkpoint is found, and a kill at
    the k-th rename leaves one that loads; the next save sweeps the leftovers."""
    saver, objs = _saved(tmp_path)  # checkpoint/ at step 2, checkpoint.prev/ at step 1
    real_replace, seen = os.replace, []

    def replace(src, dst):
        if len(seen) + 1 == kill_at:
            raise _Killed(f"killed at rename {kill_at}")
        real_replace(src, dst)
        seen.append((os.path.basename(src), os.path.basename(dst), ck.read_meta(tmp_path)["step"]))

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(_Killed):
        saver.save(3, *objs, {"step": 3})
    monkeypatch.setattr(os, "replace", real_replace)
    assert all(step in (2, 3) for _, _, step in seen)
    step = ck.read_meta(tmp_path)["step"]
    assert step == 2  # the new one is only used once committed (rename 3)
    assert saver.load(*_objects(4)) == {"step": step}
    saver.save(4, *objs, {"step": 4})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint", "checkpoint.prev"], names
    assert ck.read_meta(tmp_path)["step"] == 4
    saver.remove()
    assert list(tmp_path.iterdir()) == []


def test_the_renames_of_a_save_keep_a_checkpoint_at_every_instant(tmp_path, monkeypatch):
    saver, objs = _saved(tmp_path)
    real_replace, seen = os.replace, []

    def replace(src, dst):
        real_replace(src, dst)
        seen.append((os.path.basename(src).split("-")[0], os.path.basename(dst).split("-")[0],
                     ck.read_meta(tmp_path)["step"]))

    monkeypatch.setattr(os, "replace", replace)
    saver.save(3, *objs, {"step": 3})
    assert seen == [("checkpoint.prev", "checkpoint.trash", 2), ("checkpoint", "checkpoint.prev", 2),
                    ("checkpoint.tmp", "checkpoint", 3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "checkpoint.prev"]


def test_a_save_that_fails_while_writing_leaves_the_old_checkpoints(tmp_path, monkeypatch):
    saver, objs = _saved(tmp_path)
    (tmp_path / f"{ck.TMP_PREFIX}999-dead").mkdir()  # what a kill -9 during writing leaves
    (tmp_path / f"{ck.TMP_PREFIX}999-dead" / ck.TENSORS).write_bytes(b"half")
    assert ck.read_meta(tmp_path)["step"] == 2  # never read

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        saver.save(3, *objs, {"step": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "checkpoint.prev"]  # leftovers swept
    assert ck.read_meta(tmp_path)["step"] == 2
