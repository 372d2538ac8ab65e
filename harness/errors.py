"""Errors that end a run before training with one clear line (see __main__.cli)."""

import difflib


class HarnessError(Exception):
    """Bad input or an impossible setting; the message is shown to the user as one line."""


def did_you_mean(word: str, choices) -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class RunsFailed(Exception):
    """A sweep finished with failed jobs (each recorded in its result.json; listed in the summary)."""
