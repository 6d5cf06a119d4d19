"""The work loop's Python half: ``tick``, one deterministic pass over a workspace, and ``release``.

The plugin's loop service (index.js) calls ``tick`` every ``loop.tickSeconds`` and after every completion,
through ``devclaw serve``; ``devclaw tick`` runs the same pass from a shell. A tick:

1. reconciles: ``session_health`` with ``autoFix`` and the live session keys the gateway listed (not an
   LLM's guess), so dead workers are freed and their issues go back to their queues first;
2. fills every free worker slot (``free_slots``) of every project from its queues in priority order
   (To Improve, then To Test, then To Do; oldest first), each through ``task_pickup`` itself;
3. returns the dispatches (each exactly a ``task_pickup`` result, plus its slot) and what it skipped and
   why. A project whose tracker cannot be read is skipped for this tick and reported, never treated as
   an empty queue.

Every change goes through the tools (``call_tool``): the tick adds decisions about *what* to pick up,
never its own label moves. ``dry_run`` reads and decides without changing anything.

Request budget per tick (tracker requests): the reconcile's (2 listings per project with ``check_tracker``,
plus its fixes), then per project with a free slot one listing per queue label looked at (a label is
listed only when the ones before it are used up: at most 3), then per dispatch ``task_pickup``'s 2
(one read, one write).

``release`` is the loop's way back when a worker cannot finish: a spawn that failed returns the issue
to the queue it came from; a worker that gave no verdict goes to Refining with a comment saying why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, ValidationError

from devclaw.errors import DevclawError, InputError, WorkflowError, error_payload
from devclaw.state import Project
from devclaw.tools import TOOLS, call_tool
from devclaw.tools.base import ToolInput, ToolResult
from devclaw.tools.common import GroupId, RoleParam, commit_or_undo, role_name
from devclaw.tools.queue import MAX_PARALLEL_PROJECTS, candidates
from devclaw.trackers.base import Issue
from devclaw.workflow import ACTIVE_LABEL, RESULT_EVENT, ROLES, START_LABELS, Event, Label, Role, next_label
from devclaw.workspace import Workspace


@dataclass(frozen=True)
class Slot:
    role: Role
    index: int


def free_slots(project: Project) -> list[Slot]:
    """The worker slots of ``project`` that can take a task now, in role order.

    One worker per role today: its slot is free when the worker is inactive. With N workers per role
    this is the one function that changes (free = maxWorkers minus active, within the caps).
    """
    return [Slot(role, 0) for role in ROLES if not project.worker(role).active]


class TickInput(ToolInput):
    active_sessions: list[str] | None = Field(
        default=None, description="Keys of the live sessions. Without them no worker is judged dead."
    )
    dry_run: bool = Field(default=False, description="Decide and report, change nothing.")
    check_tracker: bool = Field(default=True, description="Let the reconcile compare labels with workers.")


class Skip(ToolResult):
    group_id: str
    project: str
    role: Role | None = None
    issue_id: int | None = None
    type: str
    reason: str


class TickResult(ToolResult):
    success: bool
    dry_run: bool
    projects_scanned: int
    free_slots: int
    health: dict[str, Any] | None
    dispatches: list[dict[str, Any]]
    skipped: list[Skip]


@dataclass
class _Plan:
    """One project's part of a tick: its free slots and the issues its queues offer them."""

    group_id: str
    project: Project
    slots: list[Slot]
    offers: dict[Role, list[Issue]] = field(default_factory=dict)
    error: DevclawError | None = None


def tick(ws: Workspace, params: TickInput) -> TickResult:
    """One pass: reconcile with the live sessions, then fill free worker slots from the queues."""
    health, skipped = _reconcile(ws, params)
    plans = [_Plan(gid, project, free_slots(project)) for gid, project in ws.store.read().projects.items()]
    with ThreadPoolExecutor(max_workers=MAX_PARALLEL_PROJECTS) as pool:
        list(pool.map(_read_offers, [(ws, plan) for plan in plans if plan.slots]))
    dispatches: list[dict[str, Any]] = []
    for plan in plans:
        if plan.error is not None:
            message = error_payload(plan.error)["message"]
            skipped.append(_skip(plan, "tracker_unreadable", f"its tracker could not be read ({message}); "
                                 "skipped this tick, its queues were not judged empty"))  # fmt: skip
            continue
        for slot in plan.slots:
            dispatch = _fill(ws, plan, slot, params.dry_run, skipped)
            if dispatch is not None:
                dispatches.append(dispatch)
    return TickResult(
        success=True,
        dry_run=params.dry_run,
        projects_scanned=len(plans),
        free_slots=sum(len(plan.slots) for plan in plans),
        health=health,
        dispatches=dispatches,
        skipped=skipped,
    )


