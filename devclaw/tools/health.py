"""session_health: find where worker state, live sessions and tracker labels disagree, and repair it.

Two kinds of checks (docs/HEALTH.md describes each one, its cause, its fix and what stays for a human):

- worker checks read only projects.json and the session list: ``active_no_session``, ``zombie_session``,
  ``stale_worker``, ``inactive_with_issue``, ``active_without_issue``, ``future_start_time``,
  ``pending_move`` and ``audit_gap``. They make no tracker request unless a fix has to put a label back.
- tracker checks compare each project's Doing and Testing issues with its workers: ``issue_gone``,
  ``issue_closed``, ``label_mismatch``, ``orphaned_label``, ``conflicting_labels``. They cost two list
  requests per project plus one read per worker whose issue is not where it should be, so they run only
  with ``autoFix`` or ``checkTracker``: a plain report stays request-free.

The trackers of all projects are read in parallel, outside any lock. With ``autoFix`` each project is
then locked alone, its workers are checked again against the fresh state, and each fix is a plan that
``engine.apply`` performs — so a fix never acts on a worker that changed since the scan, and a call on
another project never waits for this one. Unknown is not dead: a tracker that cannot be read gives one
``tracker_unreachable`` finding and no fix there that needs it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import Field

from devclaw.engine import Move, Plan, Record, apply, project_lock, resolve_intents
from devclaw.errors import DevclawError, NotFoundError
from devclaw.state import HealthSettings, Project, ProjectsFile, SlotChange, Worker, parse_time
from devclaw.tools.base import MutationInput, MutationResult, Tool, ToolResult, WorkerRef
from devclaw.tools.changes import chosen_change
from devclaw.tools.common import duration_text
from devclaw.trackers.base import ChangeRequest, Issue, Tracker
from devclaw.workflow import Event, Label, Role, RoleSpec, State
from devclaw.workspace import Workspace

Severity = Literal["critical", "warning", "unknown"]
#: An orphan seen in a list read before the project was locked that had moved on by the fix: not a
#: finding at all (the move was devclaw's own, under the lock), so it is left out of the report.
MOVED_SINCE_SCAN = "moved_since_scan"
#: Trackers read at once by one health run: enough to overlap the waits, few enough for one GitLab.
MAX_PARALLEL_READS = 16


class SessionHealthInput(MutationInput):
    auto_fix: bool = Field(default=False, description="Repair what is found (revert labels, free workers).")
    active_sessions: list[str] | None = Field(
        default=None,
        max_length=10_000,
        description="Keys or ids of the live sessions, from sessions_list. Without them no worker is "
        "declared dead: unknown is not dead. An empty list means no session is alive.",
    )
    check_tracker: bool | None = Field(
        default=None,
        description="Also compare each project's Doing and Testing issues with its workers (2 list requests "
        "per project, plus one read per worker whose issue moved). Default: only when autoFix is true.",
    )


class HealthIssue(ToolResult):
    type: str
    severity: Severity
    project: str
    group_id: str
    role: Role | None = None
    slot: int | None = None
    message: str
    session_id: str | None = None
    hours_active: float | None = None
    issue_id: int | None = None
    fixed: bool | None = None
    label_reverted: bool | None = None
    label_revert_failed: bool | None = None


class GraceWorker(WorkerRef):
    """A worker not judged by its session in this run: it was picked up within the grace period."""

    minutes_left: float


class SessionHealthResult(MutationResult):
    success: bool
    healthy: bool
    issues_found: int
    fixes_applied: int
    issues: list[HealthIssue]
    tracker_checked: bool
    in_grace: list[GraceWorker] = Field(default_factory=list)
    note: str | None = None


K = TypeVar("K")
V = TypeVar("V")

# --- what one run knows ----------------------------------------------------------------------------------


@dataclass
class _TrackerView:
    """One project's open Doing and Testing issues, read once per run (or why they could not be)."""

    tracker: Tracker | None
    active: dict[State, dict[int, Issue]] = field(default_factory=dict)
    error: str | None = None
    #: Review policy "agent": the open issues in To Review, whose changes health looks at.
    in_review: dict[int, Issue] = field(default_factory=dict)
    #: Each issue's change as read once in this run (None: it has none), or why it could not be read.
    changes: dict[int, ChangeRequest | DevclawError | None] = field(default_factory=dict)
    #: Issues read one by one in this run (or why not), by issue and the start time of the worker they
    #: were read for: the check under the lock reuses a read only for the same, unchanged, worker.
    reads: dict[tuple[int, str | None], Issue | DevclawError] = field(default_factory=dict)

    def get_issue(self, issue_id: int, worker_start: str | None) -> Issue:
        tracker = self.tracker
        assert tracker is not None
        return _once(self.reads, (issue_id, worker_start), lambda: tracker.get_issue(issue_id))

    def change_of(self, issue_id: int) -> ChangeRequest | None:
        tracker = self.tracker
        assert tracker is not None
        return _once(self.changes, issue_id, lambda: chosen_change(tracker.changes_for(issue_id)))


