"""`python -m harness [overrides]`: compose -> validate -> run one job -> write its record.

`python -m harness --help`: the config groups and their options, the named sweeps with their job
counts (harness.cli_help) and the next commands, from `hydra.help` in conf/config.yaml.

Any bad input (unknown group option, misspelt key, wrong type, impossible value, override syntax)
ends the process with exactly one line on stderr and exit status 2, before anything is trained.
Secret values (environment variables the command line or the config reads, or whose name looks like
a credential) never reach stdout/stderr: both streams go through harness.tracking.RedactingStream.
"""

import os
import sys
from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def _hydra_main():
    import hydra

    from harness import cli_help
    from harness.config import register_configs

    register_configs()
    cli_help.register()  # ${harness_sweeps:} in hydra.help.template

    @hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
    def main(cfg) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from harness.run import run_job

        _guard_streams(cfg)  # the config may read more of the environment than the command line
        hydra_cfg = HydraConfig.get()
        run_dir = Path(hydra_cfg.runtime.output_dir)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            return _sweep_job(cfg, run_dir, Path(hydra_cfg.sweep.dir), int(hydra_cfg.job.num))
        try:
            run_job(cfg, run_dir)
        except Exception as exc:
            _remove_if_empty(run_dir)  # rejected before anything was written: leave no empty directory
            _exit_with_one_line(exc)  # single run: no extra "Error executing job" line from Hydra

    main()


def _sweep_job(cfg, run_dir: Path, sweep_dir: Path, job_num: int) -> str:
    """One job of a sweep: any failure is recorded (result.json + sweep log) and the sweep goes on."""
    import time

    from harness import sweep_log
    from harness.cli_errors import describe
    from harness.errors import HarnessError
    from harness.results import failure_reason
    from harness.run import _run_name, run_job
    from harness.tracking import Redactor

    redactor = Redactor.for_config(cfg, sys.argv[1:])  # the sweep log is written: no secret values in it
    started = time.perf_counter()
    outcome, reason, message, run_id, record_dir = "success", None, None, None, run_dir
    try:
        record = run_job(cfg, run_dir, sweep_dir=sweep_dir)
        run_id = record["run_id"]
        if record.get("held_by"):  # another invocation of this sweep is running this job now
            outcome, message = "held", f"being run by another process ({record['held_by']})"
        elif record.get("skipped"):
            outcome, record_dir = "skipped", Path(record["record_dir"])
    except Exception as exc:  # noqa: BLE001 - isolate the failure; KeyboardInterrupt/SystemExit still stop
        line, _ = describe(exc)
        line = redactor.text(line)
        outcome, message = "failed", line
        reason = "bad input" if isinstance(exc, HarnessError) else failure_reason(exc)
        print(f"[sweep] job {job_num} failed ({reason}): {line}", file=sys.stderr, flush=True)
    finally:
        _remove_if_empty(run_dir)
    sweep_log.log_outcome(sweep_dir, job_num, record_dir, outcome, time.perf_counter() - started, run_id=run_id,
                          name=redactor.text(_run_name(cfg)), reason=reason, message=message)
    print(sweep_log.progress_line(sweep_dir), flush=True)
    return outcome


def _remove_if_empty(run_dir: Path) -> None:
    if run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()


def _guard_streams(cfg=None) -> None:
    """Route stdout/stderr through a RedactingStream once there is a secret value to keep out."""
    from harness.tracking import Redactor, RedactingStream

    redactor = Redactor.for_config(cfg, sys.argv[1:]) if cfg is not None else Redactor(texts=sys.argv[1:])
    if not redactor:
        return
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, RedactingStream):
            stream.redactor = redactor
        else:
            setattr(sys, name, RedactingStream(stream, redactor))


def cli() -> None:
    from harness.hub import configure_hub

    configure_hub()  # before anything imports huggingface_hub / datasets
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us, so we can print them as one line
    _guard_streams()
    try:
        from harness import cli_help
        if cli_help.wanted(sys.argv[1:]):
            cli_help.prepare()  # the named sweeps' job counts, before Hydra starts; only for --help
        _hydra_main()
    except Exception as exc:  # noqa: BLE001 - every failure ends as one line + exit code
        _exit_with_one_line(exc)


def _exit_with_one_line(exc: BaseException) -> None:
    from harness.cli_errors import describe
    from harness.tracking import Redactor

    line, code = describe(exc)
    line = Redactor(texts=sys.argv[1:]).text(line)  # also when the streams are not guarded yet
    print(f"harness: error: {line}", file=sys.stderr, flush=True)
    sys.exit(code)


if __name__ == "__main__":
    cli()
