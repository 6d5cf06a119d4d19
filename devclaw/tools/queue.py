"""queue_status: each project's workers and its queues, read from the tracker."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from devclaw.errors import DevclawError, error_payload
from devclaw.state import Project
from devclaw.tools.base import Tool, ToolInput, ToolResult
from devclaw.tools.common import GroupId, WorkerView, slot_views
from devclaw.workflow import QUEUES
from devclaw.workspace import Workspace

# Projects are fetched concurrently (each tracker call is network-bound), but by a small pool: a heartbeat
# over many projects must not open dozens of connections to one GitLab at once.
MAX_PARALLEL_PROJECTS = 4


class QueueStatusInput(ToolInput):
    project_group_id: GroupId | None = None


class QueueItem(ToolResult):
    id: int
    title: str


class Queues(ToolResult):
    to_improve: list[QueueItem]
    to_test: list[QueueItem]
    to_do: list[QueueItem]


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


class QueueStatusResult(ToolResult):
    success: bool
    projects: list[ProjectQueue]


def queue_status(ws: Workspace, params: QueueStatusInput) -> QueueStatusResult:
    """Show every project's DEV and QA workers (active, sessionId, issueId, model) and its queues, oldest
    first: toImprove (QA failed, back to DEV first), toTest (waiting for QA) and toDo (waiting for DEV).
    Pass projectGroupId for one project. A project whose tracker fails carries an "error" and no queue:
    a failure is never shown as an empty queue."""
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
        found = {key: [QueueItem(id=i.id, title=i.title) for i in tracker.list_issues(label)] for key, label in QUEUES}
    except DevclawError as exc:
        row.error = ProjectError(**error_payload(exc))
        return row, exc
    row.queue = Queues(to_improve=found["toImprove"], to_test=found["toTest"], to_do=found["toDo"])
    return row, None


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