def _once(cache: dict[K, V | DevclawError], key: K, read: Callable[[], V]) -> V:
    """``read()`` once per key in a run; a failure is kept and raised again (what could not be read stays so)."""
    if key not in cache:
        try:
            cache[key] = read()
        except DevclawError as exc:
            cache[key] = exc
    found = cache[key]
    if isinstance(found, DevclawError):
        raise found
    return found


@dataclass(frozen=True)
class _Run:
    ws: Workspace
    sessions: frozenset[str] | None
    settings: HealthSettings
    now: datetime
    views: dict[str, _TrackerView]


@dataclass
class _Finding:
    report: HealthIssue
    #: The fix: a plan for ``engine.apply``, or a step of its own (settling moves, late audit lines).
    plan: Plan[Any] | None = None
    step: Callable[[], bool] | None = None


def session_health(ws: Workspace, params: SessionHealthInput) -> SessionHealthResult:
    """Check every project's DEV and QA workers against the live sessions and the tracker. Worker checks:
    active with no session (critical), zombie whose session is not in activeSessions (critical), stale
    worker active over the stale threshold (warning), idle worker still holding an issue (warning), active
    worker without an issue (critical). Tracker checks (with autoFix, or checkTracker): the worker's issue
    was deleted (issue_gone) or closed (issue_closed) or moved off Doing/Testing by someone (label_mismatch),
    and issues on Doing/Testing that no worker tracks (orphaned_label). With autoFix: dead workers are freed
    and their issue goes back to its queue (Doing -> To Do, or To Improve after a QA fail; Testing -> To
    Test); workers whose issue is gone, closed or moved are freed and the label left alone; orphaned labels
    go back to their queue. With a reviewer agent: a change a person merged or closed moves its issue on (To
    Test, or Rejected and closed). A tracker that cannot be reached is reported as unknown and nothing that
    needs it is fixed. Pass activeSessions from sessions_list: without it no worker is declared dead."""
    check_tracker = params.auto_fix if params.check_tracker is None else params.check_tracker
    state = ws.store.read()
    run = _Run(
        ws=ws,
        sessions=frozenset(params.active_sessions) if params.active_sessions is not None else None,
        settings=state.health,
        now=ws.clock(),
        views=_read_trackers(ws, state) if check_tracker else {},
    )
    fixing = params.auto_fix and not params.dry_run
    scanned: dict[str, tuple[list[_Finding], list[GraceWorker]]] = {}
    to_fix: list[str] = []
    for group_id, project in state.projects.items():
        seen: list[GraceWorker] = []
        found = _scan(run, state, group_id, seen, check_tracker)
        scanned[group_id] = (found, seen)
        if fixing and (project.intents or any(f.plan or f.step for f in found)):
            to_fix.append(group_id)
    # Only a project with something to fix is locked, and checked again under its lock. Projects are
    # fixed in parallel (each under its own lock): one project's tracker writes never wait for another's.
    fixed: dict[str, tuple[list[_Finding], list[GraceWorker]]] = {}
    if to_fix:

        def fix(group_id: str) -> tuple[list[_Finding], list[GraceWorker]]:
            seen: list[GraceWorker] = []
            return _fix_project(run, group_id, seen), seen

        # Each fix runs in a copy of this call's context: the caller's deadline bounds its lock waits.
        contexts = [contextvars.copy_context() for _ in to_fix]
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_READS, len(to_fix))) as pool:
            done = pool.map(lambda context, group_id: context.run(fix, group_id), contexts, to_fix)
            fixed = dict(zip(to_fix, done, strict=True))
    findings: list[_Finding] = []
    grace: list[GraceWorker] = []
    for group_id in state.projects:
        found, seen = fixed[group_id] if group_id in fixed else scanned[group_id]
        findings += found
        grace += seen
    result = _report(ws, params, check_tracker, len(state.projects), findings, grace)
    if params.dry_run:
        result.dry_run = True
    return result


