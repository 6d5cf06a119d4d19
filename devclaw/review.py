"""The review stage with policy "human": each tick looks at the change of every issue in To Review.

Rules, in the order they are checked (the first that holds decides):

1. no merge/pull request found: wait (a person links or opens one);
2. merged (by a person, or by devclaw on an earlier tick): ``change_approved``, on to To Test;
3. closed without being merged: ``change_closed``, to Rejected, and the issue is closed;
4. a draft: wait;
5. the host says it does not merge cleanly: ``change_conflict``, back to To Improve, with a comment;
6. a reviewer requested changes: ``changes_requested``, back to To Improve, with their words as a comment
   on the issue and as the tick's feedback for the fix task;
7. approved by someone other than its author: with ``review.merge`` devclaw merges it through the host's
   API and it goes on to To Test; without, a person merges it (rule 2 on a later tick);
8. approved only by its author: wait, and say so (devclaw never merges a change its author approved);
9. otherwise: wait for a review.

To Review is listed with its closed issues: a host closes an issue when the change that closes it merges,
and such an issue still has QA ahead (the move reopens it). A closed issue whose change is not merged was
closed by a person: it is left alone.

Every move is a decision under the project's lock that re-reads the issue (``decide_review``), applied by
the engine like any tool's. A merge is a tracker write of its own, made before that decision. If the move
then fails, a ``review_check`` line still records the merge; if devclaw stops between the two, the next
tick finds the change merged (rule 2) and moves the issue, so the move is never lost (that line then says
``mergedByDevclaw: false``). One issue's failure, even a bug, is reported on its check and never stops the others.

Requests per issue in To Review: ``changes_for``'s, then for an open change that merges cleanly
``review_of``'s, then a merge's 1, then the move's 2 (read, write) and its comment's 1.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from devclaw.engine import Move, Plan, Record, mutate
from devclaw.errors import DevclawError, WorkflowError, error_payload, record_crash
from devclaw.state import Project, ProjectsFile
from devclaw.tools.base import ToolResult
from devclaw.tools.changes import chosen_change
from devclaw.tools.common import fit_message, one_line
from devclaw.tools.queue import MAX_PARALLEL_PROJECTS
from devclaw.trackers.base import ChangeRequest, Issue, Tracker
from devclaw.workflow import Event, Label
from devclaw.workspace import Workspace

#: What the group is told of each move ({id}, {reason} are filled in).
ANNOUNCEMENTS: dict[Event, str] = {
    Event.CHANGE_APPROVED: "👍 REVIEW APPROVED #{id}: {reason}. Moved to QA queue.",
    Event.CHANGES_REQUESTED: "✋ CHANGES REQUESTED #{id}: {reason}. Sent back to DEV.",
    Event.CHANGE_CONFLICT: "⚠️ MERGE CONFLICT #{id}: {reason}. Sent back to DEV.",
    Event.CHANGE_CLOSED: "🚫 REJECTED #{id}: {reason}. Issue closed.",
}


@dataclass(frozen=True)
class Verdict:
    """What an issue's change says: the event to apply (None: wait), why, and what goes with it."""

    event: Event | None
    reason: str
    merge: bool = False
    #: What the issue gets as a comment, and the fix task as feedback (changes requested, a conflict).
    feedback: str | None = None


def judge(project: Project, tracker: Tracker, change: ChangeRequest | None) -> Verdict:
    """The module docstring's rules 1-9, for one change (reads its reviews only where rule 6 needs them)."""
    if change is None:
        return Verdict(None, f"no {tracker.change_noun} found for it yet")
    if change.state == "merged":
        return Verdict(Event.CHANGE_APPROVED, f"{change.url} is merged")
    if change.state == "closed":
        return Verdict(Event.CHANGE_CLOSED, f"{change.url} was closed without being merged")
    if change.draft:
        return Verdict(None, f"{change.url} is a draft")
    if change.mergeable is False:
        text = f"{change.url} does not merge cleanly into {change.target_branch or 'its target branch'}"
        return Verdict(Event.CHANGE_CONFLICT, text, feedback=f"Resolve the merge conflict: {text}.")
    review = tracker.review_of(change)
    if review.changes_requested_by:
        who = ", ".join(review.changes_requested_by)
        words = "\n\n".join(review.comments) or "(no comment given)"
        return Verdict(Event.CHANGES_REQUESTED, f"{who} requested changes on {change.url}", feedback=words)
    if change.approved_by_another():
        if project.review.merge:
            return Verdict(Event.CHANGE_APPROVED, f"{change.url} is approved; devclaw merges it", merge=True)
        return Verdict(None, f"{change.url} is approved: waiting for a person to merge it")
    if change.approved_by:
        return Verdict(None, f"{change.url} is approved only by its author ({change.author}), which is not a review")
    if not tracker.new_change_url(change.target_branch):  # the embedded tracker: links record no reviews
        return Verdict(
            None, f"{change.url} is open: once merged, record it with devclaw issue link-mr … --state merged"
        )
    return Verdict(None, f"{change.url} is waiting for a review")


class ReviewCheck(ToolResult):
    """One issue in To Review, as one tick saw it."""

    group_id: str
    project: str
    issue_id: int
    event: str | None
    reason: str
    change_url: str | None = None
    label_transition: str | None = None
    #: For a move: the message to post to the project's group.
    announcement: str | None = None
    #: Whether devclaw merged the change on this check (``review.merge``); a person's merge is not.
    merged_by_devclaw: bool = False
    feedback: str | None = None
    #: "added", or a warning that the comment (for a move that comes with one) could not be added.
    comment: str | None = None
    error: str | None = None


