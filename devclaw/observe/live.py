"""The observatory's live model: it follows projects.json and the audit log, keeps the queues read in
the background, and bumps ``version`` on every change so pages and event streams know to update.

Everything here runs on the server's event loop; file reads and tracker requests run in threads and
hand their results back to the loop, so a page view reads memory only and never waits on a tracker.

The server answers as soon as projects.json is read. The audit log already written is read by a
background thread into a History of its own, which nothing else touches until it is handed over whole
(``history_ready``); until then pages show the workers and queues, and say how far the read has got.
The feed's offsets are where that read ended, so following the log goes on from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devclaw.errors import DevclawError, error_payload
from devclaw.observe.board import Board, QueueSnapshot, refresh_snapshot
from devclaw.observe.feed import AuditFeed
from devclaw.observe.history import History, parse_ts
from devclaw.redact import redact
from devclaw.state import ProjectsFile
from devclaw.workspace import Workspace

WATCH_INTERVAL = 0.2  # seconds between two looks (a stat each) at projects.json and the audit log
MAX_PARALLEL_READS = 4  # as queue_status: never dozens of connections to one GitLab at once

FileStamp = tuple[int, int, int] | None


@dataclass
class Settings:
    refresh: float = 30.0


class Observatory:
    def __init__(self, ws: Workspace, settings: Settings | None = None) -> None:
        self.ws = ws
        self.settings = settings or Settings()
        self.feed = AuditFeed(ws.audit)
        self.history = History()
        self.history_ready = False
        self.history_error: str | None = None  # why the log written before start-up cannot be read
        self.history_total_bytes = 0  # what the background read has to read, as it started
        self.board = Board()
        self.state = ProjectsFile()
        self.state_error: str | None = None
        self.version = 0
        self.started_at = time.time()
        self._state_stamp: FileStamp = None
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reading: set[str] = set()
        self._reads = asyncio.Semaphore(MAX_PARALLEL_READS)

    # --- start-up and background work ---------------------------------------------------------

    def load_state(self) -> None:
        """Read projects.json (all the server needs before it answers) and size the log to read."""
        self._read_state()
        self.history_total_bytes = self.feed.unread_bytes()

    def history_progress(self) -> dict[str, Any]:
        """How far the read of the log written before start-up has got."""
        total = max(1, self.history_total_bytes)
        percent = 100 if self.history_ready else min(99, self.feed.bytes_read * 100 // total)
        return {
            "ready": self.history_ready,
            "percent": percent,
            "error": self.history_error,
            "records": self.history.seq,
        }

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._load_history()),
            asyncio.create_task(self._watch()),
            asyncio.create_task(self._refresh_queues()),
        ]

    async def _load_history(self) -> None:
        if self.history_ready:
            return
        loop = asyncio.get_running_loop()

        def progress() -> None:
            loop.call_soon_threadsafe(self.bump)  # pages show the share read

        try:
            read = await asyncio.to_thread(self._read_history, progress)
        except OSError as exc:
            self.history_error = redact(f"{exc.strerror or exc} ({exc.filename})")
            self.bump()
            return
        self._hand_over(read)
        self.bump()

    def _read_history(self, progress: Callable[[], None] | None = None) -> tuple[History, list[dict[str, Any]]]:
        """A new History of the whole log, and the records of moves made since the server started."""
        self.history_total_bytes = self.feed.unread_bytes()
        history, recent = History(), []
        for lines in self.feed.line_batches():
            for line in lines:
                record = history.add_line(line)
                if record is not None and (parse_ts(record.get("ts")) or 0.0) >= self.started_at:
                    recent.append(record)
            if progress is not None:
                progress()
        return history, recent

    def _hand_over(self, read: tuple[History, list[dict[str, Any]]]) -> None:
        self.history, recent = read
        self.history_ready = True
        for record in recent:  # a pickup made while the log was being read still shows at once
            self._follow_move(record)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_for_change(self, seen: int, timeout: float) -> int:
        """The version once it is past ``seen`` (or as it is when ``timeout`` runs out)."""
        with contextlib.suppress(TimeoutError):
            while self.version <= seen:
                event = self._changed
                await asyncio.wait_for(event.wait(), timeout)
        return self.version

    def bump(self) -> None:
        self.version += 1
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def _watch(self) -> None:
        while True:
            if _stamp(self.ws.store.path) != self._state_stamp:
                await asyncio.to_thread(self._read_state)
                self.bump()
            if self.history_ready and self.feed.changed():
                lines = await asyncio.to_thread(self._read_new_lines)
                self._digest(lines)
            await asyncio.sleep(WATCH_INTERVAL)

    def _read_state(self) -> None:
        self._state_stamp = _stamp(self.ws.store.path)
        try:
            self.state = self.ws.store.read()
            self.state_error = None
        except DevclawError as exc:
            self.state_error = redact(error_payload(exc)["message"])  # keep showing the last good file

    def _read_new_lines(self) -> list[bytes]:
        return [line for lines in self.feed.line_batches() for line in lines]

    def _digest(self, lines: list[bytes]) -> None:
        for line in lines:
            record = self.history.add_line(line)
            if record is not None:
                self._follow_move(record)
        if lines:
            self.bump()

    def _follow_move(self, record: dict[str, Any]) -> None:
        # A move the log reports after the last tracker read is applied to the lists, so a pickup or a
        # triage move shows at once, without a tracker request; the next read confirms it.
        move, group_id, issue_id = record.get("labelTransition"), record.get("groupId"), record.get("issue")
        if not (isinstance(move, str) and " → " in move and isinstance(group_id, str) and isinstance(issue_id, int)):
            return
        snapshot = self.board.snapshots.get(group_id)
        project = self.state.projects.get(group_id)
        at = parse_ts(record.get("ts"))
        if snapshot is None or project is None or snapshot.fetched_at is None or at is None or at < snapshot.fetched_at:
            return
        snapshot.move(issue_id, move.split(" → ", 1)[1], project.effective_workflow())

    async def _refresh_queues(self) -> None:
        while True:
            now = time.time()
            for group_id in list(self.state.projects):
                snapshot = self.board.snapshot(group_id)
                due = snapshot.started_at is None or now - snapshot.started_at >= self.settings.refresh
                if due and group_id not in self._reading:
                    self.request_read(group_id)
            await asyncio.sleep(min(1.0, self.settings.refresh))

    def request_read(self, group_id: str) -> None:
        """Read ``group_id``'s queues now (after a move made here), unless a read is under way."""
        if group_id in self._reading or group_id not in self.state.projects:
            return
        self._reading.add(group_id)
        self.board.snapshot(group_id).started_at = time.time()
        self._tasks.append(asyncio.create_task(self._read_queues(group_id)))

    async def _read_queues(self, group_id: str) -> None:
        try:
            async with self._reads:
                project = self.state.projects.get(group_id)
                if project is None:
                    return
                old = self.board.snapshot(group_id)
                new: QueueSnapshot = await asyncio.to_thread(refresh_snapshot, self.ws, project, old)
                self.board.snapshots[group_id] = new
                self.bump()
        finally:
            self._reading.discard(group_id)
            self._tasks = [task for task in self._tasks if not task.done()]


def _stamp(path: Any) -> FileStamp:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)