def _read_trackers(ws: Workspace, state: ProjectsFile) -> dict[str, _TrackerView]:
    """Every project's Doing and Testing issues, read in parallel, outside any lock."""

    def read(project: Project) -> _TrackerView:
        try:
            tracker = ws.tracker(project)
            workflow = project.effective_workflow()
            return _TrackerView(
                tracker,
                {
                    spec.active_label: {i.id: i for i in tracker.list_issues(spec.active_label)}
                    for spec in workflow.roles.values()
                },
                in_review=_in_review(tracker, project),
            )
        except DevclawError as exc:
            return _TrackerView(None, error=exc.message)

    if not state.projects:
        return {}
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_READS, len(state.projects))) as pool:
        views = pool.map(read, state.projects.values())
        return dict(zip(state.projects, views, strict=True))


def _watches_changes(project: Project) -> bool:
    """Whether health looks at changes: a reviewer agent's project that requires them (with policy "human"
    the tick watches them; without a review stage nothing waits for one)."""
    return project.review.policy == "agent" and project.changes_required


def _in_review(tracker: Tracker, project: Project) -> dict[int, Issue]:
    """To Review, closed issues included (a merge closes its issue), where health looks at changes."""
    if not _watches_changes(project):
        return {}
    return {issue.id: issue for issue in tracker.list_issues(Label.TO_REVIEW, closed_too=True)}


def _claimed(state: ProjectsFile) -> dict[tuple[str, str, str], set[int]]:
    """Issues some worker of any project on the same tracker works on: never orphans."""
    claimed: dict[tuple[str, str, str], set[int]] = {}
    for project in state.projects.values():
        issues = claimed.setdefault(project.tracker.identity(), set())
        issues.update(w.issue_id for _, _, w in project.every_worker() if w.active and w.issue_id is not None)
    return claimed


def _fix_project(run: _Run, group_id: str, grace: list[GraceWorker]) -> list[_Finding]:
    """Lock the project, settle its pending moves, then check it again on the fresh state and fix it."""
    try:
        with project_lock(run.ws, group_id):
            settled = _settle(run, group_id)
            state = run.ws.store.read()
            if group_id not in state.projects:
                return settled
            findings = _scan(run, state, group_id, grace, True)
            for finding in findings:
                _fix(run, finding)
            return settled + [f for f in findings if f.report.type != MOVED_SINCE_SCAN]
    except DevclawError as exc:
        project = run.ws.store.read().projects.get(group_id)
        name = project.name if project else group_id
        report = HealthIssue(
            type="project_busy",
            severity="unknown",
            project=name,
            group_id=group_id,
            message=f"{name} was not checked for repair: {exc.message}",
        )
        return [_Finding(report)]


def _settle(run: _Run, group_id: str) -> list[_Finding]:
    project = run.ws.store.read().project(group_id)
    if not project.intents:
        return []
    try:
        settled = resolve_intents(run.ws, group_id)
    except DevclawError as exc:
        report = HealthIssue(
            type="pending_move",
            severity="unknown",
            project=project.name,
            group_id=group_id,
            message=exc.message,
            issue_id=project.intents[0].issue_id,
            fixed=False,
        )
        return [_Finding(report)]
    findings = []
    for done in settled:
        what = (
            "it landed: the change it was part of is committed now"
            if done.outcome == "landed"
            else ("it did not land: it was dropped")
        )
        message = (
            f'The move of issue #{done.intent.issue_id} to "{done.intent.to_label}" by {done.intent.tool} '
            f"had lost its reply; {what}"
        )
        findings.append(
            _Finding(
                HealthIssue(
                    type="pending_move",
                    severity="warning",
                    project=project.name,
                    group_id=group_id,
                    message=message,
                    issue_id=done.intent.issue_id,
                    fixed=True,
                )
            )
        )
    return findings


def _fix(run: _Run, finding: _Finding) -> None:
    report = finding.report
    if finding.step is not None:
        report.fixed = finding.step()
        return
    if finding.plan is None:
        return
    try:
        apply(run.ws, finding.plan)
    except DevclawError as exc:
        report.fixed = False
        report.message += f"; not fixed: {exc.message}"
        return
    report.fixed = True


