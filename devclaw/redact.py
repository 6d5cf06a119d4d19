"""Keep secrets out of everything devclaw prints or logs."""

from __future__ import annotations

import os
import re
from typing import Any

_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|PRIVATE", re.IGNORECASE)
_MIN_SECRET_LENGTH = 6
MASK = "***"
MAX_TEXT = 500


def _secret_values() -> list[str]:
    values = {
        value for name, value in os.environ.items() if _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LENGTH
    }
    return sorted(values, key=len, reverse=True)


_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def redact(text: str) -> str:
    """``text`` with credentials in URLs and the value of every secret-looking env variable masked."""
    for value in _secret_values():
        text = text.replace(value, MASK)
    return _URL_CREDENTIALS.sub(MASK + "@", text)


def sanitize(value: Any) -> Any:
    """A JSON-able copy of call parameters fit for the audit log: secrets masked, long text cut."""
    if isinstance(value, dict):
        return {str(key): MASK if _SECRET_NAME.search(str(key)) else sanitize(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [sanitize(item) for item in value]
    if isinstance(value, str):
        value = redact(value)
        return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + "…"
    if value is None or isinstance(value, bool | int | float):
        return value
    return sanitize(repr(value))
