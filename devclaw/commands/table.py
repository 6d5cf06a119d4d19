"""Plain-text tables for people: aligned columns, bold headers and coloured states on a terminal,
plain text when stdout is a pipe or a file, or when ``NO_COLOR`` is set (https://no-color.org)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

_CODES = {"bold": "1", "dim": "2", "green": "32", "yellow": "33", "red": "31", "cyan": "36"}


def colour_enabled() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def paint(text: str, style: str) -> str:
    return f"\033[{_CODES[style]}m{text}\033[0m" if colour_enabled() else text


class Table:
    def __init__(self, headers: Sequence[str]) -> None:
        self.headers = tuple(headers)
        self.rows: list[tuple[str, ...]] = []

    def add(self, *cells: object) -> None:
        self.rows.append(tuple(" ".join(str(cell).split()) for cell in cells))  # one line per row

    def render(self) -> str:
        widths = [max(len(row[i]) for row in (self.headers, *self.rows)) for i in range(len(self.headers))]
        head = "  ".join(h.upper().ljust(w) for h, w in zip(self.headers, widths, strict=True)).rstrip()
        lines = [paint(head, "bold")]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in self.rows]
        return "\n".join(lines)