# --- the checks ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    run: _Run
    group_id: str
    project: Project
    spec: RoleSpec
    slot: int
    worker: Worker
    view: _TrackerView | None

    @property
    def several(self) -> bool:
        return self.project.max_slots(self.spec.name) > 1

    @property
    def who(self) -> str:
        return f"{self.spec.title} worker{f' {self.slot + 1}' if self.several else ''} on {self.project.name}"

    def started(self) -> datetime | None:
        started = parse_time(self.worker.start_time)
        return None if started is None else min(started, self.run.now)  # a future start counts as now

    def hours_active(self) -> float | None:
        started = self.started()
        return None if started is None else round((self.run.now - started).total_seconds() / 3600, 2)

    def grace_left(self) -> float | None:
        started = self.started()
        if started is None:
            return None
        left = self.run.settings.grace_minutes - (self.run.now - started).total_seconds() / 60
        return left if left > 0 else None

    def report(self, type_: str, severity: Severity, message: str) -> HealthIssue:
        return HealthIssue(
            type=type_,
            severity=severity,
            project=self.project.name,
            group_id=self.group_id,
            role=self.spec.name,
            slot=self.slot if self.several else None,
            message=message,
            session_id=self.worker.session_id,
            issue_id=self.worker.issue_id,
        )

    def plan(self, report: HealthIssue, worker: Worker, move: Move | None = None) -> Plan[HealthIssue]:
        record = Record(
            "health_fix",
            {
                "project": self.project.name,
                "groupId": self.group_id,
                "role": self.spec.name,
                "slot": self.slot,
                "type": report.type,
                "issue": report.issue_id,
                "sessionId": self.worker.session_id,
                "labelTransition": move.transition if move else None,
            },
        )
        return Plan(
            tool="session_health",
            group_id=self.group_id,
            result=report,
            move=move,
            slots=[SlotChange(role=self.spec.name, slot=self.slot, worker=worker)],
            records=[record],
        )

    def freed(self, *, forget_session: bool = False) -> Worker:
        update: dict[str, Any] = {"active": False, "issue_id": None, "picked_from": None}
        if forget_session:
            update["session_id"] = None
        return self.worker.model_copy(update=update)


def _scan(run: _Run, state: ProjectsFile, group_id: str, grace: list[GraceWorker], tracker: bool) -> list[_Finding]:
    project = state.projects[group_id]
    run = replace(run, now=run.ws.clock())  # the state was read just now: judge it by the time now
    view = run.views.get(group_id) if tracker else None
    findings = _project_findings(run, group_id, project)
    if view is not None and view.error is not None:
        message = (
            f"The tracker of {project.name} could not be read ({view.error}); its labels were not checked "
            "and nothing that needs the tracker was fixed. Unknown is not dead: run session_health again later."
        )
        findings.append(
            _Finding(
                HealthIssue(
                    type="tracker_unreachable",
                    severity="unknown",
                    project=project.name,
                    group_id=group_id,
                    message=message,
                )
            )
        )
    for role, slot, worker in project.every_worker():
        context = _Slot(run, group_id, project, project.effective_workflow().role(role), slot, worker, view)
        findings += _check_slot(context, grace)
    if view is not None and view.error is None:
        findings += _label_findings(run, state, group_id, project, view)
        findings += _change_findings(run, group_id, project, view, findings)
    return findings


def _change_findings(
    run: _Run, group_id: str, project: Project, view: _TrackerView, found: list[_Finding]
) -> list[_Finding]:
    """What the changes say, in a project with a reviewer agent that requires changes (``_in_review``): a
    change a person merged or closed while its issue waits in To Review or a reviewer works on it. The issue
    moves on to To Test (reopened if the host closed it on the merge) or to Rejected, and its reviewer is
    freed. That fix replaces the ``issue_closed`` finding of a reviewer whose issue the merge closed; a
    reviewer another check already fixes (a dead session, say) is left to that fix."""
    if not _watches_changes(project):
        return []
    spec = project.effective_workflow().role("reviewer")
    findings: list[_Finding] = []
    fixed = {
        (f.report.role, f.report.slot or 0) for f in found if f.plan is not None and f.report.type != "issue_closed"
    }
    for slot, worker in project.active_slots(spec.name):
        c = _Slot(run, group_id, project, spec, slot, worker, view)
        issue = _reviewed_issue(c)
        if issue is not None and (spec.name, slot) not in fixed:
            findings += _changed(run.ws, group_id, project, view, issue, c)
    for issue in view.in_review.values():
        findings += _changed(run.ws, group_id, project, view, issue)
    covered = {(f.report.role, f.report.slot) for f in findings}
    found[:] = [f for f in found if not (f.report.type == "issue_closed" and (f.report.role, f.report.slot) in covered)]
    return findings


