"""Turn any exception that ends the CLI into one line (and an exit code).

2 = bad input (config composition, validation, missing data); 1 = the run itself failed (its
record says `failed`, with the full traceback).
"""

from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from harness.errors import HarnessError, RunsFailed, did_you_mean

BAD_INPUT, RUN_FAILED = 2, 1


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")


def _unknown_option(exc: MissingConfigException) -> str:
    # missing_cfg_file looks like 'method/lorra'; options lists what exists in that group
    group, _, name = (exc.missing_cfg_file or "").rpartition("/")
    options = list(exc.options or [])
    if not group:
        return _first_line(exc)
    return f"unknown {group} '{name}'{did_you_mean(name, options)}; available: {', '.join(options)}"


def _omegaconf_line(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    if isinstance(exc, (ConfigKeyError, ConfigAttributeError)) and key:
        parent = getattr(exc, "parent_node", None)
        choices = list(parent.keys()) if parent is not None and hasattr(parent, "keys") else []
        parent_key = key.rsplit(".", 1)[0] + "." if "." in key else ""
        full_choices = [f"{parent_key}{c}" for c in choices]
        return (f"unknown config key '{key}'{did_you_mean(key, full_choices)};"
                f" valid keys here: {', '.join(map(str, choices))}")
    if isinstance(exc, ValidationError) and key:
        return f"bad value for '{key}': {_first_line(getattr(exc, 'msg', exc))}"
    return _first_line(getattr(exc, "msg", None) or exc)


def describe(exc: BaseException):
    """(one-line message, exit code) for an exception that reached the CLI."""
    if isinstance(exc, HarnessError):
        return _first_line(exc), BAD_INPUT
    if isinstance(exc, MissingConfigException):
        return _unknown_option(exc), BAD_INPUT
    if isinstance(exc, ConfigCompositionException):
        cause = exc.__cause__
        if isinstance(cause, OmegaConfBaseException):
            return _omegaconf_line(cause), BAD_INPUT
        if isinstance(cause, MissingConfigException):
            return _unknown_option(cause), BAD_INPUT
        return _first_line(exc), BAD_INPUT
    if isinstance(exc, OmegaConfBaseException):
        return _omegaconf_line(exc), BAD_INPUT
    if isinstance(exc, RunsFailed):
        return _first_line(exc), RUN_FAILED
    if isinstance(exc, SystemExit):
        return f"exited with {exc.code}", RUN_FAILED
    return f"{type(exc).__name__}: {_first_line(exc)} (traceback in the run's result.json)", RUN_FAILED
