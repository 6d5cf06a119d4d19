"""The work loop's Python half: ``tick``, one deterministic pass over a workspace, and ``release``.

The plugin's loop service (index.js) calls ``tick`` every ``loop.tickSeconds`` and after every completion,
through ``devclaw serve``; ``devclaw tick`` runs the same pass from a shell. A tick:

1. reconciles: ``session_health`` with ``autoFix`` and the live session keys the gateway listed (not an
   LLM's guess), so dead workers are freed and their issues go back to their queues first;
2. looks at the change of every issue in To Review of each project whose review policy is "human", and
   moves it on or back as devclaw/review.py says (merging an approved one when the project asks);
3. fills the idle worker slots (``idle_slots``) of every project from its queues in priority order
   (To Improve, then To Test, then To Do; oldest first), each through ``task_pickup`` itself, within the
   workspace's caps: a slot counts against them only when a dispatch fills it (``Caps``);
4. returns the dispatches (each exactly a ``task_pickup`` result, plus its slot), the review checks, and what it skipped and
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

from pydantic import Field

from devclaw.engine import Move, Plan, Record, mutate
from devclaw.errors import DevclawError, WorkflowError, error_payload
from devclaw.review import ReviewCheck, watch_reviews
from devclaw.state import Project, ProjectsFile, SlotChange
from devclaw.tools import call_tool, parse_params
from devclaw.tools.base import ToolInput, ToolResult, WorkerRef
from devclaw.tools.common import GroupId, RoleParam, fit_message, one_line
from devclaw.tools.pickup import active_worker
from devclaw.tools.queue import MAX_PARALLEL_PROJECTS, candidates
from devclaw.trackers.base import Issue
from devclaw.workflow import Event, Label, Role, RoleSpec
from devclaw.workspace import Workspace


@dataclass(frozen=True)
class Slot:
    role: Role
    index: int


def idle_slots(state: ProjectsFile) -> dict[str, list[Slot]]:
    """Per project, its idle worker slots below each role's ``maxWorkers``. The workspace's caps are not
    applied here: a slot counts against them only when a dispatch fills it (``Caps``), so an idle slot
    with an empty queue never takes the room another project's work could use."""
    idle: dict[str, list[Slot]] = {}
    for group_id, project in state.projects.items():
        idle[group_id] = [
            Slot(role, index)
            for role in project.roles
            for index in range(project.max_slots(role))
            if not project.worker(role, index).active
        ]
    return idle