def _reviewed_issue(c: _Slot) -> Issue | None:
    """The issue an active reviewer works on, if it is still on Reviewing (open, or closed by a merge)."""
    assert c.view is not None and c.worker.issue_id is not None
    listed = c.view.active[c.spec.active_label].get(c.worker.issue_id)
    if listed is not None:
        return listed
    try:
        issue = c.view.get_issue(c.worker.issue_id, c.worker.start_time)
    except DevclawError:
        return None
    return issue if issue.label == c.spec.active_label else None


def _changed(
    ws: Workspace, group_id: str, project: Project, view: _TrackerView, issue: Issue, reviewer: _Slot | None = None
) -> list[_Finding]:
    """The fix for an issue in review whose change a person merged or closed (nothing for an open one)."""
    assert view.tracker is not None
    try:
        change = view.change_of(issue.id)
    except DevclawError:
        return []  # unknown is not changed: the next run looks again
    if change is None or change.state == "open" or (issue.state == "closed" and change.state != "merged"):
        return []  # an issue closed with its change unmerged was closed by a person: theirs
    event = Event.CHANGE_APPROVED if change.state == "merged" else Event.CHANGE_CLOSED
    workflow = project.effective_workflow()
    target = workflow.next(issue.label, event)
    move = Move(issue, target, workflow.issue_state(event, target, issue.state))
    done = "merged" if change.state == "merged" else "closed without merging"
    where = (
        f"{reviewer.who} reviews issue #{issue.id}"
        if reviewer
        else f"Issue #{issue.id} on {project.name} waits in To Review"
    )
    message = f'{where}; a person {done} its {view.tracker.change_noun} {change.url}: it goes to "{target}"'
    kind = "change_merged_in_review" if change.state == "merged" else "change_closed"
    if reviewer is not None:
        report = reviewer.report(kind, "warning", message + " and the reviewer is freed")
        plan = reviewer.plan(report, reviewer.freed(), move)
    else:
        report = HealthIssue(type=kind, severity="warning", project=project.name, group_id=group_id,
                             message=message, issue_id=issue.id)  # fmt: skip
        plan = _issue_plan(group_id, project, report, move, changeUrl=change.url)
    return [_Finding(report, step=lambda: _unless_moved(ws, plan))]


def _project_findings(run: _Run, group_id: str, project: Project) -> list[_Finding]:
    findings = []
    for intent in project.intents:
        message = (
            f'The move of issue #{intent.issue_id} to "{intent.to_label}" by {intent.tool} lost its reply; '
            "session_health with autoFix (or the next call on the project) settles it"
        )
        findings.append(
            _Finding(
                HealthIssue(
                    type="pending_move",
                    severity="warning",
                    project=project.name,
                    group_id=group_id,
                    message=message,
                    issue_id=intent.issue_id,
                )
            )
        )
    if project.audit_gaps:
        message = (
            f"{len(project.audit_gaps)} audit line(s) of {project.name} could not be written when their "
            "change was made; autoFix writes them now (marked late)"
        )
        report = HealthIssue(
            type="audit_gap", severity="warning", project=project.name, group_id=group_id, message=message
        )
        findings.append(_Finding(report, step=lambda: _write_gap(run.ws, group_id)))
    return findings


def _write_gap(ws: Workspace, group_id: str) -> bool:
    project = ws.store.read().project(group_id)
    lines = project.audit_gaps
    if not lines:
        return True
    _set_gaps(ws, group_id, [])
    for index, line in enumerate(lines):
        try:
            fields = {k: v for k, v in line.items() if k not in ("event", "ts")}
            ws.audit.append(str(line["event"]), **fields, late=True)
        except DevclawError:
            _set_gaps(ws, group_id, lines[index:])
            return False
    return True


