"""Shared fixtures. Default tier: CPU only, no network, tiny random models, a synthetic data mirror.

Tests that read real data use HARNESS_DATA_DIR if set, else the mirror bundled with the package.
"""

import os

# Before anything imports huggingface_hub/datasets: never touch the network in tests.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
# Real data: a mirror named by HARNESS_DATA_DIR, else the copy bundled with the package (always there)
REAL_MIRROR = os.environ.get("HARNESS_DATA_DIR") or str(REPO / "harness" / "bundled_data")

_WORDS_POS = "good great fine lovely superb happy".split()
_WORDS_NEG = "bad awful poor sad terrible dull".split()
_FILLER = "the a movie plot actor scene film story it was and very".split()


def _sentence(rng, label):
    words = rng.sample(_FILLER, 4) + [rng.choice(_WORDS_POS if label else _WORDS_NEG)]
    rng.shuffle(words)
    return " ".join(words)


def _write(path: Path, rows):
    import pandas as pd
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)


def build_mirror(root: Path, n_train=64, n_val=40) -> Path:
    """A small mirror in the HARNESS_DATA_DIR layout: sst2, stsb, mrpc, mnli, boolq (no qnli)."""
    rng = random.Random(0)
    for split, n in (("train", n_train), ("validation", n_val)):
        labels = [i % 2 for i in range(n)]
        _write(root / "glue/sst2" / f"{split}.parquet",
               {"sentence": [_sentence(rng, y) for y in labels], "label": labels, "idx": list(range(n))})
        _write(root / "glue/mrpc" / f"{split}.parquet",
               {"sentence1": [_sentence(rng, y) for y in labels], "sentence2": [_sentence(rng, y) for y in labels],
                "label": labels, "idx": list(range(n))})
        scores = [round(rng.uniform(0, 5), 2) for _ in range(n)]
        _write(root / "glue/stsb" / f"{split}.parquet",
               {"sentence1": [_sentence(rng, s > 2.5) for s in scores],
                "sentence2": [_sentence(rng, s > 2.5) for s in scores], "label": scores, "idx": list(range(n))})
        _write(root / "boolq" / f"{split}.parquet",
               {"question": [_sentence(rng, y) for y in labels], "passage": [_sentence(rng, y) * 3 for y in labels],
                "answer": [bool(y) for y in labels]})
    for split, n in (("train", n_train), ("validation_matched", n_val), ("validation_mismatched", n_val // 2)):
        labels = [i % 3 for i in range(n)]
        _write(root / "glue/mnli" / f"{split}.parquet",
               {"premise": [_sentence(rng, y) for y in labels], "hypothesis": [_sentence(rng, y) for y in labels],
                "label": labels, "idx": list(range(n))})
    return root


@pytest.fixture(scope="session")
def mirror(tmp_path_factory) -> Path:
    return build_mirror(tmp_path_factory.mktemp("mirror"))


@pytest.fixture(scope="session")
def smoke_sweep(mirror, tmp_path_factory):
    """`python -m harness +sweep=smoke` (basic launcher, the synthetic mirror) run once per session in a
    real process: (sweep directory, CompletedProcess). tests/test_sweeps.py checks the run itself (and
    re-runs it to see every job skipped); test_notebook.py and test_slurm.py read its records. A test
    that writes into the directory must leave its records as they are."""
    sweep_dir = tmp_path_factory.mktemp("smoke_sweep") / "smoke"
    proc = cli("+sweep=smoke", f"hydra.sweep.dir={sweep_dir}", env={"HARNESS_DATA_DIR": str(mirror)}, timeout=240)
    return sweep_dir, proc


@pytest.fixture
def use_mirror(mirror, monkeypatch) -> Path:
    monkeypatch.setenv("HARNESS_DATA_DIR", str(mirror))
    return mirror


@pytest.fixture
def real_mirror(monkeypatch) -> Path:
    monkeypatch.setenv("HARNESS_DATA_DIR", REAL_MIRROR)
    return Path(REAL_MIRROR)


def compose(*overrides):
    """The composed config, as `python -m harness <overrides>` would see it."""
    from harness.config import compose as harness_compose
    return harness_compose(*overrides, config_dir=CONF)


TINY = ("model=tiny_bert", "logger=none", "train.progress=false", "train.max_steps=6", "train.eval_every=3",
        "train.log_every=2", "train.batch_size=8")


def run_tiny(run_dir: Path, *overrides):
    """One tiny in-process run (defaults: tiny BERT, LoRA, SST-2 from the mirror in the env)."""
    from harness.run import run_job
    cfg = compose(*TINY, *overrides)
    return run_job(cfg, run_dir, overrides=[*TINY, *overrides])


def cli(*args, env=None, cwd=None, timeout=120):
    """`python -m harness args...` in a subprocess; returns CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or REPO, timeout=timeout)


def cli_in_process(*args, env=None):
    """`python -m harness args...` in this process, through the CLI's own entry point
    (harness.__main__.cli, with sys.argv set as the interpreter would): the same composition, checks,
    one-line message and exit status as `cli`, without a new interpreter's imports. Returns a
    CompletedProcess (returncode = the SystemExit code, 0 when the command returned). The environment
    (the CLI sets HYDRA_FULL_ERROR and the hub flags), sys.argv, sys.stdout/stderr and the root logger
    (Hydra configures logging on every run) are restored afterwards. For commands that end before
    anything is launched: a sweep (`-m`) or anything that must be a fresh process uses `cli`."""
    import contextlib
    import io
    import logging

    from harness import __main__ as entry

    saved_env, saved_argv = dict(os.environ), sys.argv
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    out, err = io.StringIO(), io.StringIO()
    code = 0
    os.environ.update(env or {})
    sys.argv = [entry.__file__, *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            entry.cli()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    return subprocess.CompletedProcess([sys.executable, "-m", "harness", *args], code, out.getvalue(),
                                       err.getvalue())
