"""session_health: find where worker state, live sessions and tracker labels disagree, and repair it.

Two kinds of checks (docs/HEALTH.md describes each one, its cause, its fix and what stays for a human):

- worker checks read only projects.json and the session list: ``active_no_session``, ``zombie_session``,
  ``stale_worker``, ``inactive_with_issue``, ``active_without_issue``. They make no tracker request
  unless a fix has to put a label back.
- tracker checks compare each project's Doing and Testing issues with its workers: ``issue_gone``,
  ``issue_closed``, ``label_mismatch``, ``orphaned_label``. They cost two list requests per project plus
  one read per worker whose issue is not where it should be, so they run only with ``autoFix`` or
  ``checkTracker``: a plain report stays request-free.

Unknown is not dead: a tracker that cannot be read gives one ``unknown`` finding for its project and no
fix there that needs the tracker; without ``activeSessions`` no session is judged at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pydantic import Field

from devclaw.errors import DevclawError, NotFoundError
from devclaw.faults import checkpoint
from devclaw.state import HealthSettings, Project, ProjectsFile, Worker
from devclaw.tools.base import Tool, ToolInput, ToolResult
from devclaw.tools.common import issue_number, role_name
from devclaw.trackers.base import Issue, Tracker
from devclaw.workflow import ACTIVE_LABEL, ROLES, Event, Label, Role, next_label
from devclaw.workspace import Workspace

Severity = Literal["critical", "warning", "unknown"]


class SessionHealthInput(ToolInput):
    auto_fix: bool = Field(default=False, description="Repair what is found (revert labels, free workers).")
    active_sessions: list[str] | None = Field(
        default=None,
        description="Keys or ids of the live sessions, from sessions_list. Without them no worker is "
        "declared dead: unknown is not dead.",
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
    message: str
    session_id: str | None = None
    hours_active: float | None = None
    issue_id: int | None = None
    fixed: bool | None = None
    label_reverted: bool | None = None
    label_revert_failed: bool | None = None


class SessionHealthResult(ToolResult):
    success: bool
    healthy: bool
    issues_found: int
    fixes_applied: int
    issues: list[HealthIssue]
    tracker_checked: bool
    note: str | None = None


@dataclass
class _Context:
    ws: Workspace
    group_id: str
    project: Project
    role: Role
    worker: Worker
    live_sessions: frozenset[str] | None
    settings: HealthSettings
    now: datetime
    #: The project's tracker could not be read in this run: fixes that need it are not tried.
    tracker_unknown: bool = False

    def hours_active(self) -> float | None:
        if not self.worker.start_time:
            return None
        try:
            started = datetime.fromisoformat(self.worker.start_time.replace("Z", "+00:00"))
        except ValueError:
            return None
        return round((self.now - started).total_seconds() / 3600, 2)

    def in_grace(self) -> bool:
        hours = self.hours_active()
        return hours is not None and hours * 60 < self.settings.grace_minutes

    def issue(self, type_: str, severity: Severity, message: str) -> HealthIssue:
        return HealthIssue(
            type=type_,
            severity=severity,
            project=self.project.name,
            group_id=self.group_id,
            role=self.role,
            message=message,
            session_id=self.worker.session_id,
            issue_id=issue_number(self.worker.issue_id),
        )


Fix = Callable[[_Context, HealthIssue], None]


@dataclass
class _Finding:
    report: HealthIssue
    fix: Fix | None
    context: _Context


@dataclass
class _TrackerView:
    """One project's open Doing and Testing issues, read once per run."""

    tracker: Tracker
    active: dict[Label, dict[int, Issue]] = field(default_factory=dict)

    @classmethod
    def read(cls, tracker: Tracker) -> _TrackerView:
        view = cls(tracker)
        for role in ROLES:
            label = ACTIVE_LABEL[role]
            view.active[label] = {issue.id: issue for issue in tracker.list_issues(label)}
        return view


