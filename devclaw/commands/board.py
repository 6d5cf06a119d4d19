"""``devclaw status``: the board, per project its two workers (with how long they have been at it),
the queues the tools work from, and the issues waiting for a person (Refining, Planning)."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from devclaw.commands.table import paint
from devclaw.errors import DevclawError
from devclaw.inputs import normalize_group_id
from devclaw.state import Project, Worker
from devclaw.tools.common import WorkerView, duration_text
from devclaw.tools.queue import ProjectQueue, QueueItem, collect_queues
from devclaw.workflow import DEFAULT, Event, Workflow
from devclaw.workspace import Workspace

_SHOWN = 5


def register(sub: Any) -> None:
    status = sub.add_parser("status", help="a readable board: workers and queues of every project")
    status.add_argument("group_id", nargs="?", metavar="GROUP_ID", help="only this project")
    status.set_defaults(handler=run_status)


def run_status(ws: Workspace, args: argparse.Namespace) -> int:
    ws.require_existing()
    group_id = normalize_group_id(args.group_id) if args.group_id is not None else None
    rows = collect_queues(ws, group_id)
    if not rows:
        print(f"No projects yet in {ws.store.path}. Register one with: devclaw project add GROUP_ID --name NAME")
        return 0
    projects = ws.store.read().projects
    print("\n\n".join(render(row, ws, projects.get(row.group_id)) for row in rows))
    return 1 if any(row.error for row in rows) else 0


def render(row: ProjectQueue, ws: Workspace, project: Project | None = None) -> str:
    lines = [f"{paint(row.name, 'bold')}  ({row.group_id})"]
    workers: list[tuple[str, WorkerView, Worker | None]] = [("DEV", row.dev, None), ("QA", row.qa, None)]
    if project is not None:
        workers = [
            (role.upper() + (f" {slot + 1}" if project.max_slots(role) > 1 else ""), WorkerView.of(worker), worker)
            for role, slot, worker in project.every_worker()
        ]
    for title, view, found in workers:
        lines.append(_worker(title, view, found, ws.clock()))
    if row.queue is None:
        assert row.error is not None
        lines.append("  " + paint(f"queues unavailable: {row.error.message}", "red"))
        return "\n".join(lines)
    workflow = project.effective_workflow() if project is not None else DEFAULT
    queues = row.queue.model_dump(by_alias=True)
    for key, state in workflow.queues:
        title = workflow.label(state)
        items = [QueueItem.model_validate(item) for item in queues.get(key) or []]
        lines.append(f"  {title + ':':<12}{_items(items)}")
    if project is not None:
        lines += _human_queues(ws, project)
    return "\n".join(lines)


def _human_queues(ws: Workspace, project: Project) -> list[str]:
    """Issues no tool picks up: a person moves them on (`devclaw issue label`)."""
    workflow = project.effective_workflow()
    states = workflow.waiting_for_a_person()
    try:
        tracker = ws.tracker(project)
        held = {state: tracker.list_issues(state) for state in states}
    except DevclawError as exc:
        names = "/".join(workflow.label(state) for state in states)
        return ["  " + paint(f"{names} unavailable: {exc.message}", "red")]
    lines = []
    for state, issues in held.items():
        items = [QueueItem(id=issue.id, title=issue.title) for issue in issues]
        waiting = paint(f"  (waiting for a person: {_human_hint(workflow, state)})", "dim") if items else ""
        lines.append(f"  {workflow.label(state) + ':':<12}{_items(items)}{waiting}")
    return lines


def _human_hint(workflow: Workflow, state: str) -> str:
    target = workflow.label(workflow.next(state, Event.HUMAN))
    return f"devclaw issue label ... '{target}'"


def _worker(title: str, view: WorkerView, worker: Worker | None, now: datetime) -> str:
    if not view.active:
        idle = f"  {_column(title)}" + paint("idle", "green")
        return idle + (f"  (session {view.session_id})" if view.session_id else "")
    since = _elapsed(worker.start_time if worker else None, now)
    session = f"session {view.session_id}" if view.session_id else "no session confirmed yet"
    busy = paint(f"working on #{view.issue_id}", "yellow")
    return f"  {_column(title)}{busy} with {view.model}{since}  ({session})"


def _column(title: str) -> str:
    return f"{title:<4}" if len(title) < 4 else f"{title} "


def _elapsed(start: str | None, now: datetime) -> str:
    if not start:
        return ""
    try:
        started = datetime.fromisoformat(start.replace("Z", "+00:00"))
        seconds = max(0, int((now - started).total_seconds()))
    except (ValueError, TypeError):
        return ""
    return f" for {duration_text(seconds)}"


def _items(items: list[QueueItem]) -> str:
    if not items:
        return "-"
    shown = ", ".join(f"#{item.id} {' '.join(item.title.split())}" for item in items[:_SHOWN])
    return shown + (f"  (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")
