"""task_pickup and task_pickup_confirm: give an issue to a worker, then record its session."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field

from devclaw.errors import WorkflowError
from devclaw.faults import checkpoint
from devclaw.model_selection import ModelChoice, select_model
from devclaw.state import Project
from devclaw.tools.base import Tool, ToolInput, ToolResult
from devclaw.tools.common import (
    GroupId,
    RoleParam,
    commit_or_undo,
    fit_message,
    issue_number,
    role_name,
)
from devclaw.trackers.base import Issue
from devclaw.workflow import PICKUP_EVENT, START_LABELS, Role, next_label
from devclaw.workspace import Workspace

DEV_EMOJI = {"haiku": "⚡", "sonnet": "🔧", "opus": "🧠"}
QA_EMOJI = "🔍"


class TaskPickupInput(ToolInput):
    # Bounded: issue numbers are 32-bit on GitLab and GitHub, and SQLite refuses integers over 64 bits.
    issue_id: int = Field(ge=1, le=2**31 - 1, description="The issue number in the project's tracker.")
    role: RoleParam
    project_group_id: GroupId
    model_override: str | None = Field(
        default=None,
        min_length=1,
        description="A model alias (haiku, sonnet, opus, grok) or a full model id.",
    )


class TaskPickupResult(ToolResult):
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


def task_pickup(ws: Workspace, params: TaskPickupInput) -> TaskPickupResult:
    """Pick up an issue for the project's DEV or QA worker: checks the worker is idle and the issue is on
    the role's start label (dev: To Do or To Improve; qa: To Test), picks a model, moves the label
    (To Do/To Improve -> Doing, To Test -> Testing), marks the worker active and logs it. Returns the
    announcement to post to the group and exact instructions to spawn a new worker session or send the
    task to the worker's existing one. After a spawn, call task_pickup_confirm with the new session key."""
    role = params.role
    with ws.store.locked() as state:
        project = state.project(params.project_group_id)
        worker = project.worker(role)
        if worker.active:
            raise WorkflowError(
                f"{role_name(role)} worker already active on {project.name} (issue: {worker.issue_id}, "
                f"session: {worker.session_id}). Complete current task first."
            )
        tracker = ws.tracker(project)
        issue = tracker.get_issue(params.issue_id)
        _check_startable(issue, role)
        assert issue.label is not None  # _check_startable guarantees a start label
        target = next_label(issue.label, PICKUP_EVENT[role])
        choice = select_model(issue.title, issue.description, role, override=params.model_override, models=state.models)
        action: Literal["spawn", "send"] = "send" if worker.session_id else "spawn"
        checkpoint("after_validation")
        moved = tracker.move_issue(issue, target)
        checkpoint("after_tracker_write")
        worker.active, worker.issue_id, worker.model = True, str(issue.id), choice.alias
        worker.start_time = ws.now_iso()
        commit_or_undo(ws, state, tracker, moved, issue.label, issue.state)
        checkpoint("after_state_commit")
        result = _result(project, params.project_group_id, issue, role, choice, action, worker.session_id)
        result.label_transition = f"{issue.label} → {target}"
        _audit(ws, result, choice)
    return result


def _check_startable(issue: Issue, role: Role) -> None:
    expected = START_LABELS[role]
    if issue.label not in expected:
        names = ", ".join(f'"{label}"' for label in expected)
        raise WorkflowError(
            f'Issue #{issue.id} has label "{issue.label or "none"}" but expected one of: {names}. '
            f"Cannot pick up for {role_name(role)}."
        )
    if issue.state == "closed":
        raise WorkflowError(f"Issue #{issue.id} is closed. Reopen it before picking it up.")


def _result(
    project: Project,
    group_id: str,
    issue: Issue,
    role: Role,
    choice: ModelChoice,
    action: Literal["spawn", "send"],
    session_id: str | None,
) -> TaskPickupResult:
    emoji = QA_EMOJI if role == "qa" else DEV_EMOJI.get(choice.alias, DEV_EMOJI["sonnet"])
    verb = "Spawning" if action == "spawn" else "Sending"
    announcement = f"{emoji} {verb} {role_name(role)} ({choice.alias}) for #{issue.id}: {issue.title}"
    message = task_message(project, issue, role)
    return TaskPickupResult(
        success=True,
        project=project.name,
        group_id=group_id,
        issue_id=issue.id,
        issue_title=issue.title,
        issue_url=issue.url,
        role=role,
        model=choice.alias,
        full_model=choice.full_model,
        model_reason=choice.reason,
        session_action=action,
        session_id=session_id if action == "send" else None,
        announcement=fit_message(announcement),
        label_transition="",
        task_message=message,
        instructions=_instructions(project, group_id, issue, role, choice, session_id if action == "send" else None),
    )


