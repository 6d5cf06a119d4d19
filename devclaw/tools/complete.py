"""task_complete: a worker reports its result; the issue moves on and the worker slot is freed.

``decide_complete`` returns the plan; ``engine.apply`` performs it (git pull, the loop brake's comment
and the audit line included).
"""

from __future__ import annotations

import json

from pydantic import Field

from devclaw.engine import Move, Plan, Record, mutate
from devclaw.errors import ChangeRequiredError, InputError, TrackerError, WorkflowError
from devclaw.model_selection import full_model, select_model
from devclaw.redact import redact
from devclaw.state import Completion, Project, ProjectsFile, SlotChange, TokenUsage
from devclaw.tools.base import MutationInput, MutationResult, Tool
from devclaw.tools.changes import chosen_change, gate_change
from devclaw.tools.common import (
    MAX_TEXT,
    GroupId,
    IssueIdParam,
    ResultParam,
    RoleParam,
    fit_message,
    frame,
    one_line,
    sentence,
    with_summary,
)
from devclaw.tools.pickup import active_worker
from devclaw.trackers.base import ChangeRequest, Issue
from devclaw.workflow import Event, Result, Role, RoleSpec
from devclaw.workspace import Workspace


class TaskCompleteInput(MutationInput):
    role: RoleParam
    result: ResultParam
    project_group_id: GroupId
    summary: str | None = Field(
        default=None, max_length=MAX_TEXT, description="One line on what was done or what is wrong."
    )
    issue_id: IssueIdParam | None = Field(
        default=None, description="The worker's issue; needed only when several workers of the role are active."
    )
    usage: TokenUsage | None = Field(
        default=None, description="Tokens and cost the worker's run spent, when known (the work loop sends it)."
    )


class TaskCompleteResult(MutationResult):
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
    #: DEV done on a project that requires a change: the merge/pull request it was accepted with.
    change_url: str | None = None
    change_state: str | None = None
    #: A reviewer's approve with ``review.merge``: devclaw merged that change.
    change_merged: bool | None = None


def task_complete(ws: Workspace, params: TaskCompleteInput) -> TaskCompleteResult:
    """Complete the active DEV or QA task with its result. dev "done": Doing -> To Test (and git pull of
    the project repo); where the project requires a change (its changes settings), done is refused while
    the issue has no merge/pull request, or only unmerged ones when it must be merged, changing nothing
    and naming the next step; an accepted one carries changeUrl and changeState. qa "pass": Testing ->
    Done and the issue is closed; "fail": Testing -> To Improve, the issue is reopened and
    devFixInstructions say how to send it back to DEV; "refine": Testing -> Refining for a human to
    decide. The worker is freed; its session is kept for the next task. Returns the announcement to post
    to the group. Loop brake: the QA fail that makes qaFailLimit fails for one issue (default 3) sends it
    to Refining instead, with a comment on the issue saying why. In a project with a review stage, dev
    "done" goes to To Review; a reviewer's "approve": Reviewing -> To Test, "reject": Reviewing -> To
    Improve (with devFixInstructions), "refine": Reviewing -> Refining."""
    if params.summary is not None:
        # The summary goes into projects.json (the completion, an intent) as well as the result and the
        # audit line: a token in it is masked once, here, for all of them.
        params = params.model_copy(update={"summary": redact(params.summary)})
    merged = None if params.dry_run else _merge_first(ws, params)
    decide = lambda state: decide_complete(ws, state, params, merged)  # noqa: E731
    return mutate(ws, params.project_group_id, decide, dry_run=params.dry_run).result