def session_health(ws: Workspace, params: SessionHealthInput) -> SessionHealthResult:
    """Check every project's DEV and QA workers against the live sessions and the tracker. Worker checks:
    active with no session (critical), zombie whose session is not in activeSessions (critical), stale
    worker active over the stale threshold (warning), idle worker still holding an issue (warning), active
    worker without an issue (critical). Tracker checks (with autoFix, or checkTracker): the worker's issue
    was deleted (issue_gone) or closed (issue_closed) or moved off Doing/Testing by someone (label_mismatch),
    and issues on Doing/Testing that no worker tracks (orphaned_label). With autoFix: dead workers are freed
    and their issue goes back to its queue (Doing -> To Do, or To Improve after a QA fail; Testing -> To
    Test); workers whose issue is gone, closed or moved are freed and the label left alone; orphaned labels
    go back to their queue. A tracker that cannot be reached is reported as unknown and nothing that needs it
    is fixed. Pass activeSessions from sessions_list: without it no worker is declared dead."""
    check_tracker = params.auto_fix if params.check_tracker is None else params.check_tracker
    if not params.auto_fix:
        state = ws.store.read()
        return _report(ws, params, check_tracker, len(state.projects), _scan(ws, state, params, check_tracker))
    with ws.store.locked() as state:
        findings = _scan(ws, state, params, check_tracker)
        checkpoint("after_validation")
        for finding in findings:
            if finding.fix is not None:
                finding.fix(finding.context, finding.report)
        checkpoint("after_tracker_write")
        if any(finding.report.fixed for finding in findings):
            ws.store.write(state)
        checkpoint("after_state_commit")
        return _report(ws, params, check_tracker, len(state.projects), findings)


def _scan(ws: Workspace, state: ProjectsFile, params: SessionHealthInput, check_tracker: bool) -> list[_Finding]:
    sessions = frozenset(params.active_sessions) if params.active_sessions else None
    now = ws.clock()
    findings: list[_Finding] = []
    for group_id, project in state.projects.items():
        contexts = [
            _Context(ws, group_id, project, role, project.worker(role), sessions, state.health, now) for role in ROLES
        ]
        view = None
        if check_tracker:
            view, unknown = _read_tracker(contexts[0])
            if unknown is not None:
                findings.append(unknown)
                for context in contexts:
                    context.tracker_unknown = True
        for context in contexts:
            findings.extend(_check_worker(context, view))
        if view is not None:
            findings.extend(_orphaned_labels(contexts, view))
    return findings


def _read_tracker(c: _Context) -> tuple[_TrackerView | None, _Finding | None]:
    try:
        return _TrackerView.read(c.ws.tracker(c.project)), None
    except DevclawError as exc:
        message = (
            f"The tracker of {c.project.name} could not be read ({exc.message}); its labels were not checked "
            "and nothing that needs the tracker was fixed. Unknown is not dead: run session_health again later."
        )
        report = HealthIssue(
            type="tracker_unreachable", severity="unknown", project=c.project.name, group_id=c.group_id, message=message
        )
        return None, _Finding(report, None, c)


def _check_worker(c: _Context, view: _TrackerView | None) -> list[_Finding]:
    # What the tracker says about a worker's issue decides first: a worker whose issue is gone, closed or
    # moved is wrong whatever its session looks like, and freeing it once is the whole repair.
    if view is not None:
        found = _worker_vs_tracker(c, view)
        if found is not None:
            return [found]
    findings = []
    for check in CHECKS:
        result = check(c)
        if result is not None:
            findings.append(_Finding(result[0], result[1], c))
    return findings


Check = Callable[[_Context], tuple[HealthIssue, Fix | None] | None]


def _active_no_session(c: _Context) -> tuple[HealthIssue, Fix] | None:
    if not c.worker.active or c.worker.session_id or c.in_grace():
        return None
    message = f"{role_name(c.role)} worker on {c.project.name} is active but has no session"
    return c.issue("active_no_session", "critical", message), _release_worker


