"""task_pickup and task_pickup_confirm: give an issue to a worker slot, then record its session.

Both are decisions (``decide_pickup``, ``decide_confirm``) that return a plan for ``engine.apply``;
the tool functions only run them through ``engine.mutate``.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field

from devclaw.engine import Move, Plan, Record, check_caps, mutate
from devclaw.errors import InputError, WorkflowError
from devclaw.model_selection import ModelChoice, select_model
from devclaw.state import Project, ProjectsFile, SlotChange, Worker
from devclaw.tools.base import MutationInput, MutationResult, Tool
from devclaw.tools.changes import chosen_change
from devclaw.tools.common import (
    MAX_NAME,
    GroupId,
    IssueIdParam,
    RoleParam,
    fit_message,
    frame,
    one_line,
)
from devclaw.trackers.base import ChangeRequest, Issue, Tracker
from devclaw.workflow import Role, RoleSpec
from devclaw.workspace import Workspace


class TaskPickupInput(MutationInput):
    issue_id: IssueIdParam
    role: RoleParam
    project_group_id: GroupId
    model_override: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_NAME,
        description="A model alias (haiku, sonnet, opus, grok) or a full model id.",
    )


class TaskPickupResult(MutationResult):
    success: bool
    project: str
    group_id: str
    issue_id: int
    issue_title: str
    issue_url: str
    role: Role
    model: str
    full_model: str
    model_reason: str
    session_action: Literal["spawn", "send"]
    session_id: str | None = None
    announcement: str
    label_transition: str
    task_message: str
    instructions: str
    #: The worker slot (0 unless the role has more than one worker).
    slot: int | None = None


def task_pickup(ws: Workspace, params: TaskPickupInput) -> TaskPickupResult:
    """Pick up an issue for the project's DEV or QA worker: checks the worker is idle and the issue is on
    the role's start label (dev: To Do or To Improve; qa: To Test), picks a model, moves the label
    (To Do/To Improve -> Doing, To Test -> Testing; reviewer, in a project whose review policy is
    "agent": To Review -> Reviewing), marks the worker active and logs it. Returns the
    announcement to post to the group and exact instructions to spawn a new worker session or send the
    task to the worker's existing one. After a spawn, call task_pickup_confirm with the new session key.
    Picking up the issue the worker already has answers the same instructions again (repeated: true)."""
    decide = lambda state: decide_pickup(ws, state, params)  # noqa: E731
    return mutate(ws, params.project_group_id, decide, dry_run=params.dry_run).result


def decide_pickup(ws: Workspace, state: ProjectsFile, params: TaskPickupInput) -> Plan[TaskPickupResult]:
    project = state.project(params.project_group_id)
    workflow = project.effective_workflow()
    spec = workflow.role(params.role)
    tracker = ws.tracker(project)
    holding = next((s for s, w in project.active_slots(spec.name) if w.issue_id == params.issue_id), None)
    if holding is not None:
        return _repeat(ws, state, params, project, holding, tracker)
    slot = _free_slot(project, spec)
    issue = tracker.get_issue(params.issue_id)
    _check_startable(issue, spec)
    change_text = _change_line(tracker, project, spec, issue)
    assert issue.label is not None  # _check_startable guarantees a start label
    target = workflow.next(issue.label, spec.pickup_event)
    choice = select_model(
        issue.title, issue.description, spec.name, override=params.model_override, models=state.models
    )
    before = project.worker(spec.name, slot)
    # sessions_send cannot change a session's model: a task for another model gets a new session.
    reuse = before.session_id is not None and before.model in (None, choice.alias)
    worker = before.model_copy(
        update={
            "active": True,
            "issue_id": issue.id,
            "model": choice.alias,
            "start_time": ws.now_iso(),
            "picked_from": issue.label,
            "usage": None,
            "session_id": before.session_id if reuse else None,
        }
    )
    change = SlotChange(role=spec.name, slot=slot, worker=worker)
    check_caps(_with_slot(state, params.project_group_id, change), [change])
    move = Move(issue, target)
    result = _result(project, params.project_group_id, issue, spec, choice, worker, slot, change_text)
    result.label_transition = move.transition
    if not reuse and before.session_id is not None:
        result.announcement = fit_message(
            f"{result.announcement} (new session: the last one ran {before.model}, this task needs {choice.alias})"
        )
    return Plan(
        tool="task_pickup",
        group_id=params.project_group_id,
        result=result,
        move=move,
        slots=[change],
        records=_records(result, choice, slot),
    )


def _free_slot(project: Project, spec: RoleSpec) -> int:
    slots = project.slots(spec.name)
    limit = project.max_slots(spec.name)
    free = next((index for index in range(limit) if index >= len(slots) or not slots[index].active), None)
    if free is not None:
        return free
    if limit == 1:
        busy = slots[0]
        raise WorkflowError(
            f"{spec.title} worker already active on {project.name} (issue: {busy.issue_id}, "
            f"session: {busy.session_id or 'no session yet'}). Complete current task first."
        )
    issues = ", ".join(f"#{w.issue_id}" for _, w in project.active_slots(spec.name))
    raise WorkflowError(
        f"All {limit} {spec.title} workers of {project.name} are active (issues {issues}). Complete one first, "
        f"or raise maxWorkers.{spec.name} for the project"
    )


def _with_slot(state: ProjectsFile, group_id: str, change: SlotChange) -> ProjectsFile:
    project = state.projects[group_id]
    workers = {role: list(found) for role, found in project.workers.items()}
    found = workers.setdefault(change.role, [])
    while len(found) <= change.slot:
        found.append(Worker())
    found[change.slot] = change.worker
    return state.model_copy(
        update={"projects": {**state.projects, group_id: project.model_copy(update={"workers": workers})}}
    )


def _change_line(tracker: Tracker, project: Project, spec: RoleSpec, issue: Issue) -> str | None:
    """The task's line naming the change (QA's: the one DEV done was accepted with); looked up only where
    the project requires changes, so other pickups cost no request more."""
    if not spec.sees_change or not project.changes_required:
        return None
    return change_line(tracker.change_noun, chosen_change(tracker.changes_for(issue.id)))


def _repeat(
    ws: Workspace, state: ProjectsFile, params: TaskPickupInput, project: Project, slot: int, tracker: Tracker
) -> Plan[TaskPickupResult]:
    """The worker already has this issue (a retry after a lost reply): the same answer, nothing changed."""
    issue = tracker.get_issue(params.issue_id)
    spec = project.effective_workflow().role(params.role)
    worker = project.worker(spec.name, slot)
    choice = select_model(
        issue.title, issue.description, spec.name, override=params.model_override, models=state.models
    )
    if worker.model and choice.alias != worker.model:
        choice = select_model(issue.title, issue.description, spec.name, override=worker.model, models=state.models)
    change = _change_line(tracker, project, spec, issue)
    result = _result(project, params.project_group_id, issue, spec, choice, worker, slot, change)
    result.label_transition = f"{issue.label or 'none'} (picked up already)"
    result.repeated = True
    return Plan(tool="task_pickup", group_id=params.project_group_id, result=result)


def _check_startable(issue: Issue, spec: RoleSpec) -> None:
    if issue.label not in spec.start_labels:
        names = ", ".join(f'"{label}"' for label in spec.start_labels)
        raise WorkflowError(
            f'Issue #{issue.id} has label "{issue.label or "none"}" but expected one of: {names}. '
            f"Cannot pick up for {spec.title}."
        )
    if issue.state == "closed":
        raise WorkflowError(f"Issue #{issue.id} is closed. Reopen it before picking it up.")


def session_label(project: Project, role: Role, slot: int) -> str:
    """The label of a worker session: stable per project, role and slot."""
    return f"devclaw-{project.name}-{role}" + (f"-{slot + 1}" if slot else "")


def _result(
    project: Project,
    group_id: str,
    issue: Issue,
    spec: RoleSpec,
    choice: ModelChoice,
    worker: Worker,
    slot: int,
    change: str | None,
) -> TaskPickupResult:
    action: Literal["spawn", "send"] = "send" if worker.session_id else "spawn"
    verb = "Spawning" if action == "spawn" else "Sending"
    title = one_line(issue.title)
    announcement = f"{spec.emoji_for(choice.alias)} {verb} {spec.title} ({choice.alias}) for #{issue.id}: {title}"
    session_id = worker.session_id if action == "send" else None
    return TaskPickupResult(
        success=True,
        project=project.name,
        group_id=group_id,
        issue_id=issue.id,
        issue_title=title,
        issue_url=issue.url,
        role=spec.name,
        model=choice.alias,
        full_model=choice.full_model,
        model_reason=choice.reason,
        session_action=action,
        session_id=session_id,
        announcement=fit_message(announcement),
        label_transition="",
        task_message=task_message(project, issue, spec.name, change),
        instructions=_instructions(project, group_id, issue, spec, choice, session_id, slot),
        slot=slot if project.max_slots(spec.name) > 1 else None,
    )


def change_line(noun: str, change: ChangeRequest | None) -> str | None:
    """The task message's line naming the change: its URL and state, its branches, where its diff is."""
    if change is None:
        return None
    branches = f"branch {change.source_branch}" if change.source_branch else "branch unknown"
    if change.target_branch:
        branches += f" into {change.target_branch}"
    state = change.state + (", draft" if change.draft else "")
    return f"Change: {noun} {change.url} ({state}), {one_line(branches)}; diff: {change.diff_url or change.url}"


