"""memory/audit.log: one JSON object per line, only ever appended to.

Each line is written with ONE ``os.write`` on an ``O_APPEND`` descriptor, so lines from concurrent
processes never interleave (the jsonlines Writer makes two writes per record and does). The file is
never truncated or rewritten.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devclaw.errors import StateError


def utc_now() -> str:
    """ISO 8601, UTC, milliseconds: the one timestamp format devclaw writes."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"ts": utc_now(), "event": event, **fields}
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StateError(f"Cannot append to {self.path}: {exc.strerror or exc}") from exc
        if written != len(line):
            raise StateError(f"Short write to {self.path} ({written} of {len(line)} bytes); disk full?")
        return record

    def records(self, *, event: str | None = None) -> Iterator[dict[str, Any]]:
        """Every whole record, oldest first; lines that are not JSON objects are skipped."""
        for _, record in self.lines(event=event):
            yield record

    def lines(self, *, event: str | None = None) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """Each whole record with its line as written, oldest first."""
        # Lines are written by us in one format, so a byte search skips most lines before parsing.
        needle = json.dumps({"event": event})[1:-1].encode() if event else None
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        with handle:
            for line in handle:
                if needle is not None and needle not in line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and (event is None or record.get("event") == event):
                    yield line, record