@dataclass
class Caps:
    """What ``maxActiveWorkers`` and ``maxActiveWorkersPerRole`` still allow during one tick."""

    total: int | None
    per_role: dict[Role, int]

    @classmethod
    def left(cls, state: ProjectsFile) -> Caps:
        total = None if state.max_active_workers is None else state.max_active_workers - state.active_count()
        per_role = {role: cap - state.active_count(role) for role, cap in state.max_active_workers_per_role.items()}
        return cls(total, per_role)

    def room(self, role: Role) -> int | None:
        """How many more workers of ``role`` may start; None: no cap."""
        limits = [left for left in (self.total, self.per_role.get(role)) if left is not None]
        return max(0, min(limits)) if limits else None

    def allows(self, role: Role) -> bool:
        room = self.room(role)
        return room is None or room > 0

    def take(self, role: Role) -> None:
        if self.total is not None:
            self.total -= 1
        if role in self.per_role:
            self.per_role[role] -= 1


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
    #: Review policy "human": each issue in To Review, as this tick saw it (devclaw/review.py).
    reviews: list[ReviewCheck]
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
    reviews = watch_reviews(ws, ws.store.read(), dry_run=params.dry_run)
    state = ws.store.read()
    caps = Caps.left(state)
    idle = idle_slots(state)
    # A role whose cap is already reached is not looked at: its queues cannot be served this tick.
    plans = [_Plan(gid, p, [s for s in idle[gid] if caps.allows(s.role)]) for gid, p in state.projects.items()]
    with ThreadPoolExecutor(max_workers=MAX_PARALLEL_PROJECTS) as pool:
        list(pool.map(_read_offers, [(ws, plan, caps) for plan in plans if plan.slots]))
    dispatches: list[dict[str, Any]] = []
    for plan in plans:
        if plan.error is not None:
            message = error_payload(plan.error)["message"]
            skipped.append(
                _skip(
                    plan,
                    "tracker_unreadable",
                    f"its tracker could not be read ({message}); skipped this tick, its queues were not judged empty",
                )
            )
            continue
        for slot in plan.slots:
            if not caps.allows(slot.role):
                continue
            dispatch = _fill(ws, plan, slot, params.dry_run, skipped)
            if dispatch is not None:
                caps.take(slot.role)
                dispatches.append(dispatch)
    return TickResult(
        success=True,
        dry_run=params.dry_run,
        projects_scanned=len(plans),
        free_slots=sum(len(plan.slots) for plan in plans),
        health=health,
        dispatches=dispatches,
        reviews=reviews,
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


def _read_offers(job: tuple[Workspace, _Plan, Caps]) -> None:
    ws, plan, caps = job
    try:
        tracker = ws.tracker(plan.project)
        for role in {slot.role for slot in plan.slots}:
            wanted = sum(1 for slot in plan.slots if slot.role == role)
            room = caps.room(role)
            plan.offers[role] = _take(candidates(tracker, role), wanted if room is None else min(wanted, room))
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
    return call_tool(ws, "task_pickup", {**params, "dryRun": True} if dry_run else params)


def _skip(plan: _Plan, type_: str, reason: str, role: Role | None = None, issue_id: int | None = None) -> Skip:
    return Skip(
        group_id=plan.group_id, project=plan.project.name, role=role, issue_id=issue_id, type=type_, reason=reason
    )


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
    decide = lambda state: decide_release(ws, state, params)  # noqa: E731
    return mutate(ws, params.project_group_id, decide).result


def decide_release(ws: Workspace, state: ProjectsFile, params: ReleaseInput) -> Plan[ReleaseResult]:
    project = state.project(params.project_group_id)
    workflow = project.effective_workflow()
    spec = workflow.role(params.role)
    slot, worker = active_worker(project, spec, params.issue_id, "Nothing to release.")
    issue = ws.tracker(project).get_issue(params.issue_id)
    # Someone already moved it: free the worker and leave their decision alone.
    move = (
        Move(issue, workflow.next(issue.label, _release_event(spec, project, params)))
        if (issue.label == spec.active_label)
        else None
    )
    transition = move.transition if move else f"{issue.label or 'none'} (left as it was)"
    where = "back in its queue" if params.to == "queue" else "sent to Refining for a human decision"
    result = ReleaseResult(
        success=True,
        project=project.name,
        group_id=params.project_group_id,
        role=spec.name,
        issue_id=issue.id,
        label_transition=transition,
        announcement=fit_message(f"⚠️ {spec.title} #{issue.id} {where}: {one_line(params.reason)}"),
    )
    record = Record(
        "task_release",
        {
            "project": project.name,
            "groupId": params.project_group_id,
            "issue": issue.id,
            "role": spec.name,
            "slot": slot,
            "to": params.to,
            "reason": params.reason,
            "labelTransition": transition,
            "announcement": result.announcement,
        },
    )
    comment = None
    if params.to == "refining" and move is not None:
        comment = (
            f"devclaw work loop: the {spec.title} worker could not finish this issue, so it was moved to "
            f"Refining for a person to decide.\n\nWhy: {params.reason}"
        )
    freed = worker.model_copy(update={"active": False, "issue_id": None, "picked_from": None})
    return Plan(
        tool="loop_release",
        group_id=params.project_group_id,
        result=result,
        move=move,
        slots=[SlotChange(role=spec.name, slot=slot, worker=freed)],
        records=[record],
        comment=comment,
        comment_field="comment",
    )


def _release_event(spec: RoleSpec, project: Project, params: ReleaseInput) -> Event:
    if params.to == "refining":
        return Event.STUCK
    failed_before = params.from_label == Label.TO_IMPROVE or project.qa_fail_count(params.issue_id) > 0
    if failed_before and spec.revert_after_fail is not None:
        return spec.revert_after_fail
    return spec.revert_event


# ----------------------------------------------------------------------------------------------- session


class TaskSessionInput(ToolInput):
    project_group_id: GroupId
    role: RoleParam
    issue_id: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="Needed only when several workers of the role are active."
    )


class TaskSessionResult(WorkerRef):
    start_time: str | None


def task_session(ws: Workspace, params: TaskSessionInput) -> TaskSessionResult:
    """Read-only: the worker a ``task_complete`` with these parameters would complete, with its session
    and the time of its pickup. The bridge reads that session's messages since the pickup to count the
    tokens of a run the orchestrator started by hand."""
    project = ws.store.read().project(params.project_group_id)
    spec = project.effective_workflow().role(params.role)
    slot, worker = active_worker(project, spec, params.issue_id, "Nothing to complete.")
    return TaskSessionResult(
        project=project.name,
        group_id=params.project_group_id,
        role=spec.name,
        slot=slot,
        issue_id=worker.issue_id,
        session_id=worker.session_id,
        start_time=worker.start_time,
    )


# ----------------------------------------------------------------------------------------------- requests

#: What ``devclaw serve`` accepts besides the tools: the plugin's own requests (``task_session`` only reads).
LOOP_REQUESTS: dict[str, tuple[type[ToolInput], Callable[[Workspace, Any], ToolResult]]] = {
    "tick": (TickInput, tick),
    "loop_release": (ReleaseInput, release),
    "task_session": (TaskSessionInput, task_session),
}


def call_loop(ws: Workspace, name: str, params: object) -> dict[str, Any]:
    """Validate and run one loop request; the result as JSON-able data (errors raised as DevclawError)."""
    model, function = LOOP_REQUESTS[name]
    parsed = parse_params(name, model, params)
    data: dict[str, Any] = function(ws, parsed).model_dump(mode="json", by_alias=True)
    return data


__all__ = [
    "LOOP_REQUESTS",
    "Caps",
    "ReleaseInput",
    "Slot",
    "TaskSessionInput",
    "TaskSessionResult",
    "TickInput",
    "TickResult",
    "call_loop",
    "idle_slots",
    "release",
    "task_session",
    "tick",
]