def task_message(project: Project, issue: Issue, role: Role, change: str | None = None) -> str:
    """What the worker session is told: the issue, where the code is, its change when known (``change``:
    the line ``change_line`` makes), and what to report when done. The issue's own text is framed as
    data, with the instructions outside the frame."""
    spec = project.effective_workflow().role(role)
    lines = [
        f"{spec.title} task for project {project.name}: issue #{issue.id} — {one_line(issue.title)}",
        f"Issue: {issue.url}",
    ]
    if project.repo:
        lines.append(f"Repository: {project.repo} (base branch {project.base_branch})")
    if change is not None:
        lines.append(change)
    lines += ["", frame(issue.description or "(no description)", "The issue's own words"), ""]
    lines.append(spec.task.format(id=issue.id, base_branch=project.base_branch))
    return "\n".join(lines)


def _instructions(
    project: Project,
    group_id: str,
    issue: Issue,
    spec: RoleSpec,
    choice: ModelChoice,
    session_id: str | None,
    slot: int,
) -> str:
    several = project.max_slots(spec.name) > 1
    if session_id is not None:
        send = {"sessionKey": session_id, "message": "<taskMessage>"}
        return (
            f"1. Call sessions_send with {json.dumps(send, ensure_ascii=False)}, where <taskMessage> is the "
            "taskMessage field of this result.\n"
            "2. Post the announcement to the project group."
        )
    spawn = {"task": "<taskMessage>", "model": choice.full_model, "label": session_label(project, spec.name, slot)}
    confirm: dict[str, object] = {"projectGroupId": group_id, "role": spec.name, "sessionId": "<childSessionKey>"}
    if several:
        confirm["issueId"] = issue.id
    return (
        f"1. Call sessions_spawn with {json.dumps(spawn, ensure_ascii=False)}, where <taskMessage> is the "
        "taskMessage field of this result.\n"
        f"2. Call task_pickup_confirm with {json.dumps(confirm)}, where <childSessionKey> is the "
        "childSessionKey that sessions_spawn returned; this saves the session so the next task reuses it.\n"
        "3. Post the announcement to the project group.\n"
        f"If sessions_spawn fails, call session_health with autoFix true: it returns issue #{issue.id} "
        "to its queue."
    )