def watch_reviews(ws: Workspace, state: ProjectsFile, *, dry_run: bool = False) -> list[ReviewCheck]:
    """Every project with review policy "human": its To Review issues, each judged and moved (or not)."""
    watched = [(gid, p) for gid, p in state.projects.items() if p.review.policy == "human"]
    if not watched:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_PROJECTS, len(watched))) as pool:
        found = pool.map(lambda item: _watch_project(ws, *item, dry_run=dry_run), watched)
    return [check for checks in found for check in checks]


def _watch_project(ws: Workspace, group_id: str, project: Project, *, dry_run: bool) -> list[ReviewCheck]:
    try:
        tracker = ws.tracker(project)
        issues = tracker.list_issues(Label.TO_REVIEW, closed_too=True)
    except Exception as exc:  # noqa: BLE001 (one project's failure, a bug included, must not stop the others)
        return [ReviewCheck(group_id=group_id, project=project.name, issue_id=0, event=None,
                            reason="its tracker could not be read; To Review left as it is",
                            error=_failure(ws, exc))]  # fmt: skip
    return [_watch_issue(ws, group_id, project, tracker, issue, dry_run=dry_run) for issue in issues]


def _watch_issue(
    ws: Workspace, group_id: str, project: Project, tracker: Tracker, issue: Issue, *, dry_run: bool
) -> ReviewCheck:
    check = ReviewCheck(group_id=group_id, project=project.name, issue_id=issue.id, event=None, reason="")
    try:
        change = chosen_change(tracker.changes_for(issue.id))
        check.change_url = change.url if change else None
        if issue.state == "closed" and (change is None or change.state != "merged"):
            check.reason = "the issue was closed on the tracker, its change not merged: left as a person set it"
            return check
        verdict = judge(project, tracker, change)
        check.reason = verdict.reason
        if verdict.event is None or dry_run:
            check.event = verdict.event
            return check
        assert change is not None  # every verdict with an event names the change
        if verdict.merge:
            tracker.merge_change(change)
            check.merged_by_devclaw = True
        return mutate(ws, group_id, lambda s: decide_review(ws, s, group_id, issue.id, verdict, check)).result
    except Exception as exc:  # noqa: BLE001 (a failure on one issue, a bug included, must not stop the others)
        check.error = _failure(ws, exc)
    if check.merged_by_devclaw:
        _record_merge(ws, group_id, project, check)
    return check


def _failure(ws: Workspace, exc: Exception) -> str:
    """What a check says of a failure: devclaw's own message, or for a bug the crash log that holds it."""
    return error_payload(exc)["message"] if isinstance(exc, DevclawError) else record_crash(exc, ws.memory).message


def _record_merge(ws: Workspace, group_id: str, project: Project, check: ReviewCheck) -> None:
    """The merge was made but the move failed: the audit log still says devclaw merged it (the next tick
    moves the issue)."""
    fields = {"project": project.name, "groupId": group_id, "issue": check.issue_id, "reviewEvent": None,
              "reason": check.reason, "changeUrl": check.change_url, "mergedByDevclaw": True, "error": check.error}  # fmt: skip
    plan = Plan(tool="review_check", group_id=group_id, result=check, records=[Record("review_check", fields)])
    try:
        mutate(ws, group_id, lambda _: plan)
    except DevclawError as exc:
        check.error = f"{check.error}; the merge could not be logged either: {exc.message}"


def decide_review(
    ws: Workspace, state: ProjectsFile, group_id: str, issue_id: int, verdict: Verdict, check: ReviewCheck
) -> Plan[ReviewCheck]:
    """Move the issue as ``verdict`` says, if it is still in To Review (a person may have moved it)."""
    assert verdict.event is not None
    project = state.project(group_id)
    workflow = project.effective_workflow()
    issue = ws.tracker(project).get_issue(issue_id)
    if issue.label != Label.TO_REVIEW:
        raise WorkflowError(f'Issue #{issue_id} left To Review (it is on "{issue.label or "none"}"); left alone')
    target = workflow.next(issue.label, verdict.event)
    move = Move(issue, target, workflow.issue_state(verdict.event, target, issue.state))
    result = check.model_copy(
        update={
            "event": verdict.event.value,
            "label_transition": move.transition,
            "feedback": verdict.feedback,
            "announcement": fit_message(
                ANNOUNCEMENTS[verdict.event].format(id=issue_id, reason=one_line(verdict.reason))
            ),
        }
    )
    record = Record(
        "review_check",
        {
            "project": project.name,
            "groupId": group_id,
            "issue": issue_id,
            "reviewEvent": verdict.event.value,
            "reason": verdict.reason,
            "changeUrl": check.change_url,
            "mergedByDevclaw": check.merged_by_devclaw,
            "labelTransition": move.transition,
            "announcement": result.announcement,
        },
    )
    comment = None
    if verdict.feedback is not None or verdict.event is Event.CHANGE_CLOSED:
        comment = f"devclaw review: {one_line(verdict.reason)}; moved to {workflow.label(move.target)}."
        if verdict.feedback is not None:
            comment += f"\n\n{verdict.feedback}"
    return Plan(tool="review_check", group_id=group_id, result=result, move=move, records=[record],
                comment=comment, comment_field="comment")  # fmt: skip
