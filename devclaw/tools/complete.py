"""task_complete: a worker reports its result; the issue moves on and the worker is freed."""

from __future__ import annotations

import json

from pydantic import Field

from devclaw.errors import DevclawError, InputError, WorkflowError
from devclaw.faults import checkpoint
from devclaw.git import pull_ff_only
from devclaw.model_selection import select_model
from devclaw.state import Project
from devclaw.tools.base import Tool, ToolInput, ToolResult
from devclaw.tools.common import GroupId, RoleParam, commit_or_undo, fit_message, role_name, with_summary
from devclaw.trackers.base import Issue, Tracker
from devclaw.workflow import ACTIVE_LABEL, ISSUE_STATE_AFTER, RESULT_EVENT, Event, Result, Role, next_label
from devclaw.workspace import Workspace


class RunUsage(ToolInput):
    """Tokens a worker's run spent (the sum over its assistant messages), as OpenClaw reports them."""

    input: int = Field(default=0, ge=0, description="Input tokens, cached ones excluded.")
    output: int = Field(default=0, ge=0)
    cache_read: int = Field(default=0, ge=0)
    cache_write: int = Field(default=0, ge=0)
    cost: float | None = Field(default=None, ge=0, description="USD, when the provider prices the model.")
    model: str | None = Field(default=None, description="The full model id the run used.")


class TaskCompleteInput(ToolInput):
    role: RoleParam
    result: Result = Field(description='dev: "done"; qa: "pass", "fail" or "refine".')
    project_group_id: GroupId
    summary: str | None = Field(default=None, description="One line on what was done or what is wrong.")
    usage: RunUsage | None = Field(default=None, description="Tokens and cost of the worker's run, when known.")


class TaskCompleteResult(ToolResult):
    success: bool
    project: str
    group_id: str
    issue_id: int
    role: Role
    result: Result
    label_transition: str
    announcement: str
    git_pull: str | None = None
    issue_closed: bool | None = None
    issue_reopened: bool | None = None
    dev_fix_instructions: str | None = None
    dev_session_id: str | None = None
    dev_model: str | None = None
    loop_brake: bool | None = None
    loop_brake_comment: str | None = None


def task_complete(ws: Workspace, params: TaskCompleteInput) -> TaskCompleteResult:
    """Complete the active DEV or QA task with its result. dev "done": Doing -> To Test (and git pull of
    the project repo). qa "pass": Testing -> Done and the issue is closed; "fail": Testing -> To Improve,
    the issue is reopened and devFixInstructions say how to send it back to DEV; "refine": Testing ->
    Refining for a human to decide. The worker is freed; its session is kept for the next task. Returns
    the announcement to post to the group. Loop brake: the QA fail that makes qaFailLimit fails for one
    issue (default 3) sends it to Refining instead, with a comment on the issue saying why."""
    role, outcome = params.role, params.result
    requested = event = _event(role, outcome)
    fails = 0
    with ws.store.locked() as state:
        project = state.project(params.project_group_id)
        worker = project.worker(role)
        if not worker.active:
            raise WorkflowError(f"{role_name(role)} worker is not active on {project.name}. Nothing to complete.")
        tracker = ws.tracker(project)
        issue = tracker.get_issue(_active_issue(worker.issue_id, role, project))
        if issue.label != ACTIVE_LABEL[role]:
            raise WorkflowError(
                f'Issue #{issue.id} is on "{issue.label or "no workflow label"}", not "{ACTIVE_LABEL[role]}": '
                "it was moved outside devclaw. Run session_health to reconcile the worker."
            )
        if requested is Event.QA_FAIL:
            # Counted under the lock from the log; this fail is the (fails)th, and at the limit it brakes.
            fails = 1 + ws.audit.count(
                "task_complete", groupId=params.project_group_id, issue=issue.id, role="qa", result="fail"
            )
            if fails >= state.health.qa_fail_limit:
                event = Event.QA_REFINE
        target = next_label(issue.label, event)
        checkpoint("after_validation")
        # A braked fail is still a fail: the issue is reopened, as for To Improve, and waits on Refining.
        moved = tracker.move_issue(issue, target, ISSUE_STATE_AFTER.get(requested))
        checkpoint("after_tracker_write")
        worker.deactivate()
        commit_or_undo(ws, state, tracker, moved, issue.label, issue.state)
        checkpoint("after_state_commit")
        result = _result(project, params, issue, f"{issue.label} → {target}", moved)
        if event is Event.QA_FAIL:
            _add_fix_instructions(result, project, issue, params, state.models)
    if requested is Event.QA_FAIL and event is Event.QA_REFINE:
        _brake(tracker, issue, params, result, fails)
    if event is Event.DEV_DONE:
        # Outside the lock: a slow remote must not hold up other projects' calls for 30 s.
        result.git_pull = pull_ff_only(project.repo)
    ws.audit.append(
        "task_complete",
        project=project.name,
        groupId=params.project_group_id,
        issue=issue.id,
        role=role,
        result=outcome,
        summary=params.summary,
        labelTransition=result.label_transition,
        gitPull=result.git_pull,
        loopBrake=result.loop_brake,
        **_usage_fields(params.usage),
    )
    return result