def _reconcile(ws: Workspace, params: TickInput) -> tuple[dict[str, Any] | None, list[Skip]]:
    health_params: dict[str, Any] = {"autoFix": not params.dry_run, "checkTracker": params.check_tracker}
    if params.active_sessions is not None:
        health_params["activeSessions"] = params.active_sessions
    try:
        return call_tool(ws, "session_health", health_params), []
    except DevclawError as exc:
        # Filling slots stays safe without it (task_pickup checks each worker), so the tick goes on.
        return None, [Skip(group_id="*", project="*", type="reconcile_failed", reason=error_payload(exc)["message"])]


def _read_offers(job: tuple[Workspace, _Plan]) -> None:
    ws, plan = job
    try:
        tracker = ws.tracker(plan.project)
        for role in {slot.role for slot in plan.slots}:
            wanted = sum(1 for slot in plan.slots if slot.role == role)
            plan.offers[role] = _take(candidates(tracker, role), wanted)
    except DevclawError as exc:
        plan.error = exc


def _take(issues: Iterator[Issue], count: int) -> list[Issue]:
    taken: list[Issue] = []
    for issue in issues:
        taken.append(issue)
        if len(taken) >= count:
            break
    return taken


def _fill(ws: Workspace, plan: _Plan, slot: Slot, dry_run: bool, skipped: list[Skip]) -> dict[str, Any] | None:
    offers = plan.offers.get(slot.role, [])
    while offers:
        issue = offers.pop(0)
        try:
            return {**_pickup(ws, plan, issue, slot, dry_run), "slot": slot.index}
        except WorkflowError as exc:  # moved or taken since it was listed: try the next one
            skipped.append(_skip(plan, "pickup_refused", error_payload(exc)["message"], slot.role, issue.id))
        except DevclawError as exc:
            payload = error_payload(exc)
            skipped.append(_skip(plan, payload["type"], payload["message"], slot.role, issue.id))
            return None
    return None


def _pickup(ws: Workspace, plan: _Plan, issue: Issue, slot: Slot, dry_run: bool) -> dict[str, Any]:
    params: dict[str, Any] = {"issueId": issue.id, "role": slot.role, "projectGroupId": plan.group_id}
    if not dry_run:
        return call_tool(ws, "task_pickup", params)
    if "dry_run" in TOOLS["task_pickup"].input_model.model_fields:
        return call_tool(ws, "task_pickup", {**params, "dryRun": True})
    # Until task_pickup takes dryRun: what the reads say it would do.
    return {"dryRun": True, "project": plan.project.name, "groupId": plan.group_id, "issueId": issue.id,
            "issueTitle": issue.title, "role": slot.role, "from": issue.label}  # fmt: skip


def _skip(plan: _Plan, type_: str, reason: str, role: Role | None = None, issue_id: int | None = None) -> Skip:
    return Skip(group_id=plan.group_id, project=plan.project.name, role=role, issue_id=issue_id, type=type_,
                reason=reason)  # fmt: skip


# ----------------------------------------------------------------------------------------------- release


class ReleaseInput(ToolInput):
    project_group_id: GroupId
    role: RoleParam
    issue_id: int = Field(ge=1, le=2**31 - 1)
    to: Literal["queue", "refining"]
    reason: str = Field(min_length=1, description="Why: said in the comment on the issue and on the audit line.")
    from_label: str | None = Field(default=None, description="The label the issue was picked up from.")


class ReleaseResult(ToolResult):
    success: bool
    project: str
    group_id: str
    role: Role
    issue_id: int
    label_transition: str
    comment: str | None = None
    announcement: str


def release(ws: Workspace, params: ReleaseInput) -> ReleaseResult:
    """Free the worker on ``issueId``: back to its queue (``to: queue``), or to Refining with a comment."""
    if params.to == "refining" and "refine" in RESULT_EVENT[params.role]:
        result = _refine_by_tool(ws, params)
    else:
        result = _move_active(ws, params)
    if params.to == "refining":
        result.comment = _comment(ws, params)
    return result


