"""``devclaw status``: the board, per project its two workers and its queues."""

from __future__ import annotations

import argparse
from typing import Any

from devclaw.tools.common import WorkerView
from devclaw.tools.queue import ProjectQueue, QueueItem, collect_queues
from devclaw.workflow import QUEUES
from devclaw.workspace import Workspace

_QUEUE_TITLES = {key: label.value for key, label in QUEUES}
_SHOWN = 5


def register(sub: Any) -> None:
    status = sub.add_parser("status", help="a readable board: workers and queues of every project")
    status.add_argument("group_id", nargs="?", metavar="GROUP_ID", help="only this project")
    status.set_defaults(handler=run_status)


def run_status(ws: Workspace, args: argparse.Namespace) -> int:
    rows = collect_queues(ws, args.group_id)
    if not rows:
        print("No projects yet. Register one with: devclaw project add GROUP_ID --name NAME")
    print("\n\n".join(render(row) for row in rows))
    return 1 if any(row.error for row in rows) else 0


def render(row: ProjectQueue) -> str:
    lines = [f"{row.name}  ({row.group_id})", _worker("DEV", row.dev), _worker("QA", row.qa)]
    if row.queue is None:
        assert row.error is not None
        lines.append(f"  queues unavailable: {row.error.message}")
        return "\n".join(lines)
    queues = row.queue.model_dump(by_alias=True)
    for key, title in _QUEUE_TITLES.items():
        items = [QueueItem.model_validate(item) for item in queues[key]]
        lines.append(f"  {title + ':':<12}{_items(items)}")
    return "\n".join(lines)


def _worker(title: str, worker: WorkerView) -> str:
    if not worker.active:
        return f"  {title:<4}idle" + (f"  (session {worker.session_id})" if worker.session_id else "")
    session = worker.session_id or "no session yet"
    return f"  {title:<4}working on #{worker.issue_id} with {worker.model}  (session {session})"


def _items(items: list[QueueItem]) -> str:
    if not items:
        return "-"
    shown = ", ".join(f"#{item.id} {item.title}" for item in items[:_SHOWN])
    return shown + (f"  (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")