def _set_gaps(ws: Workspace, group_id: str, lines: list[dict[str, Any]]) -> None:
    def change(state: ProjectsFile) -> ProjectsFile:
        project = state.project(group_id).model_copy(update={"audit_gaps": lines})
        return state.model_copy(update={"projects": {**state.projects, group_id: project}})

    ws.store.update(change)


def _check_slot(c: _Slot, grace: list[GraceWorker]) -> list[_Finding]:
    # What the tracker says about a worker's issue decides first: a worker whose issue is gone, closed or
    # moved is wrong whatever its session looks like, and freeing it once is the whole repair.
    if c.view is not None and c.view.error is None:
        found = _worker_vs_tracker(c)
        if found is not None:
            return [found]
    findings = [found for check in CHECKS if (found := check(c)) is not None]
    left = c.grace_left()
    if c.worker.active and left is not None:
        grace.append(
            GraceWorker(
                project=c.project.name,
                group_id=c.group_id,
                role=c.spec.name,
                slot=c.slot,
                issue_id=c.worker.issue_id,
                session_id=c.worker.session_id,
                minutes_left=round(left, 2),
            )
        )
    return findings


def _future_start(c: _Slot) -> _Finding | None:
    started = parse_time(c.worker.start_time)
    if not c.worker.active or started is None or started <= c.run.now:
        return None
    message = (
        f"{c.who} has a start time in the future ({c.worker.start_time}); it is treated as now, and "
        "autoFix sets it to now"
    )
    report = c.report("future_start_time", "warning", message)
    return _Finding(report, c.plan(report, c.worker.model_copy(update={"start_time": c.run.ws.now_iso()})))


def _active_no_session(c: _Slot) -> _Finding | None:
    if not c.worker.active or c.worker.session_id or c.grace_left() is not None:
        return None
    report = c.report("active_no_session", "critical", f"{c.who} is active but has no session")
    return _release(c, report, forget_session=False)


def _zombie_session(c: _Slot) -> _Finding | None:
    worker = c.worker
    if not worker.active or not worker.session_id or c.run.sessions is None or c.grace_left() is not None:
        return None
    if worker.session_id in c.run.sessions:
        return None
    report = c.report(
        "zombie_session", "critical", f"{c.who}: session {worker.session_id} is not among the live sessions"
    )
    return _release(c, report, forget_session=True)


def _stale_worker(c: _Slot) -> _Finding | None:
    hours = c.hours_active()
    if not c.worker.active or hours is None or hours <= c.run.settings.stale_hours:
        return None
    report = c.report("stale_worker", "warning", f"{c.who} has been active for {duration_text(hours * 3600)}")
    report.hours_active = hours
    return _Finding(report)


def _inactive_with_issue(c: _Slot) -> _Finding | None:
    if c.worker.active or c.worker.issue_id is None:
        return None
    report = c.report("inactive_with_issue", "warning", f"{c.who} is idle but still holds issue {c.worker.issue_id}")
    return _Finding(report, c.plan(report, c.worker.model_copy(update={"issue_id": None})))


def _active_without_issue(c: _Slot) -> _Finding | None:
    if not c.worker.active or c.worker.issue_id is not None:
        return None
    report = c.report("active_without_issue", "critical", f"{c.who} is active but holds no valid issue")
    return _Finding(report, c.plan(report, c.freed()))


CHECKS: tuple[Callable[[_Slot], _Finding | None], ...] = (
    _future_start,
    _active_no_session,
    _zombie_session,
    _stale_worker,
    _inactive_with_issue,
    _active_without_issue,
)


def _release(c: _Slot, report: HealthIssue, *, forget_session: bool) -> _Finding:
    """Put the worker's issue back in its queue and free the worker. If the tracker cannot be reached,
    change nothing: a freed worker with its issue still on Doing would be invisible work."""
    issue_id = c.worker.issue_id
    if issue_id is None:
        return _Finding(report, c.plan(report, c.freed(forget_session=forget_session)))
    if c.view is not None and c.view.error is not None:
        report.fixed = False
        report.message += "; not fixed: the tracker could not be reached in this run"
        return _Finding(report)
    return _Finding(report, step=lambda: _revert_and_free(c, report, forget_session))