def _records(result: TaskPickupResult, choice: ModelChoice, slot: int) -> list[Record]:
    where = {
        "project": result.project,
        "groupId": result.group_id,
        "issue": result.issue_id,
        "role": result.role,
        "slot": slot,
    }
    return [
        Record(
            "task_pickup",
            {
                **where,
                "issueTitle": result.issue_title,
                "model": result.model,
                "modelReason": result.model_reason,
                "sessionAction": result.session_action,
                "sessionId": result.session_id,
                "labelTransition": result.label_transition,
                "announcement": result.announcement,
            },
        ),
        Record(
            "model_selection",
            {
                **where,
                "selected": choice.alias,
                "fullModel": choice.full_model,
                "reason": choice.reason,
                "override": choice.override,
            },
        ),
    ]


class TaskPickupConfirmInput(MutationInput):
    project_group_id: GroupId
    role: RoleParam
    session_id: str = Field(
        min_length=1, max_length=MAX_NAME, description="The childSessionKey that sessions_spawn returned."
    )
    issue_id: IssueIdParam | None = Field(
        default=None,
        description="The issue the session works on; needed only when several workers of the role are active.",
    )


class TaskPickupConfirmResult(MutationResult):
    success: bool
    project: str
    group_id: str
    role: Role
    issue_id: int | None
    session_id: str
    previous_session_id: str | None = None