def _merge_first(ws: Workspace, params: TaskCompleteInput) -> ChangeRequest | None:
    """A result after which devclaw merges the change (a reviewer's approve, with ``review.merge``): the merge
    is made before the completion, which then finds it merged. If devclaw stops in between, the reviewer is
    still on Reviewing with a merged change, which session_health moves on (``change_merged_in_review``).
    Returns the change merged now (None: nothing to merge, or merged already)."""
    project = ws.store.read().project(params.project_group_id)
    spec = project.effective_workflow().role(params.role)
    if params.result not in spec.merges_on or not project.review.merge or not project.changes_required:
        return None
    _, worker = active_worker(project, spec, params.issue_id, "Nothing to complete.")
    tracker = ws.tracker(project)
    change = chosen_change(tracker.changes_for(worker.issue_id or 0))
    if change is None or change.state != "open":
        return None
    try:
        return tracker.merge_change(change)
    except TrackerError as exc:
        raise ChangeRequiredError(
            f'{spec.title} "{params.result}" for issue #{worker.issue_id} on {project.name}: devclaw could not merge '
            f"{change.url} ({exc.message}). Next: make it mergeable (or merge it by hand), then call task_complete "
            f"again. Nothing was changed (the issue stays on {spec.active_label}, the worker stays active)"
        ) from exc


def decide_complete(
    ws: Workspace, state: ProjectsFile, params: TaskCompleteInput, merged: ChangeRequest | None = None
) -> Plan[TaskCompleteResult]:
    project = state.project(params.project_group_id)
    workflow = project.effective_workflow()
    spec = workflow.role(params.role)
    requested = event = _event(spec, params.result)
    repeat = _repeat(project, spec, params)
    if repeat is not None:
        return repeat
    slot, worker = active_worker(project, spec, params.issue_id, "Nothing to complete.")
    if worker.issue_id is None:
        raise WorkflowError(
            f"{spec.title} worker on {project.name} is active but has no valid issue. "
            "Run session_health with autoFix to reset it."
        )
    tracker = ws.tracker(project)
    issue = tracker.get_issue(worker.issue_id)
    if issue.label != spec.active_label:
        raise WorkflowError(
            f'Issue #{issue.id} is on "{issue.label or "no workflow label"}", not "{spec.active_label}": '
            "it was moved outside devclaw. Run session_health to reconcile the worker."
        )
    gated = params.result in spec.change_gated
    change = gate_change(tracker, project, params.project_group_id, issue, spec, params.result) if gated else merged
    fails: dict[str, int] = {}
    if requested is Event.QA_FAIL:
        count = project.qa_fail_count(issue.id) + 1
        fails[str(issue.id)] = count
        if count >= state.health.qa_fail_limit:
            event = Event.QA_REFINE
    # A braked fail is still a fail: the issue is reopened, as for To Improve, and waits on Refining.
    target = workflow.next(issue.label, event)
    move = Move(issue, target, workflow.issue_state(requested, target, issue.state))
    result = _result(project, params, issue, move, change)
    result.change_merged = True if merged else None
    if spec.feedback_frame and move.target in workflow.role("dev").start_labels:
        _add_fix_instructions(result, project, issue, params, spec, state.models)
    comment = None
    if requested is Event.QA_FAIL and event is Event.QA_REFINE:
        comment = _brake(result, issue, params, fails[str(issue.id)])
    done = Completion(issue_id=issue.id, result=params.result, response=result.model_dump(mode="json", by_alias=True))
    freed = worker.model_copy(
        update={"active": False, "issue_id": None, "picked_from": None, "usage": params.usage, "last_completion": done}
    )
    record = Record(
        "task_complete",
        {
            "project": project.name,
            "groupId": params.project_group_id,
            "issue": issue.id,
            "role": spec.name,
            "slot": slot,
            "result": params.result,
            "summary": params.summary,
            "labelTransition": result.label_transition,
            "announcement": result.announcement,
            "gitPull": None,
            "loopBrake": result.loop_brake,
            **({"changeUrl": change.url, "changeState": change.state} if change else {}),
            **({"changeMerged": True} if merged else {}),
            "model": (params.usage.model if params.usage else None) or full_model(worker.model, state.models),
            "sessionId": worker.session_id,
            **(
                {"usage": params.usage.model_dump(mode="json", by_alias=True, exclude={"model"})}
                if params.usage
                else {}
            ),
        },
    )
    return Plan(
        tool="task_complete",
        group_id=params.project_group_id,
        result=result,
        move=move,
        slots=[SlotChange(role=spec.name, slot=slot, worker=freed)],
        qa_fails=fails,
        records=[record],
        pull_repo=project.repo if event is Event.DEV_DONE else None,
        comment=comment,
    )


