"""An incremental reader of the audit log: each call reads only the bytes appended since the last one.

The log is rotated by renaming (``audit.log`` -> ``audit.log.1``, see ``devclaw.audit``), so a file is
known by its inode, not its name: after a rotation the old inode, now ``audit.log.1``, is read on from
its offset (a writer may still append one last line to it) and the new ``audit.log`` from 0. A last line
without its newline is a write in progress: it is left for the next call, never parsed torn.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devclaw.audit import AuditLog

FileKey = tuple[int, int]  # (st_dev, st_ino)
READ_CHUNK = 4 * 1024 * 1024


@dataclass
class AuditFeed:
    log: AuditLog
    offsets: dict[FileKey, int] = field(default_factory=dict)
    #: Every byte this feed has read, to prove it never reads a byte twice.
    bytes_read: int = 0

    def poll(self) -> list[dict[str, Any]]:
        """The whole records appended since the last call, oldest first."""
        return [record for batch in self.batches() for record in batch]

    def batches(self) -> Iterator[list[dict[str, Any]]]:
        """As ``poll``, a chunk (a few MiB) at a time."""
        for lines in self.line_batches():
            yield _parse(lines)

    def line_batches(self) -> Iterator[list[bytes]]:
        """The whole lines appended since the last call, unparsed, a chunk (a few MiB) at a time: reading
        a big log never holds it whole, and the caller parses only the lines it needs."""
        seen: set[FileKey] = set()
        for path in self.log.files():
            key = yield from self._read_file(path)
            if key is not None:
                seen.add(key)
        # Forget files that are gone, so a reused inode number starts from 0.
        self.offsets = {key: offset for key, offset in self.offsets.items() if key in seen}

    def changed(self) -> bool:
        """Whether any file of the log has bytes this feed has not read (a stat per file, no read)."""
        for path in self.log.files():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            if stat.st_size > self.offsets.get((stat.st_dev, stat.st_ino), 0):
                return True
        return False

    def unread_bytes(self) -> int:
        """How many bytes of the log this feed has still to read (a stat per file)."""
        unread = 0
        for path in self.log.files():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            unread += max(0, stat.st_size - self.offsets.get((stat.st_dev, stat.st_ino), 0))
        return unread

    def _read_file(self, path: Path) -> Generator[list[bytes], None, FileKey | None]:
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return None
        with handle:
            stat = os.fstat(handle.fileno())
            key = (stat.st_dev, stat.st_ino)
            offset = self.offsets.get(key, 0)
            if stat.st_size < offset:
                offset = 0  # truncated by someone else: devclaw never does this, but do not stall on it
            handle.seek(offset)
            while True:
                chunk = handle.read(READ_CHUNK)
                if not chunk:
                    break
                end = chunk.rfind(b"\n")
                if end < 0:
                    break  # a line still being written, or longer than a chunk and incomplete
                whole = chunk[: end + 1]
                self.bytes_read += len(whole)
                offset += len(whole)
                self.offsets[key] = offset
                yield whole.splitlines()
                if end + 1 < len(chunk):
                    handle.seek(offset)
            self.offsets[key] = offset
        return key


def _parse(lines: list[bytes]) -> list[dict[str, Any]]:
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # not ours, or damaged: the log's readers all skip such lines
        if isinstance(record, dict):
            records.append(record)
    return records