def task_pickup_confirm(ws: Workspace, params: TaskPickupConfirmInput) -> TaskPickupConfirmResult:
    """Record the worker session the orchestrator just spawned (the childSessionKey from sessions_spawn)
    on the active DEV or QA worker, so later tasks reuse that session instead of spawning a new one.
    Call it right after sessions_spawn, as task_pickup's instructions say."""
    decide = lambda state: decide_confirm(state, params)  # noqa: E731
    return mutate(ws, params.project_group_id, decide, dry_run=params.dry_run).result


def decide_confirm(state: ProjectsFile, params: TaskPickupConfirmInput) -> Plan[TaskPickupConfirmResult]:
    project = state.project(params.project_group_id)
    spec = project.effective_workflow().role(params.role)
    slot, worker = active_worker(project, spec, params.issue_id, "Call task_pickup first.")
    session = params.session_id.strip()
    previous = worker.session_id
    result = TaskPickupConfirmResult(
        success=True,
        project=project.name,
        group_id=params.project_group_id,
        role=spec.name,
        issue_id=worker.issue_id,
        session_id=session,
        previous_session_id=previous if previous != session else None,
    )
    if previous == session:
        result.repeated = True
        return Plan(tool="task_pickup_confirm", group_id=params.project_group_id, result=result)
    record = Record(
        "task_pickup_confirm",
        {
            "project": project.name,
            "groupId": params.project_group_id,
            "role": spec.name,
            "slot": slot,
            "issue": worker.issue_id,
            "sessionId": session,
            "previousSessionId": previous,
        },
    )
    change = SlotChange(role=spec.name, slot=slot, worker=worker.model_copy(update={"session_id": session}))
    return Plan(
        tool="task_pickup_confirm", group_id=params.project_group_id, result=result, slots=[change], records=[record]
    )


def active_worker(project: Project, spec: RoleSpec, issue_id: int | None, hint: str) -> tuple[int, Worker]:
    """The active worker slot a call means: the one on ``issue_id``, or the only active one."""
    active = project.active_slots(spec.name)
    if issue_id is not None:
        found = next(((s, w) for s, w in active if w.issue_id == issue_id), None)
        if found is None:
            raise WorkflowError(f"No {spec.title} worker of {project.name} is active on issue #{issue_id}. {hint}")
        return found
    if not active:
        raise WorkflowError(f"{spec.title} worker is not active on {project.name}. {hint}")
    if len(active) > 1:
        issues = ", ".join(f"#{w.issue_id}" for _, w in active)
        raise InputError(
            f"{len(active)} {spec.title} workers of {project.name} are active (issues {issues}): pass issueId "
            "to say which one"
        )
    return active[0]


PICKUP = Tool("task_pickup", TaskPickupInput, task_pickup, mutating=True)
PICKUP_CONFIRM = Tool("task_pickup_confirm", TaskPickupConfirmInput, task_pickup_confirm, mutating=True)