def _repeat(project: Project, spec: RoleSpec, params: TaskCompleteInput) -> Plan[TaskCompleteResult] | None:
    """A retry of a completion that was applied (its reply was lost): the same answer, nothing changed.
    Only when no worker of the role is on a task that the retry could be mistaken for."""
    candidates = project.active_slots(spec.name)
    if params.issue_id is None and candidates:
        return None
    if params.issue_id is not None and any(w.issue_id == params.issue_id for _, w in candidates):
        return None
    for worker in project.slots(spec.name):
        done = worker.last_completion
        if done is None or done.result != params.result or worker.active:
            continue
        if params.issue_id is not None and done.issue_id != params.issue_id:
            continue
        result = TaskCompleteResult.model_validate(done.response)
        result.repeated = True
        return Plan(tool="task_complete", group_id=params.project_group_id, result=result)
    return None


def _brake(result: TaskCompleteResult, issue: Issue, params: TaskCompleteInput, fails: int) -> str:
    """The issue failed QA ``fails`` times: it goes to Refining; the comment tells the humans why."""
    result.loop_brake = True
    result.announcement = fit_message(
        sentence(
            f"🛑 QA FAIL #{issue.id}{with_summary(params.summary)}. Failed QA {fails} times: "
            "sent to Refining for a human decision instead of back to DEV."
        )
    )
    feedback = (params.summary or "").strip() or "(none given)"
    return (
        f"devclaw loop brake: this issue failed QA {fails} times, so it was moved to Refining instead of "
        "back to To Improve. A person should decide what to do (clarify the issue, split it, or move it "
        f"to To Do to try again).\n\nLast QA feedback: {feedback}"
    )


def _event(spec: RoleSpec, outcome: Result) -> Event:
    try:
        return spec.results[outcome]
    except KeyError:
        allowed = " or ".join(f'"{name}"' for name in spec.results)
        if len(spec.results) == 1:
            raise InputError(f'{spec.title} can only complete with result {allowed}, got "{outcome}"') from None
        allowed = ", ".join(f'"{name}"' for name in list(spec.results)[:-1]) + f', or "{list(spec.results)[-1]}"'
        raise InputError(f'{spec.title} cannot use result "{outcome}". Use {allowed}.') from None


def _result(
    project: Project, params: TaskCompleteInput, issue: Issue, move: Move, change: ChangeRequest | None
) -> TaskCompleteResult:
    template = project.effective_workflow().role(params.role).announcements[params.result]
    announcement = sentence(template.format(id=issue.id, summary=with_summary(params.summary)))
    result = TaskCompleteResult(
        success=True,
        project=project.name,
        group_id=params.project_group_id,
        issue_id=issue.id,
        role=params.role,
        result=params.result,
        label_transition=move.transition,
        announcement=fit_message(announcement),
        change_url=change.url if change else None,
        change_state=change.state if change else None,
    )
    if params.result == "pass":
        result.issue_closed = move.state == "closed"
    if params.result == "fail":
        result.issue_reopened = issue.state == "closed" and move.state == "open"
    return result


def _add_fix_instructions(
    result: TaskCompleteResult,
    project: Project,
    issue: Issue,
    params: TaskCompleteInput,
    spec: RoleSpec,
    models: dict[str, str],
) -> None:
    choice = select_model(issue.title, issue.description, "dev", models=models)
    session = next((w.session_id for w in project.slots("dev") if not w.active and w.session_id), None)
    result.dev_model, result.dev_session_id = choice.alias, session
    pickup = {"issueId": issue.id, "role": "dev", "projectGroupId": params.project_group_id}
    how = f"the existing DEV session {session} gets it" if session else "a new DEV session is spawned"
    result.dev_fix_instructions = (
        f"Issue #{issue.id} ({one_line(issue.title)}) is back in To Improve. To send it back to DEV now, call "
        f"task_pickup with {json.dumps(pickup)} and follow its instructions ({how}); add this {spec.title} "
        "feedback to the task message, as it is framed here:\n"
        + frame(params.summary or "(no details given)", spec.feedback_frame)
    )


COMPLETE = Tool("task_complete", TaskCompleteInput, task_complete, mutating=True)
