"""queue_status: each project's workers and its queues, read from the tracker."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from pydantic import Field

from devclaw.errors import DevclawError, error_payload
from devclaw.state import Project
from devclaw.tools.base import Tool, ToolInput, ToolResult
from devclaw.tools.common import GroupId, WorkerView, slot_views
from devclaw.trackers.base import Issue, Tracker
from devclaw.workflow import Role, State
from devclaw.workspace import Workspace

# Projects are fetched concurrently (each tracker call is network-bound), but by a small pool: a heartbeat
# over many projects must not open dozens of connections to one GitLab at once.
MAX_PARALLEL_PROJECTS = 4


class QueueStatusInput(ToolInput):
    project_group_id: GroupId | None = None
    next: bool = Field(
        default=False,
        description="Only the next issue each idle worker would take (fewer requests, far less text) "
        "instead of every queued issue.",
    )


class QueueItem(ToolResult):
    id: int
    title: str
    label: State | None = None


class Queues(ToolResult):
    to_improve: list[QueueItem]
    to_test: list[QueueItem]
    to_do: list[QueueItem]
    #: The review queue, for a project with a review stage.
    to_review: list[QueueItem] | None = None


class ProjectError(ToolResult):
    type: str
    message: str


class ProjectQueue(ToolResult):
    name: str
    group_id: str
    dev: WorkerView
    qa: WorkerView
    queue: Queues | None
    error: ProjectError | None = None
    #: Every worker slot by role, for a project with more than one worker of some role.
    workers: dict[str, list[WorkerView]] | None = None


class NextUp(ToolResult):
    """The issue each idle worker would take next; null for a busy worker or an empty queue."""

    dev: QueueItem | None
    qa: QueueItem | None
    #: For a project with review policy "agent".
    reviewer: QueueItem | None = None


class ProjectNext(ToolResult):
    name: str
    group_id: str
    dev: WorkerView
    qa: WorkerView
    next: NextUp | None
    error: ProjectError | None = None


class QueueStatusResult(ToolResult):
    success: bool
    projects: list[ProjectQueue] | list[ProjectNext]


def queue_status(ws: Workspace, params: QueueStatusInput) -> QueueStatusResult:
    """Show every project's DEV and QA workers (active, sessionId, issueId, model) and its queues, oldest
    first: toImprove (QA failed, back to DEV first), toTest (waiting for QA) and toDo (waiting for DEV).
    Pass projectGroupId for one project. With next true, each project shows only "next": the issue its
    idle DEV and QA workers would take (toImprove before toDo), which is what a heartbeat needs. A
    project whose tracker fails carries an "error" and no queue: a failure is never shown as an empty
    queue."""
    if params.next:
        picks = collect_next(ws, params.project_group_id)
        _audit_next(ws, picks)
        return QueueStatusResult(success=True, projects=picks)
    rows = collect_queues(ws, params.project_group_id)
    _audit(ws, rows)
    return QueueStatusResult(success=True, projects=rows)


def collect_queues(ws: Workspace, group_id: str | None = None) -> list[ProjectQueue]:
    """Workers and queues of one project (its tracker failure raised) or of all (failures per project)."""
    state = ws.store.read()
    chosen = {group_id: state.project(group_id)} if group_id is not None else state.projects
    with ThreadPoolExecutor(max_workers=MAX_PARALLEL_PROJECTS) as pool:
        futures = [pool.submit(_project_queue, ws, gid, project) for gid, project in chosen.items()]
        outcomes = [future.result() for future in futures]
    failure = outcomes[0][1] if outcomes else None
    if group_id is not None and failure is not None:
        raise failure  # asked about one project: its failure is the answer
    return [row for row, _ in outcomes]


def _project_queue(ws: Workspace, group_id: str, project: Project) -> tuple[ProjectQueue, DevclawError | None]:
    row = ProjectQueue(
        name=project.name,
        group_id=group_id,
        dev=WorkerView.of(project.worker("dev")),
        qa=WorkerView.of(project.worker("qa")),
        workers=slot_views(project),
        queue=None,
    )
    try:
        tracker = ws.tracker(project)
        found = {
            key: [QueueItem(id=i.id, title=i.title) for i in tracker.list_issues(label)]
            for key, label in project.effective_workflow().queues
        }
    except DevclawError as exc:
        row.error = ProjectError(**error_payload(exc))
        return row, exc
    row.queue = Queues.model_validate(found)
    return row, None


def candidates(tracker: Tracker, role: Role) -> Iterator[Issue]:
    """The issues ``role`` could start, best first; each state is listed only when the one before is used up."""
    for state in tracker.workflow.priority(role):
        yield from tracker.list_issues(state)


def collect_next(ws: Workspace, group_id: str | None = None) -> list[ProjectNext]:
    """Per project, the next issue of each idle worker (one project's tracker failure raised)."""
    state = ws.store.read()
    chosen = {group_id: state.project(group_id)} if group_id is not None else state.projects
    with ThreadPoolExecutor(max_workers=MAX_PARALLEL_PROJECTS) as pool:
        outcomes = list(pool.map(lambda item: _project_next(ws, *item), chosen.items()))
    if group_id is not None and outcomes and outcomes[0][1] is not None:
        raise outcomes[0][1]
    return [row for row, _ in outcomes]


def _project_next(ws: Workspace, group_id: str, project: Project) -> tuple[ProjectNext, DevclawError | None]:
    row = ProjectNext(name=project.name, group_id=group_id, dev=WorkerView.of(project.worker("dev")),
                      qa=WorkerView.of(project.worker("qa")), next=None)  # fmt: skip
    try:
        tracker = ws.tracker(project)
        picks = {role: None if _busy(project, role) else _first(tracker, role) for role in project.roles}
    except DevclawError as exc:
        row.error = ProjectError(**error_payload(exc))
        return row, exc
    row.next = NextUp(**picks)
    return row, None


def _busy(project: Project, role: Role) -> bool:
    return len(project.active_slots(role)) >= project.max_slots(role)


def _first(tracker: Tracker, role: Role) -> QueueItem | None:
    issue = next(candidates(tracker, role), None)
    return None if issue is None else QueueItem(id=issue.id, title=issue.title, label=issue.label)


def _audit_next(ws: Workspace, rows: list[ProjectNext]) -> None:
    found = [row.next for row in rows if row.next is not None]
    ws.audit.append(
        "queue_status",
        projectCount=len(rows),
        next=True,
        nextDev=sum(1 for n in found if n.dev is not None),
        nextQa=sum(1 for n in found if n.qa is not None),
        projectErrors=len(rows) - len(found),
    )


def _audit(ws: Workspace, rows: list[ProjectQueue]) -> None:
    queues = [row.queue for row in rows if row.queue is not None]
    ws.audit.append(
        "queue_status",
        projectCount=len(rows),
        totalToImprove=sum(len(q.to_improve) for q in queues),
        totalToTest=sum(len(q.to_test) for q in queues),
        totalToDo=sum(len(q.to_do) for q in queues),
        projectErrors=len(rows) - len(queues),
    )


QUEUE_STATUS = Tool("queue_status", QueueStatusInput, queue_status, mutating=False)
