"""Turn any exception that ends the CLI into one line (and an exit code).

2 = bad input (override syntax, config composition, validation, missing data); 1 = the run itself
failed (its record says `failed`, with the full traceback).
"""

import re

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
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


LEXER = "LexerNoViableAltException: "


def _override_parse_line(exc: OverrideParseException) -> str:
    """Hydra's grammar error (two lines with a caret, or ANTLR's expectations) as one line that names
    the override, what is wrong in it and how to quote it."""
    override = str(getattr(exc, "override", "") or "")
    lines = [ln for ln in str(getattr(exc, "message", None) or exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("See https://hydra.cc")]
    reason = ""
    if lines and lines[0].startswith(LEXER) and len(lines) > 1 and "^" in lines[1]:
        col = lines[1].index("^") - len(LEXER)
        if 0 <= col < len(override):
            reason = f"unexpected character '{override[col]}' at position {col + 1}"
    if not reason:
        text = lines[-1] if lines and lines[0].startswith("Error parsing override") else (lines[0] if lines else "")
        reason = re.sub(r"\s+expecting\s+\{.*$", "", text.replace(LEXER, "")).strip() or "not valid override syntax"
    key, sep, value = override.partition("=")
    example = f"'{key}=\"{value}\"'" if sep and value and '"' not in value and "'" not in value \
        else "'method.layers=\"0;2;4\"'"
    return (f"cannot parse override '{override}': {reason}; brackets must balance, and a value with special"
            f" characters (; , [ ] {{ }} ( ) quotes, spaces, non-ASCII) must be quoted, the whole override"
            f" in single quotes for the shell: {example}")


# Hydra modules that compose the config: an error raised there is bad input, not a failed run.
_COMPOSITION_MODULES = ("hydra._internal.config_loader_impl", "hydra._internal.defaults_list",
                        "hydra._internal.config_repository", "hydra.core.override_parser")


def _raised_while_composing(exc: BaseException) -> bool:
    tb = exc.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame.f_globals.get("__name__", ""))
        tb = tb.tb_next
    return any(name.startswith(_COMPOSITION_MODULES) for name in frames[-6:])


def describe(exc: BaseException):
    """(one-line message, exit code) for an exception that reached the CLI."""
    if isinstance(exc, HarnessError):
        return _first_line(exc), BAD_INPUT
    parse_error = next((e for e in (exc, exc.__cause__, exc.__context__) if isinstance(e, OverrideParseException)),
                       None)
    if parse_error is not None:
        return _override_parse_line(parse_error), BAD_INPUT
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
    if isinstance(exc, (ValueError, TypeError, KeyError)) and _raised_while_composing(exc):
        return f"cannot compose the config: {_first_line(exc)}", BAD_INPUT  # e.g. `+train=1`
    return f"{type(exc).__name__}: {_first_line(exc)} (traceback in the run's result.json)", RUN_FAILED