def _revert_and_free(c: _Slot, report: HealthIssue, forget_session: bool) -> bool:
    assert c.worker.issue_id is not None
    try:
        tracker = c.run.ws.tracker(c.project)
        issue = tracker.get_issue(c.worker.issue_id)
    except NotFoundError:
        issue = None  # the issue is gone: nothing to put back
    except DevclawError as exc:
        report.label_revert_failed = True
        report.message += f"; not fixed, the label could not be reverted: {exc.message}"
        return False
    move = None
    workflow = c.project.effective_workflow()
    if issue is not None and issue.label == c.spec.active_label and len(workflow.states_on(issue.labels)) == 1:
        move = Move(issue, workflow.next(issue.label, _revert_event(c.spec, c.project, issue.id, c.worker)))
    try:
        apply(c.run.ws, c.plan(report, c.freed(forget_session=forget_session), move))
    except DevclawError as exc:
        report.label_revert_failed = True
        report.message += f"; not fixed, the label could not be reverted: {exc.message}"
        return False
    report.label_reverted = move is not None
    return True


def _revert_event(spec: RoleSpec, project: Project, issue_id: int, worker: Worker | None = None) -> Event:
    """Work goes back to the queue it came from: dev work picked up from To Improve (sent back by QA or a
    review), or that failed QA before, to To Improve; the rest to its start queue."""
    if spec.revert_after_fail is None:
        return spec.revert_event
    back = project.effective_workflow().next(spec.active_label, spec.revert_after_fail)
    if (worker is not None and worker.picked_from == back) or project.qa_fail_count(issue_id) > 0:
        return spec.revert_after_fail
    return spec.revert_event


def _worker_vs_tracker(c: _Slot) -> _Finding | None:
    issue_id = c.worker.issue_id
    assert c.view is not None and c.view.tracker is not None
    if not c.worker.active or issue_id is None:
        return None
    listed = c.view.active[c.spec.active_label].get(issue_id)
    if listed is not None:
        if len(c.project.effective_workflow().states_on(listed.labels)) > 1:
            return _Finding(_conflict(c.project, c.group_id, listed))
        return None
    try:
        issue = c.view.get_issue(issue_id, c.worker.start_time)
    except NotFoundError:
        report = c.report("issue_gone", "critical", f"{c.who} works on issue #{issue_id}, which was deleted")
        return _Finding(report, c.plan(report, c.freed()))
    except DevclawError as exc:
        message = f"{c.who} works on issue #{issue_id}, which could not be read ({exc.message}); left alone"
        return _Finding(c.report("tracker_unreachable", "unknown", message))
    if issue.label == c.spec.active_label and issue.state == "open":
        return None  # picked up after the lists were read: where it should be
    if issue.state == "closed":
        report = c.report("issue_closed", "critical", f"{c.who} works on issue #{issue_id}, which was closed")
        return _Finding(report, c.plan(report, c.freed()))
    if len(c.project.effective_workflow().states_on(issue.labels)) > 1:
        return _Finding(_conflict(c.project, c.group_id, issue))
    message = (
        f'{c.who} works on issue #{issue_id}, which is on "{issue.label or "no workflow label"}", not '
        f'"{c.spec.active_label}": someone moved it; the worker is freed and the label left as they set it'
    )
    report = c.report("label_mismatch", "critical", message)
    return _Finding(report, c.plan(report, c.freed()))


def _conflict(project: Project, group_id: str, issue: Issue) -> HealthIssue:
    workflow = project.effective_workflow()
    labels = ", ".join(f'"{workflow.label(state)}"' for state in workflow.states_on(issue.labels))
    return HealthIssue(
        type="conflicting_labels",
        severity="warning",
        project=project.name,
        group_id=group_id,
        issue_id=issue.id,
        message=f"Issue #{issue.id} on {project.name} carries several workflow labels ({labels}); a person must "
        "choose one. devclaw leaves it and its worker alone until then",
    )


def _label_findings(
    run: _Run, state: ProjectsFile, group_id: str, project: Project, view: _TrackerView
) -> list[_Finding]:
    findings: list[_Finding] = []
    claimed = _claimed(state).get(project.tracker.identity(), set())
    mine = {w.issue_id for _, _, w in project.every_worker() if w.active}
    seen: set[int] = set()
    workflow = project.effective_workflow()
    for label, issues in view.active.items():
        role = workflow.active_role(label)
        assert role is not None
        spec = workflow.role(role)
        for issue in issues.values():
            if issue.id in mine or issue.id in claimed or issue.id in seen:
                continue
            seen.add(issue.id)
            if len(workflow.states_on(issue.labels)) > 1:
                findings.append(_Finding(_conflict(project, group_id, issue)))
                continue
            findings.append(_orphan(run.ws, group_id, project, spec, issue))
    return findings


