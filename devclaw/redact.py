"""Keep secrets out of everything devclaw prints or logs."""

from __future__ import annotations

import base64
import functools
import os
import re
from typing import Any
from urllib.parse import quote

_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|PRIVATE", re.IGNORECASE)
_MIN_SECRET_LENGTH = 6
MASK = "***"
MAX_TEXT = 500


#: Secrets devclaw was handed under a name it would not recognise (a project's tracker.tokenEnv).
_KNOWN: set[str] = set()


def remember_secret(value: str) -> None:
    """Mask ``value`` from now on, whatever the variable it came from is called."""
    if len(value) >= _MIN_SECRET_LENGTH:
        _KNOWN.add(value)


def _secret_values() -> list[str]:
    values = {
        value for name, value in os.environ.items() if _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LENGTH
    }
    return sorted(values | _KNOWN, key=len, reverse=True)


_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


#: A run of a secret this long, from its start, is masked wherever it appears (a server may echo part of it).
PREFIX = 8


@functools.lru_cache(maxsize=64)
def _forms(value: str) -> tuple[str, ...]:
    """The ways a secret can appear in text: as it is, URL-encoded, base64 (plain and URL-safe)."""
    raw = value.encode()
    forms = {value, quote(value, safe=""), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
    return tuple(sorted((form.rstrip("=") for form in forms), key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with credentials in URLs and every secret-looking env variable's value masked: whole,
    URL-encoded, base64, or any run of 8 or more of its first characters."""
    return _masked(text, _secret_values())


def _masked(text: str, secrets: list[str]) -> str:
    for value in secrets:
        for form in _forms(value):
            text = _mask_prefixes(text, form)
    return _URL_CREDENTIALS.sub(MASK + "@", text)


def _mask_prefixes(text: str, secret: str) -> str:
    if len(secret) < PREFIX:
        return text.replace(secret, MASK)
    head, out, start = secret[:PREFIX], [], 0
    while (found := text.find(head, start)) != -1:
        end = found + PREFIX
        while end < len(text) and end - found < len(secret) and text[end] == secret[end - found]:
            end += 1
        out += [text[start:found], MASK]
        start = end
    return "".join(out) + text[start:] if out else text


def redact_result(value: Any) -> Any:
    """A result (any JSON value) with every string in it passed through ``redact``."""
    secrets = _secret_values()  # once per result: reading the environment costs more than masking
    if not secrets:
        return value  # the common case: nothing to look for
    return _redact_all(value, secrets)


def _redact_all(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return _masked(value, secrets)
    if isinstance(value, dict):
        return {key: _redact_all(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_all(item, secrets) for item in value]
    return value


MAX_ITEMS = 50
MAX_DEPTH = 8


def sanitize(value: Any, depth: int = 0) -> Any:
    """A JSON-able copy of call parameters fit for the audit log: secrets masked, long text cut, and
    its size bounded (keys, items, nesting), whatever the caller sent."""
    if depth >= MAX_DEPTH and isinstance(value, dict | list | tuple):
        return "…"
    if isinstance(value, dict):
        items = list(value.items())[:MAX_ITEMS]
        return {
            str(key)[:100]: MASK if _SECRET_NAME.search(str(key)) else sanitize(item, depth + 1) for key, item in items
        }
    if isinstance(value, list | tuple):
        return [sanitize(item, depth + 1) for item in value[:MAX_ITEMS]]
    if isinstance(value, str):
        value = redact(value[: MAX_TEXT * 2])
        return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + "…"
    if value is None or isinstance(value, bool | int | float):
        return value
    return sanitize(repr(value))