def _zombie_session(c: _Context) -> tuple[HealthIssue, Fix] | None:
    worker = c.worker
    if not worker.active or not worker.session_id or c.live_sessions is None or c.in_grace():
        return None
    if worker.session_id in c.live_sessions:
        return None
    message = f"{role_name(c.role)} session {worker.session_id} on {c.project.name} is not among the live sessions"
    return c.issue("zombie_session", "critical", message), _release_dead_session


def _stale_worker(c: _Context) -> tuple[HealthIssue, None] | None:
    hours = c.hours_active()
    if not c.worker.active or hours is None or hours <= c.settings.stale_hours:
        return None
    message = f"{role_name(c.role)} worker on {c.project.name} has been active for {hours:g} h"
    report = c.issue("stale_worker", "warning", message)
    report.hours_active = hours
    return report, None


def _inactive_with_issue(c: _Context) -> tuple[HealthIssue, Fix] | None:
    if c.worker.active or c.worker.issue_id is None:
        return None
    message = f"{role_name(c.role)} worker on {c.project.name} is idle but still holds issue {c.worker.issue_id}"
    return c.issue("inactive_with_issue", "warning", message), _clear_issue


def _active_without_issue(c: _Context) -> tuple[HealthIssue, Fix] | None:
    if not c.worker.active or issue_number(c.worker.issue_id) is not None:
        return None
    message = (
        f"{role_name(c.role)} worker on {c.project.name} is active but holds no valid issue ({c.worker.issue_id!r})"
    )
    return c.issue("active_without_issue", "critical", message), _deactivate


CHECKS: tuple[Check, ...] = (
    _active_no_session,
    _zombie_session,
    _stale_worker,
    _inactive_with_issue,
    _active_without_issue,
)


def _worker_vs_tracker(c: _Context, view: _TrackerView) -> _Finding | None:
    issue_id = issue_number(c.worker.issue_id)
    if not c.worker.active or issue_id is None or issue_id in view.active[ACTIVE_LABEL[c.role]]:
        return None
    who = f"{role_name(c.role)} worker on {c.project.name}"
    try:
        issue = view.tracker.get_issue(issue_id)
    except NotFoundError:
        return _Finding(c.issue("issue_gone", "critical", f"{who} works on issue #{issue_id}, which was deleted"),
                        _deactivate, c)  # fmt: skip
    except DevclawError as exc:
        message = f"{who} works on issue #{issue_id}, which could not be read ({exc.message}); left alone"
        return _Finding(c.issue("tracker_unreachable", "unknown", message), None, c)
    if issue.state == "closed":
        return _Finding(c.issue("issue_closed", "critical", f"{who} works on issue #{issue_id}, which was closed"),
                        _deactivate, c)  # fmt: skip
    message = (
        f'{who} works on issue #{issue_id}, which is on "{issue.label or "no workflow label"}", not '
        f'"{ACTIVE_LABEL[c.role]}": someone moved it; the worker is freed and the label left as they set it'
    )
    return _Finding(c.issue("label_mismatch", "critical", message), _deactivate, c)


def _orphaned_labels(contexts: list[_Context], view: _TrackerView) -> list[_Finding]:
    findings = []
    for c in contexts:
        label = ACTIVE_LABEL[c.role]
        tracked = issue_number(c.worker.issue_id) if c.worker.active else None
        for issue in view.active[label].values():
            if issue.id == tracked:
                continue
            target = next_label(label, _revert_event(c, issue.id))
            message = (
                f'Issue #{issue.id} on {c.project.name} is on "{label}" but no {role_name(c.role)} worker tracks '
                f'it; it goes back to "{target}"'
            )
            report = HealthIssue(type="orphaned_label", severity="critical", project=c.project.name,
                                 group_id=c.group_id, role=c.role, message=message, issue_id=issue.id)  # fmt: skip
            findings.append(_Finding(report, _orphan_fix(view.tracker, issue, target), c))
    return findings