def _orphan(ws: Workspace, group_id: str, project: Project, spec: RoleSpec, issue: Issue) -> _Finding:
    target = project.effective_workflow().next(spec.active_label, _revert_event(spec, project, issue.id))
    message = (
        f'Issue #{issue.id} on {project.name} is on "{spec.active_label}" but no {spec.title} worker tracks '
        f'it; it goes back to "{target}"'
    )
    report = HealthIssue(
        type="orphaned_label",
        severity="critical",
        project=project.name,
        group_id=group_id,
        role=spec.name,
        message=message,
        issue_id=issue.id,
    )
    plan = _issue_plan(group_id, project, report, Move(issue, target), role=spec.name)
    return _Finding(report, step=lambda: _unless_moved(ws, plan))


def _issue_plan(group_id: str, project: Project, report: HealthIssue, move: Move, **fields: Any) -> Plan[HealthIssue]:
    """A fix that moves an issue no worker holds, with its ``health_fix`` line."""
    record = Record(
        "health_fix",
        {"project": project.name, "groupId": group_id, **fields, "type": report.type, "issue": move.issue.id,
         "labelTransition": move.transition},
    )  # fmt: skip
    return Plan(tool="session_health", group_id=group_id, result=report, move=move, records=[record])


def _unless_moved(ws: Workspace, plan: Plan[HealthIssue]) -> bool:
    """Apply ``plan`` if its issue is still as the scan saw it (the lists were read before the lock)."""
    assert plan.move is not None
    report, move = plan.result, plan.move
    try:
        issue = ws.tracker(ws.store.read().project(plan.group_id)).get_issue(move.issue.id)
    except DevclawError as exc:
        report.label_revert_failed = True
        report.message += f"; not fixed, the issue could not be read again: {exc.message}"
        return False
    if issue.labels != move.issue.labels or issue.state != move.issue.state:
        report.message += "; left alone: it moved since the scan"
        report.type = MOVED_SINCE_SCAN
        return False
    try:
        apply(ws, replace(plan, move=replace(move, issue=issue)))
    except DevclawError as exc:
        report.label_revert_failed = True
        report.message += f"; not fixed, the label could not be moved: {exc.message}"
        return False
    report.label_reverted = True
    return True


# --- the report ----------------------------------------------------------------------------------------


def _report(
    ws: Workspace,
    params: SessionHealthInput,
    check_tracker: bool,
    projects: int,
    findings: list[_Finding],
    grace: list[GraceWorker],
) -> SessionHealthResult:
    issues = [finding.report for finding in findings]
    fixes = sum(1 for issue in issues if issue.fixed)
    note = None
    if params.active_sessions is None:
        note = (
            "Zombie detection skipped: no activeSessions given. Pass the session keys from sessions_list; "
            "unknown is not dead."
        )
    fixed = [
        {"type": i.type, "groupId": i.group_id, "role": i.role, "issue": i.issue_id}
        | ({"slot": i.slot} if i.slot is not None else {})
        for i in issues
        if i.fixed
    ]
    record: dict[str, Any] = {
        "projectsScanned": projects,
        "issuesFound": len(issues),
        "fixesApplied": fixes,
        "autoFix": params.auto_fix,
        "activeSessionsProvided": params.active_sessions is not None,
        "trackerChecked": check_tracker,
        "fixed": fixed,
        "inGrace": len(grace),
    }
    audit_error = None
    try:
        ws.audit.append("health_check", **record)
    except DevclawError as exc:
        audit_error = f"{exc.message}. The health run's summary line was not written"
    return SessionHealthResult(
        success=True,
        healthy=not issues,
        issues_found=len(issues),
        fixes_applied=fixes,
        issues=issues,
        tracker_checked=check_tracker,
        in_grace=grace,
        note=note,
        audit_error=audit_error,
    )


SESSION_HEALTH = Tool("session_health", SessionHealthInput, session_health, mutating=True)