def task_message(project: Project, issue: Issue, role: Role) -> str:
    """What the worker session is told: the issue, where the code is, and what to report when done."""
    lines = [
        f"{role_name(role)} task for project {project.name}: issue #{issue.id} — {issue.title}",
        f"Issue: {issue.url}",
    ]
    if project.repo:
        lines.append(f"Repository: {project.repo} (base branch {project.base_branch})")
    lines += ["", issue.description.strip() or "(no description)", ""]
    if role == "dev":
        lines.append(
            f"Work on a branch from {project.base_branch}, open a merge/pull request that closes #{issue.id}, "
            "and get it merged. When it is merged, reply with one line: DONE: <what you changed>."
        )
    else:
        lines.append(
            f"Review and test the change for #{issue.id} against the issue. Reply with one line: "
            "PASS: <what you verified>, FAIL: <what is wrong>, or REFINE: <the question a human must decide>."
        )
    return "\n".join(lines)


def _instructions(
    project: Project, group_id: str, issue: Issue, role: Role, choice: ModelChoice, session_id: str | None
) -> str:
    if session_id is not None:
        send = {"sessionKey": session_id, "message": "<taskMessage>"}
        return (
            f"1. Call sessions_send with {json.dumps(send, ensure_ascii=False)}, where <taskMessage> is the "
            "taskMessage field of this result.\n"
            "2. Post the announcement to the project group."
        )
    spawn = {"task": "<taskMessage>", "model": choice.full_model, "label": f"devclaw-{project.name}-{role}"}
    confirm = {"projectGroupId": group_id, "role": role, "sessionId": "<childSessionKey>"}
    return (
        f"1. Call sessions_spawn with {json.dumps(spawn, ensure_ascii=False)}, where <taskMessage> is the "
        "taskMessage field of this result.\n"
        f"2. Call task_pickup_confirm with {json.dumps(confirm)}, where <childSessionKey> is the "
        "childSessionKey that sessions_spawn returned; this saves the session so the next task reuses it.\n"
        "3. Post the announcement to the project group.\n"
        f"If sessions_spawn fails, call session_health with autoFix true: it returns issue #{issue.id} "
        "to its queue."
    )


def _audit(ws: Workspace, result: TaskPickupResult, choice: ModelChoice) -> None:
    ws.audit.append(
        "task_pickup",
        project=result.project,
        groupId=result.group_id,
        issue=result.issue_id,
        issueTitle=result.issue_title,
        role=result.role,
        model=result.model,
        modelReason=result.model_reason,
        sessionAction=result.session_action,
        sessionId=result.session_id,
        labelTransition=result.label_transition,
    )
    ws.audit.append(
        "model_selection",
        issue=result.issue_id,
        role=result.role,
        selected=choice.alias,
        fullModel=choice.full_model,
        reason=choice.reason,
        override=choice.override,
    )


class TaskPickupConfirmInput(ToolInput):
    project_group_id: GroupId
    role: RoleParam
    session_id: str = Field(min_length=1, description="The childSessionKey that sessions_spawn returned.")


class TaskPickupConfirmResult(ToolResult):
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
    role = params.role
    with ws.store.locked() as state:
        project = state.project(params.project_group_id)
        worker = project.worker(role)
        if not worker.active:
            raise WorkflowError(f"{role_name(role)} worker is not active on {project.name}. Call task_pickup first.")
        previous = worker.session_id
        worker.session_id = params.session_id.strip()
        checkpoint("after_validation")
        ws.store.write(state)
        checkpoint("after_state_commit")
        result = TaskPickupConfirmResult(
            success=True,
            project=project.name,
            group_id=params.project_group_id,
            role=role,
            issue_id=issue_number(worker.issue_id),
            session_id=worker.session_id,
            previous_session_id=previous if previous != worker.session_id else None,
        )
        ws.audit.append(
            "task_pickup_confirm",
            project=project.name,
            groupId=params.project_group_id,
            role=role,
            issue=result.issue_id,
            sessionId=result.session_id,
            previousSessionId=previous,
        )
    return result


PICKUP = Tool("task_pickup", TaskPickupInput, task_pickup, mutating=True)
PICKUP_CONFIRM = Tool("task_pickup_confirm", TaskPickupConfirmInput, task_pickup_confirm, mutating=True)
