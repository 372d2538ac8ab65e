"""`python -m harness [overrides]`: compose -> validate -> run one job -> write its record.

Any bad input (unknown group option, misspelt key, wrong type, impossible value) ends the process
with exactly one line on stderr and exit status 2, before anything is trained.
"""

import os
import sys
from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def _hydra_main():
    import hydra

    from harness.config import register_configs

    register_configs()

    @hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
    def main(cfg) -> None:
        from hydra.core.hydra_config import HydraConfig

        from hydra.types import RunMode

        from harness.run import run_job

        hydra_cfg = HydraConfig.get()
        run_dir = Path(hydra_cfg.runtime.output_dir)
        try:
            run_job(cfg, run_dir)
        except Exception as exc:
            if run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()  # rejected before anything was written: leave no empty directory
            if hydra_cfg.mode == RunMode.MULTIRUN:
                raise  # the job's record says why; Hydra goes on with the other jobs
            _exit_with_one_line(exc)  # single run: no extra "Error executing job" line from Hydra

    main()


def cli() -> None:
    from harness.hub import configure_hub

    configure_hub()  # before anything imports huggingface_hub / datasets
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us, so we can print them as one line
    try:
        _hydra_main()
    except Exception as exc:  # noqa: BLE001 - every failure ends as one line + exit code
        _exit_with_one_line(exc)


def _exit_with_one_line(exc: BaseException) -> None:
    from harness.cli_errors import describe

    line, code = describe(exc)
    print(f"harness: error: {line}", file=sys.stderr, flush=True)
    sys.exit(code)


if __name__ == "__main__":
    cli()
