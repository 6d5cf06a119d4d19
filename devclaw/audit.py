"""memory/audit.log: one JSON object per line, only ever appended to, rotated by renaming.

Each line is written with ONE ``os.write`` on an ``O_APPEND`` descriptor, holding an ``flock`` on it, so
lines from concurrent processes never interleave (the jsonlines Writer makes two writes per record and does), and a kill
cannot leave half a line.

Rotation loses nothing: when an append leaves the file over ``DEVCLAW_AUDIT_MAX_BYTES`` (default
64 MiB), the appender takes ``audit.log.lock`` and renames ``audit.log.N`` to ``audit.log.N+1`` for every
N (oldest first), then ``audit.log`` to ``audit.log.1``. Nothing is truncated, copied or deleted. A
process that opened the file just before the rename appends its line to ``audit.log.1``, which readers
still read. Readers go through ``audit.log.N`` ... ``audit.log.1``, then ``audit.log``: oldest first.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import filelock

from devclaw.errors import ConfigError, StateError
from devclaw.faults import checkpoint
from devclaw.redact import redact_result

MAX_BYTES_ENV = "DEVCLAW_AUDIT_MAX_BYTES"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
ROTATE_LOCK_TIMEOUT = 10.0


def utc_now() -> str:
    """ISO 8601, UTC, milliseconds: the one timestamp format devclaw writes."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def max_bytes_from_env() -> int:
    raw = os.environ.get(MAX_BYTES_ENV)
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{MAX_BYTES_ENV} must be a number of bytes, got {raw!r}") from None
    if value < 1:
        raise ConfigError(f"{MAX_BYTES_ENV} must be at least 1, got {value}")
    return value


def _append_whole(fd: int, line: bytes) -> int:
    """Append ``line`` whole or not at all; returns the file's size after it.

    A file that does not end in a newline (an earlier append was cut short) gets one first, so this line
    is never glued to a torn one. A short write (the disk filled up, a file size limit) is truncated back
    to where this line began, when no other process appended after it, and reported.
    """
    # Appenders take turns on the file for the check and the write: a size read in the middle of another
    # process's (large) write would otherwise look like a torn line.
    fcntl.flock(fd, fcntl.LOCK_EX)
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        line = b"\n" + line
    written = os.write(fd, line)
    if written == len(line):
        return os.fstat(fd).st_size
    end = os.lseek(fd, 0, os.SEEK_CUR)
    if os.fstat(fd).st_size == end:
        os.ftruncate(fd, end - written)
    raise OSError(errno.ENOSPC, f"short write ({written} of {len(line)} bytes; the disk may be full), undone")


class AuditLog:
    def __init__(self, path: Path, *, max_bytes: int | None = None) -> None:
        self.path = path
        self.max_bytes = max_bytes if max_bytes is not None else max_bytes_from_env()
        self._rotate_lock = filelock.FileLock(str(path.with_name(path.name + ".lock")), timeout=ROTATE_LOCK_TIMEOUT)

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        record: dict[str, Any] = redact_result({"ts": utc_now(), "event": event, **fields})
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8", "replace")
        try:
            fd = self._open()
            try:
                checkpoint("during_audit_append")
                size = _append_whole(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StateError(f"Cannot append to {self.path}: {exc.strerror or exc}") from exc
        if size > self.max_bytes:
            self.rotate()
        return record

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except FileNotFoundError:  # its folder is made on the first append, not checked on every one
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)

    #: Lines the last ``lines()``/``records()`` pass skipped: torn (cut short by a full disk or a kill,
    #: or glued to one) or not a JSON object.
    skipped_lines: int = 0

    def rotate(self) -> bool:
        """Rename the current file to ``audit.log.1`` (shifting older ones) if it is still over the limit.
        Returns whether it rotated; a busy lock means another process is rotating, so this one skips."""
        try:
            with self._rotate_lock.acquire(timeout=ROTATE_LOCK_TIMEOUT):
                try:
                    if self.path.stat().st_size <= self.max_bytes:
                        return False  # another process rotated while this one waited
                except FileNotFoundError:
                    return False
                for number in sorted(self._rotated_numbers(), reverse=True):
                    self._rotated(number).replace(self._rotated(number + 1))
                self.path.replace(self._rotated(1))
                return True
        except filelock.Timeout:
            return False
        except OSError as exc:
            raise StateError(f"Cannot rotate {self.path}: {exc.strerror or exc}") from exc

    def files(self) -> list[Path]:
        """Every file of the log, oldest first: ``audit.log.N`` ... ``audit.log.1``, ``audit.log``."""
        rotated = [self._rotated(number) for number in sorted(self._rotated_numbers(), reverse=True)]
        return [*rotated, self.path]

    def records(self, *, event: str | None = None) -> Iterator[dict[str, Any]]:
        """Every whole record, oldest first; lines that are not JSON objects are skipped."""
        for _, record in self.lines(event=event):
            yield record

    def lines(self, *, event: str | None = None) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """Each whole record with its line as written, oldest first, across the rotated files."""
        # Lines are written by us in one format, so a byte search skips most lines before parsing.
        needle = json.dumps({"event": event})[1:-1].encode() if event else None
        self.skipped_lines = 0
        for path in self.files():
            try:
                handle = path.open("rb")
            except FileNotFoundError:
                continue
            with handle:
                for line in handle:
                    if needle is not None and needle not in line:
                        continue
                    try:
                        record = json.loads(line)
                    except ValueError:
                        self.skipped_lines += bool(line.strip())
                        continue
                    if not isinstance(record, dict) or not line.endswith(b"\n"):
                        self.skipped_lines += 1
                        continue
                    if event is None or record.get("event") == event:
                        yield line, record

    def count(self, event: str, **fields: Any) -> int:
        """How many records of ``event`` carry every one of ``fields`` with that exact value."""
        return sum(1 for record in self.records(event=event) if all(record.get(k) == v for k, v in fields.items()))

    def _rotated(self, number: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{number}")

    def _rotated_numbers(self) -> list[int]:
        pattern = re.compile(re.escape(self.path.name) + r"\.([1-9][0-9]*)")
        try:
            names = [entry.name for entry in self.path.parent.iterdir()]
        except FileNotFoundError:
            return []
        return [int(match.group(1)) for name in names if (match := pattern.fullmatch(name))]