def _refine_by_tool(ws: Workspace, params: ReleaseInput) -> ReleaseResult:
    done = call_tool(ws, "task_complete", _with_issue("task_complete", params.issue_id, {
        "role": params.role, "result": "refine", "projectGroupId": params.project_group_id, "summary": params.reason,
    }))  # fmt: skip
    return ReleaseResult(success=True, project=done["project"], group_id=params.project_group_id, role=params.role,
                         issue_id=params.issue_id, label_transition=done["labelTransition"],
                         announcement=done["announcement"])  # fmt: skip


def _move_active(ws: Workspace, params: ReleaseInput) -> ReleaseResult:
    # Interim: until the engine offers a release decision (and a Doing -> Refining move for a worker that
    # cannot finish), this is the one place the loop moves a label itself. Same order as the tools:
    # validate, tracker write, state commit (undone on failure), audit line.
    role = params.role
    with ws.store.locked() as state:
        project = state.project(params.project_group_id)
        worker = project.worker(role)
        if not worker.active or worker.issue_id != str(params.issue_id):
            raise WorkflowError(f"{role_name(role)} worker on {project.name} is not active on #{params.issue_id}")
        tracker = ws.tracker(project)
        issue = tracker.get_issue(params.issue_id)
        # Someone already moved it: free the worker and leave their decision alone.
        on_active = issue.label == ACTIVE_LABEL[role]
        moved = tracker.move_issue(issue, _release_target(role, params)) if on_active else issue
        worker.deactivate()
        commit_or_undo(ws, state, tracker, moved, issue.label or ACTIVE_LABEL[role], issue.state)
        transition = f"{issue.label} → {moved.label}"
        ws.audit.append("task_release", project=project.name, groupId=params.project_group_id, issue=issue.id,
                        role=role, to=params.to, reason=params.reason, labelTransition=transition)  # fmt: skip
    where = "back in its queue" if params.to == "queue" else "sent to Refining for a human decision"
    return ReleaseResult(success=True, project=project.name, group_id=params.project_group_id, role=role,
                         issue_id=issue.id, label_transition=transition,
                         announcement=f"⚠️ {role_name(role)} #{issue.id} {where}: {params.reason}")  # fmt: skip


def _release_target(role: Role, params: ReleaseInput) -> Label:
    if params.to == "refining":
        return Label.REFINING
    if params.from_label in {label.value for label in START_LABELS[role]}:
        return Label(params.from_label)
    return next_label(ACTIVE_LABEL[role], Event.REVERT)


def _comment(ws: Workspace, params: ReleaseInput) -> str:
    project = ws.store.read().project(params.project_group_id)
    body = (f"devclaw work loop: the {role_name(params.role)} worker could not finish this issue, so it was "
            f"moved to Refining for a person to decide.\n\nWhy: {params.reason}")  # fmt: skip
    try:
        ws.tracker(project).add_comment(params.issue_id, body)  # one request, never retried
    except DevclawError as exc:
        return f"warning: the comment could not be added: {exc.message}"
    return "added"


def _with_issue(tool: str, issue_id: int, params: dict[str, Any]) -> dict[str, Any]:
    """Name the issue when the tool takes it (required once a role has several workers)."""
    return {**params, "issueId": issue_id} if "issue_id" in TOOLS[tool].input_model.model_fields else params


# ----------------------------------------------------------------------------------------------- requests

#: What ``devclaw serve`` accepts besides the tools: mutating requests of the loop service.
LOOP_REQUESTS: dict[str, tuple[type[ToolInput], Callable[[Workspace, Any], ToolResult]]] = {
    "tick": (TickInput, tick),
    "loop_release": (ReleaseInput, release),
}


def call_loop(ws: Workspace, name: str, params: object) -> dict[str, Any]:
    """Validate and run one loop request; the result as JSON-able data (errors raised as DevclawError)."""
    model, function = LOOP_REQUESTS[name]
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InputError(f"{name}: parameters must be a JSON object")
    try:
        parsed = model.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'parameters'}: {e['msg']}" for e in exc.errors())
        raise InputError(f"{name}: invalid parameters: {problems}") from None
    data: dict[str, Any] = function(ws, parsed).model_dump(mode="json", by_alias=True)
    return data


__all__ = [
    "LOOP_REQUESTS",
    "ReleaseInput",
    "Slot",
    "TickInput",
    "TickResult",
    "call_loop",
    "free_slots",
    "release",
    "tick",
]