def _usage_fields(usage: RunUsage | None) -> dict[str, object]:
    if usage is None:
        return {}
    counts = usage.model_dump(by_alias=True, exclude={"model"})
    return {"usage": counts, "model": usage.model} if usage.model else {"usage": counts}


def _brake(tracker: Tracker, issue: Issue, params: TaskCompleteInput, result: TaskCompleteResult, fails: int) -> None:
    """The issue failed QA ``fails`` times: it went to Refining; tell the humans why, on the issue."""
    result.loop_brake = True
    result.announcement = fit_message(
        f"🛑 QA FAIL #{issue.id}{with_summary(params.summary)}. Failed QA {fails} times: "
        "sent to Refining for a human decision instead of back to DEV."
    )
    body = (
        f"devclaw loop brake: this issue failed QA {fails} times, so it was moved to Refining instead of "
        "back to To Improve. A person should decide what to do (clarify the issue, split it, or move it "
        f"to To Do to try again).\n\nLast QA feedback: {with_summary(params.summary)[3:] or '(none given)'}"
    )
    try:
        tracker.add_comment(issue.id, body)  # one request, never retried: a duplicate comment is worse
        result.loop_brake_comment = "added"
    except DevclawError as exc:
        result.loop_brake_comment = f"warning: the comment could not be added: {exc.message}"


def _event(role: Role, outcome: Result) -> Event:
    try:
        return RESULT_EVENT[role][outcome]
    except KeyError:
        if role == "dev":
            raise InputError(f'DEV can only complete with result "done", got "{outcome}"') from None
        raise InputError('QA cannot use result "done". Use "pass", "fail", or "refine".') from None


def _active_issue(stored: str | None, role: Role, project: Project) -> int:
    if stored is None or not stored.isdigit():
        raise WorkflowError(
            f"{role_name(role)} worker on {project.name} is active but has no valid issue ({stored!r}). "
            "Run session_health with autoFix to reset it."
        )
    return int(stored)


_ANNOUNCEMENTS: dict[Result, str] = {
    "done": "✅ DEV done #{id}{summary}. Moved to QA queue.",
    "pass": "🎉 QA PASS #{id}{summary}. Issue closed.",
    "fail": "❌ QA FAIL #{id}{summary}. Sent back to DEV.",
    "refine": "🤔 QA REFINE #{id}{summary}. Awaiting human decision.",
}


def _result(
    project: Project, params: TaskCompleteInput, issue: Issue, transition: str, moved: Issue
) -> TaskCompleteResult:
    announcement = _ANNOUNCEMENTS[params.result].format(id=issue.id, summary=with_summary(params.summary))
    result = TaskCompleteResult(
        success=True,
        project=project.name,
        group_id=params.project_group_id,
        issue_id=issue.id,
        role=params.role,
        result=params.result,
        label_transition=transition,
        announcement=fit_message(announcement),
    )
    if params.result == "pass":
        result.issue_closed = moved.state == "closed"
    if params.result == "fail":
        result.issue_reopened = issue.state == "closed" and moved.state == "open"
    return result


def _add_fix_instructions(
    result: TaskCompleteResult,
    project: Project,
    issue: Issue,
    params: TaskCompleteInput,
    models: dict[str, str],
) -> None:
    choice = select_model(issue.title, issue.description, "dev", models=models)
    result.dev_model, result.dev_session_id = choice.alias, project.dev.session_id
    pickup = {"issueId": issue.id, "role": "dev", "projectGroupId": params.project_group_id}
    session = (
        f"the existing DEV session {project.dev.session_id} gets it"
        if project.dev.session_id
        else "a new DEV session is spawned"
    )
    feedback = params.summary.strip() if params.summary and params.summary.strip() else "(no details given)"
    result.dev_fix_instructions = (
        f"Issue #{issue.id} is back in To Improve. To send it back to DEV now, call task_pickup with "
        f"{json.dumps(pickup)} and follow its instructions ({session}); add this QA feedback to the task "
        f"message: {feedback}"
    )


COMPLETE = Tool("task_complete", TaskCompleteInput, task_complete, mutating=True)