def _orphan_fix(tracker: Tracker, issue: Issue, target: Label) -> Fix:
    def fix(c: _Context, report: HealthIssue) -> None:
        try:
            tracker.move_issue(issue, target)
        except DevclawError as exc:
            report.label_revert_failed, report.fixed = True, False
            report.message += f"; not fixed, the label could not be moved: {exc.message}"
            return
        report.label_reverted = report.fixed = True

    return fix


def _revert_event(c: _Context, issue_id: int) -> Event:
    """Dev work that already failed QA goes back to To Improve, the rest to its start queue."""
    if c.role != "dev":
        return Event.REVERT
    failed = c.ws.audit.count("task_complete", groupId=c.group_id, issue=issue_id, role="qa", result="fail")
    return Event.REVERT_FIX if failed else Event.REVERT


def _release_worker(c: _Context, report: HealthIssue) -> None:
    """Put the worker's issue back in its queue, then free the worker. If the tracker cannot be
    reached, change nothing: a freed worker with its issue still on Doing would be invisible work."""
    issue_id = issue_number(c.worker.issue_id)
    if issue_id is not None:
        if c.tracker_unknown:
            report.fixed = False
            report.message += "; not fixed: the tracker could not be reached in this run"
            return
        try:
            report.label_reverted = _revert_label(c, issue_id)
        except DevclawError as exc:
            report.label_revert_failed, report.fixed = True, False
            report.message += f"; not fixed, the label could not be reverted: {exc.message}"
            return
    c.worker.deactivate()
    report.fixed = True


def _release_dead_session(c: _Context, report: HealthIssue) -> None:
    """As ``_release_worker``, and forget the dead session so the next pickup spawns a new one."""
    _release_worker(c, report)
    if report.fixed:
        c.worker.session_id = None


def _revert_label(c: _Context, issue_id: int) -> bool:
    tracker = c.ws.tracker(c.project)
    try:
        issue = tracker.get_issue(issue_id)
    except NotFoundError:
        return False  # the issue is gone: nothing to put back
    if issue.label != ACTIVE_LABEL[c.role]:
        return False  # someone already moved it; leave their decision alone
    tracker.move_issue(issue, next_label(issue.label, _revert_event(c, issue_id)))
    return True


def _deactivate(c: _Context, report: HealthIssue) -> None:
    c.worker.deactivate()
    report.fixed = True


def _clear_issue(c: _Context, report: HealthIssue) -> None:
    c.worker.issue_id = None
    report.fixed = True


def _report(
    ws: Workspace, params: SessionHealthInput, check_tracker: bool, projects: int, findings: list[_Finding]
) -> SessionHealthResult:
    issues = [finding.report for finding in findings]
    fixes = sum(1 for issue in issues if issue.fixed)
    note = None
    if not params.active_sessions:
        note = (
            "Zombie detection skipped: no activeSessions given. Pass the session keys from sessions_list; "
            "unknown is not dead."
        )
    fixed = [{"type": i.type, "groupId": i.group_id, "role": i.role, "issue": i.issue_id} for i in issues if i.fixed]
    ws.audit.append(
        "health_check",
        projectsScanned=projects,
        issuesFound=len(issues),
        fixesApplied=fixes,
        autoFix=params.auto_fix,
        activeSessionsProvided=params.active_sessions is not None,
        trackerChecked=check_tracker,
        fixed=fixed,
    )
    return SessionHealthResult(
        success=True,
        healthy=not issues,
        issues_found=len(issues),
        fixes_applied=fixes,
        issues=issues,
        tracker_checked=check_tracker,
        note=note,
    )


SESSION_HEALTH = Tool("session_health", SessionHealthInput, session_health, mutating=True)
