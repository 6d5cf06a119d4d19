"""Input every front end shares: group ids, and tool parameters given as JSON text.

A group id is a project's key in projects.json and the ``projectGroupId`` of every tool. It is
normalised and checked here and nowhere else, so ``" -100… "`` from a shell and ``-100…`` from the
agent name the same project, and ``""`` or a newline can never become a key nobody can address again.
"""

from __future__ import annotations

import json
import re

from devclaw.errors import InputError

#: Telegram chat ids are integers such as -1001234567890; other channels' ids are short words.
_GROUP_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
#: Deeper parameters are refused before any code recurses over them (Python's own limit is ~1000).
MAX_PARAMS_DEPTH = 64


def normalize_group_id(value: object) -> str:
    """The group id as stored: an int becomes its digits, surrounding whitespace is dropped."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InputError(f"A group id is a string or an integer, got {type(value).__name__}")
    text = value.strip()
    if not _GROUP_ID.fullmatch(text):
        shown = repr(value) if len(value) <= 70 else repr(value[:70]) + "…"
        raise InputError(
            f"Invalid group id {shown}: expected the Telegram chat id such as -1001234567890 "
            "(1-64 letters, digits or _ . : @ -)"
        )
    return text


def parse_params(text: str) -> object:
    """Tool parameters from JSON text: empty text is ``{}``; too deep a nesting is an input error."""
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"Parameters are not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise InputError(f"Parameters are nested too deeply (at most {MAX_PARAMS_DEPTH} levels)") from None
    if _depth(data) > MAX_PARAMS_DEPTH:
        raise InputError(f"Parameters are nested too deeply (at most {MAX_PARAMS_DEPTH} levels)")
    return data


def _depth(data: object) -> int:
    deepest, pending = 0, [(data, 1)]
    while pending:
        value, level = pending.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, level)
            if level > MAX_PARAMS_DEPTH:
                return level
            pending.extend((item, level + 1) for item in value)
    return deepest
