"""The documentation's commands work, checked without training anything.

Every shell command in a fenced code block of README.md, docs/*.md and results/*/README.md that runs
`python -m harness...` (also after `VAR=value` prefixes and inside `&&` chains) is checked:
- `python -m harness ...`: every job it would run composes and validates, as the CLI would do
  before training (a `+sweep=NAME` command expands through harness.sweeper.plan, a `-m` multirun
  through the grid sweeper; of a sweep's jobs, enough are validated that every override value of
  the grid is validated at least once). LoRI-S needs a finished LoRI-D run, so its jobs are only
  composed and their keys checked against the schema.
- `python -m harness.sweeper NAME ...`: expands (what the command prints).
- `python -m harness.analysis ...`: its arguments parse with the module's own parser, and each sweep
  it names exists in the repository, is a named sweep (sweeps/NAME), or is the output directory
  (`hydra.sweep.dir`) of a documented command.
Also: the sweeps table in docs/sweeps-and-launchers.md matches the expansion; `python -m harness
--help` lists every config group with its options, every file in conf/sweep with its job count,
and next-step commands that pass the same checks; .ci/run finds the README's test command.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CONF, REPO, compose
from harness.config import check_keys, validate
from harness.methods import METHODS
from harness.sweeper import GridSweeper, plan

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
             *sorted((REPO / "results").glob("*/README.md"))]
PYTHON = re.compile(r"^(?:\S*/)?python(?:3(?:\.\d+)?)?$")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
LOOKS_LIKE_COMMAND = re.compile(r"^\s*(?:[A-Za-z_]\w*=\S*\s+)*\S*python[\d.]*\s+-m\s+harness")
SEPARATORS = {"&&", "||", ";", "|", "&"}
HYDRA_FLAGS = {"--help", "-h", "--hydra-help", "--resolve", "--version"}
HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "-i", "--config-name", "-cn",
                          "--config-path", "-cp", "--config-dir", "-cd", "--experimental-rerun"}
ENV_READ = re.compile(r"\$\{\s*(?:oc\.env|env)\s*:\s*([^,}\s]+)")


# -- extraction ---------------------------------------------------------------------------------

def code_lines(text: str):
    """(line number, logical line) inside fenced code blocks; backslash continuations are joined."""
    in_block, buffer, start = False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_block, buffer = not in_block, ""
            continue
        if not in_block:
            continue
        if not buffer:
            start = number
        if line.rstrip().endswith("\\"):
            buffer += line.rstrip()[:-1] + " "
            continue
        yield start, buffer + line
        buffer = ""


def _tokens(line: str):
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def commands_in(text: str):
    """(line number, module, args, env) for every `python -m harness...` invocation in the code blocks."""
    for number, line in code_lines(text):
        try:
            tokens = _tokens(line)
        except ValueError as exc:  # unbalanced quotes: fine in an annotated tree, not in a command
            if LOOKS_LIKE_COMMAND.match(line):
                yield number, "unparsable", [line, str(exc)], {}
            continue
        segment = []
        for token in tokens + [";"]:
            if token not in SEPARATORS:
                segment.append(token)
                continue
            env = {}
            while segment and ENV_ASSIGNMENT.match(segment[0]):
                key, _, value = segment.pop(0).partition("=")
                env[key] = value
            if (len(segment) >= 3 and PYTHON.match(segment[0]) and segment[1] == "-m"
                    and (segment[2] == "harness" or segment[2].startswith("harness."))):
                yield number, segment[2], segment[3:], env
            segment = []


def documented_commands():
    found = []
    for path in DOC_FILES:
        for number, module, args, env in commands_in(path.read_text()):
            found.append((f"{path.relative_to(REPO)}:{number}", module, args, env))
    return found


COMMANDS = documented_commands()


def _ids(commands):
    return [f"{where} {module} {' '.join(args)}"[:150] for where, module, args, _ in commands]


# -- checks ---------------------------------------------------------------------------------------

def _split_flags(args):
    """(overrides, multirun) from a `python -m harness` argument list; unknown flags are errors."""
    overrides, multirun, i = [], False, 0
    while i < len(args):
        arg = args[i]
        if arg in ("-m", "--multirun"):
            multirun = True
        elif arg in HYDRA_FLAGS:
            pass
        elif arg in HYDRA_FLAGS_WITH_VALUE:
            i += 1
        elif arg.startswith("-"):
            raise AssertionError(f"unknown flag {arg!r}")
        else:
            overrides.append(arg)
        i += 1
    return overrides, multirun


def harness_jobs(args):
    """The override lists of the jobs `python -m harness <args>` would run."""
    overrides, multirun = _split_flags(args)
    sweeps = [o for o in overrides if o.startswith("+sweep=")]
    if sweeps:
        assert len(sweeps) == 1, f"more than one +sweep= in {overrides}"
        rest = [o for o in overrides if o not in sweeps]
        return [job for block in plan(sweeps[0].split("=", 1)[1], rest) for job in block]
    if multirun:
        return [job for block in GridSweeper().expand(overrides) for job in block]
    return [overrides]


def covering(jobs):
    """Jobs until every override value of the grid is in one of them (each job once)."""
    seen, chosen = set(), []
    for job in jobs:
        if set(job) - seen:
            chosen.append(job)
            seen |= set(job)
    return chosen


_VALID_JOBS = set()  # jobs already checked (several documented commands share jobs)


def check_job(job) -> None:
    key = tuple(sorted(job))
    if key in _VALID_JOBS:
        return
    cfg = compose(*job)
    if METHODS.get(cfg.method.kind).source_run_kind:  # needs a finished run (method.source_run): checked when it runs
        check_keys(cfg)
    else:
        validate(cfg)
    _VALID_JOBS.add(key)


def check_harness(args, monkeypatch) -> int:
    for name in ENV_READ.findall(" ".join(args)):
        if name not in os.environ:
            monkeypatch.setenv(name, "value-for-tests-docs")
    jobs = harness_jobs(args)
    assert jobs, "expands to no job"
    for job in covering(jobs):
        try:
            check_job(job)
        except Exception as exc:  # noqa: BLE001 - report which job of the command failed
            raise AssertionError(f"job {' '.join(job) or '(defaults)'}: {type(exc).__name__}: {exc}") from exc
    return len(jobs)


def sweep_dirs_written_by_docs():
    """Sweep output directories the documented commands create: sweeps/NAME for named sweeps and
    every `hydra.sweep.dir=` given."""
    dirs = {f"sweeps/{p.stem}" for p in (CONF / "sweep").glob("*.yaml")}
    for _, module, args, _ in COMMANDS:
        dirs |= {a.split("=", 1)[1].rstrip("/") for a in args if module == "harness" and a.startswith("hydra.sweep.dir=")}
    return dirs


def check_analysis(args) -> None:
    from harness.analysis.__main__ import build_parser
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit as exc:
        raise AssertionError(f"python -m harness.analysis rejects {args} (exit {exc.code})") from None
    known = sweep_dirs_written_by_docs()
    for spec in parsed.sweeps:
        spec = spec.rstrip("/")
        ok = (REPO / spec).is_dir() or spec in known or f"sweeps/{spec}" in known
        assert ok, f"sweep {spec!r} is neither in the repository nor written by a documented command"


def check_sweeper(args) -> int:
    assert args, "python -m harness.sweeper needs a sweep name"
    assert (CONF / "sweep" / f"{args[0]}.yaml").is_file(), f"no sweep named {args[0]!r}"
    jobs = [job for block in plan(args[0], args[1:]) for job in block]
    assert jobs, "expands to no job"
    return len(jobs)


def check_command(module, args, monkeypatch) -> None:
    if module == "unparsable":
        raise AssertionError(f"cannot parse the shell line {args[0]!r}: {args[1]}")
    if module == "harness":
        check_harness(args, monkeypatch)
    elif module == "harness.sweeper":
        check_sweeper(args)
    elif module == "harness.analysis":
        check_analysis(args)
    else:
        raise AssertionError(f"unknown module {module}: python -m {module} is no entry point of this package")


# -- tests ----------------------------------------------------------------------------------------

def test_the_docs_hold_commands_of_every_kind():
    modules = {module for _, module, _, _ in COMMANDS}
    assert {"harness", "harness.sweeper", "harness.analysis"} <= modules
    assert len(COMMANDS) >= 30
    sources = {where.split(":")[0] for where, *_ in COMMANDS}
    assert {"README.md", "docs/sweeps-and-launchers.md", "results/lora_vs_reft_study/README.md"} <= sources


@pytest.mark.parametrize("where,module,args,env", COMMANDS, ids=_ids(COMMANDS))
def test_documented_command_is_valid(where, module, args, env, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        check_command(module, args, monkeypatch)
    except AssertionError as exc:
        raise AssertionError(f"{where}: python -m {module} {' '.join(args)}\n  {exc}") from None


@pytest.mark.parametrize("line,problem", [
    ("python -m harness method.rnak=4", "method.rnak"),
    ("python -m harness method=lorra", "lorra"),
    ("python -m harness train.base_lr=0", "base_lr must be > 0"),
    ("python -m harness +sweep=lora_vs_reft task=sst2,rtee", "rtee"),
    ("python -m harness -m method=fullft,lora train.sed=1,2", "train.sed"),
    ("python -m harness --multiruns method=lora", "unknown flag"),
    ("python -m harness.sweeper lora_vs_ref", "no sweep named"),
    ("python -m harness.analysis lora_vs_reft --parms nonzero", "rejects"),
    ("python -m harness.analysis sweeps/no_such_sweep", "neither in the repository"),
    ("python -m harness.analyse lora_vs_reft", "no entry point"),
    ("python -m harness method=loreft 'method.layers=\"0;2;4\"", "cannot parse"),
])
def test_a_wrong_command_fails_the_check(line, problem, monkeypatch):
    """The checks can fail: a typo in a documented command is caught (key, option, value, grid value,
    flag, sweep name, analysis option or input, module, quoting)."""
    (found,) = list(commands_in(f"```bash\n{line}\n```\n"))
    _, module, args, _ = found
    with pytest.raises(Exception, match=re.escape(problem)):
        check_command(module, args, monkeypatch)


def test_extraction_handles_prefixes_chains_continuations_and_comments():
    text = ("```bash\n"
            "python3.11 -m venv .venv && .venv/bin/python -m harness task=sst2  # a comment\n"
            "HF_HUB_OFFLINE=1 python -m harness +sweep=smoke \\\n  train.seed=3\n"
            "conf/  tree lines and prose with an apostrophe's quote are skipped\n"
            "```\n"
            "python -m harness outside=a_block\n")
    assert [(m, a, e) for _, m, a, e in commands_in(text)] == [
        ("harness", ["task=sst2"], {}),
        ("harness", ["+sweep=smoke", "train.seed=3"], {"HF_HUB_OFFLINE": "1"}),
    ]


def test_the_sweeps_table_matches_the_expansion():
    """docs/sweeps-and-launchers.md: one row per file in conf/sweep, with its default and profile=gpu counts."""
    text = (REPO / "docs" / "sweeps-and-launchers.md").read_text()
    rows = {name: (int(n), gpu.strip())
            for name, n, gpu in re.findall(r"^\| `(\w+)` \| (\d+) \| ([^|]+) \|", text, re.M)}
    names = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))
    assert sorted(rows) == names
    for name, (default, gpu) in rows.items():
        assert default == sum(len(b) for b in plan(name)), name
        if gpu[0].isdigit():
            assert int(gpu) == sum(len(b) for b in plan(name, ["profile=gpu"])), name


def _readme_command(marker: str) -> str:
    """The line .ci/run takes: the second line after the marker (awk '/marker/{getline; getline; print}')."""
    lines = (REPO / "README.md").read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if marker in line)
    return lines[i + 2]


def test_ci_finds_the_test_and_run_commands():
    assert "awk '/<!-- test-command -->/{getline; getline; print; exit}' README.md" in (REPO / ".ci" / "run").read_text()
    assert _readme_command("<!-- test-command -->").endswith("-m pytest")
    assert _readme_command("<!-- run-command -->").endswith("-m harness task=sst2 method=lora")


@pytest.fixture(scope="module")
def help_text():
    run = subprocess.run([sys.executable, "-m", "harness", "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def test_help_lists_every_group_with_its_options(help_text):
    for group in ("model", "task", "method", "train", "eval", "logger", "sweep", "profile"):
        options = ", ".join(sorted(p.stem for p in (CONF / group).glob("*.yaml")))
        assert f"{group}: {options}\n" in help_text, group


def test_help_lists_every_sweep_with_its_job_count(help_text):
    for path in sorted((CONF / "sweep").glob("*.yaml")):
        count = sum(len(b) for b in plan(path.stem))
        assert re.search(rf"^\s+{path.stem}\s+{count} jobs\b", help_text, re.M), path.stem


def test_help_next_steps_are_valid_commands(help_text, monkeypatch):
    section = help_text.split("== Next ==", 1)[1]
    found = list(commands_in("```\n" + section.split("\n\n", 1)[0] + "\n```\n"))
    assert {module for _, module, _, _ in found} == {"harness", "harness.analysis"} and len(found) >= 3
    for _, module, args, _ in found:
        check_command(module, args, monkeypatch)
