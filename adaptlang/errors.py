"""User-facing errors: one readable line, no traceback, non-zero exit (see cli.main)."""
from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """A mistake in the user's input (config, data, paths). The CLI prints it as one line."""


def suggest(word: str, options: Iterable[str]) -> str:
    """' Did you mean X?' for the closest option, or '' when nothing is close."""
    options = [str(o) for o in options]
    close = difflib.get_close_matches(str(word), options, n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def listing(options: Iterable[str]) -> str:
    return ", ".join(sorted(str(o) for o in options)) or "(none)"
