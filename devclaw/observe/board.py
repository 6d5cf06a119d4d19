"""The board: each project's workers (from projects.json) and queues (from its tracker, read in the
background), and the one adapter that knows how projects.json stores workers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from devclaw.errors import DevclawError, error_payload
from devclaw.redact import redact
from devclaw.state import Project, Worker
from devclaw.trackers.base import Issue
from devclaw.workflow import Role, State, Workflow
from devclaw.workspace import Workspace


def shown_queues(workflow: Workflow) -> tuple[State, ...]:
    """The queues the Live page shows, in this order: the work first, then what waits for a person."""
    return (*(state for _, state in workflow.queues), *workflow.waiting_for_a_person())


@dataclass(frozen=True)
class WorkerRow:
    role: Role
    slot: int
    worker: Worker


def worker_rows(project: Project) -> list[WorkerRow]:
    """Every worker slot of ``project``: the one function that reads workers out of projects.json."""
    return [WorkerRow(role, slot, worker) for role, slot, worker in project.every_worker()]


@dataclass(frozen=True)
class IssueItem:
    id: int
    title: str
    url: str
    description: str


@dataclass
class QueueSnapshot:
    """What the tracker said at ``fetched_at``: every open issue by workflow label. A failed read keeps
    the last good lists (with their age) and carries ``error``; a project never read has none."""

    issues: dict[str, list[IssueItem]] | None = None
    fetched_at: float | None = None  # when the last good read started
    error: str | None = None
    error_at: float | None = None
    reads: int = 0  # tracker reads made for this project since the server started
    started_at: float | None = None  # the read in flight, or the last one

    def find(self, issue_id: int) -> IssueItem | None:
        for items in (self.issues or {}).values():
            for item in items:
                if item.id == issue_id:
                    return item
        return None

    def move(self, issue_id: int, target: State, workflow: Workflow) -> bool:
        """Apply a move the audit log reported since the last read; whether the lists changed. An issue
        moved to a final state (Done, Rejected) leaves the lists."""
        if self.issues is None:
            return False
        item = self.find(issue_id)
        if item is None:
            return False
        for label, items in self.issues.items():
            if label != target and item in items:
                items.remove(item)
        if workflow.transitions.get(target) and item not in self.issues.setdefault(target, []):
            self.issues[target].append(item)
            self.issues[target].sort(key=lambda i: i.id)
        return True


def read_queues(ws: Workspace, project: Project) -> dict[str, list[IssueItem]]:
    """One listing of the open issues (the provider pages it), grouped by workflow state."""
    grouped: dict[str, list[IssueItem]] = {}
    for issue in ws.tracker(project).list_issues(None):
        if issue.label is not None:
            grouped.setdefault(issue.label, []).append(_item(issue))
    return grouped


def _item(issue: Issue) -> IssueItem:
    return IssueItem(issue.id, issue.title, issue.url, issue.description[:500])


def refresh_snapshot(ws: Workspace, project: Project, snapshot: QueueSnapshot) -> QueueSnapshot:
    """A new snapshot after one read of the tracker (made by the caller's background thread)."""
    started = time.time()
    new = QueueSnapshot(snapshot.issues, snapshot.fetched_at, reads=snapshot.reads + 1, started_at=started)
    try:
        new.issues = read_queues(ws, project)
        new.fetched_at = started
    except DevclawError as exc:
        new.error = redact(error_payload(exc)["message"])
        new.error_at = time.time()
    except Exception as exc:  # noqa: BLE001 (a bug in one tracker must not stop the others' refresh)
        new.error = error_payload(exc)["message"]
        new.error_at = time.time()
    return new


@dataclass
class Board:
    snapshots: dict[str, QueueSnapshot] = field(default_factory=dict)

    def snapshot(self, group_id: str) -> QueueSnapshot:
        return self.snapshots.setdefault(group_id, QueueSnapshot())
