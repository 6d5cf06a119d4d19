"""session_health: find workers whose state disagrees with reality, and with autoFix repair them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import Field

from devclaw.errors import DevclawError, NotFoundError
from devclaw.state import HealthSettings, Project, ProjectsFile, Worker
from devclaw.tools.base import Tool, ToolInput, ToolResult
from devclaw.tools.common import issue_number, role_name
from devclaw.workflow import ACTIVE_LABEL, ROLES, Event, Role, next_label
from devclaw.workspace import Workspace

Severity = Literal["critical", "warning"]


class SessionHealthInput(ToolInput):
    auto_fix: bool = Field(default=False, description="Repair what is found (revert labels, free workers).")
    active_sessions: list[str] | None = Field(
        default=None,
        description="Keys or ids of the live sessions, from sessions_list. Without them no worker is "
        "declared dead: unknown is not dead.",
    )


class HealthIssue(ToolResult):
    type: str
    severity: Severity
    project: str
    group_id: str
    role: Role
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


@dataclass
class _Finding:
    report: HealthIssue
    fix: Callable[[_Context, HealthIssue], None] | None
    context: _Context


def session_health(ws: Workspace, params: SessionHealthInput) -> SessionHealthResult:
    """Check every project's DEV and QA workers against the live sessions: active with no session
    (critical), zombie whose session is not in activeSessions (critical), stale worker active over 2 h
    (warning), idle worker still holding an issue (warning). With autoFix, zombies and sessionless workers
    are freed and their issue goes back to its queue (Doing -> To Do, Testing -> To Test); idle workers
    drop the issue. Pass activeSessions from sessions_list: without it no worker is declared dead."""
    if not params.auto_fix:
        state = ws.store.read()
        return _report(ws, params, len(state.projects), _scan(ws, state, params))
    with ws.store.locked() as state:
        findings = _scan(ws, state, params)
        for finding in findings:
            if finding.fix is not None:
                finding.fix(finding.context, finding.report)
        if any(finding.report.fixed for finding in findings):
            ws.store.write(state)
        return _report(ws, params, len(state.projects), findings)


def _scan(ws: Workspace, state: ProjectsFile, params: SessionHealthInput) -> list[_Finding]:
    sessions = frozenset(params.active_sessions) if params.active_sessions else None
    now = ws.clock()
    findings: list[_Finding] = []
    for group_id, project in state.projects.items():
        for role in ROLES:
            context = _Context(ws, group_id, project, role, project.worker(role), sessions, state.health, now)
            for check in CHECKS:
                found = check(context)
                if found is not None:
                    findings.append(_Finding(found[0], found[1], context))
    return findings


Check = Callable[[_Context], tuple[HealthIssue, Callable[[_Context, HealthIssue], None] | None] | None]


def _active_no_session(c: _Context) -> tuple[HealthIssue, Callable[[_Context, HealthIssue], None]] | None:
    if not c.worker.active or c.worker.session_id or c.in_grace():
        return None
    message = f"{role_name(c.role)} worker on {c.project.name} is active but has no session"
    return c.issue("active_no_session", "critical", message), _release_worker


def _zombie_session(c: _Context) -> tuple[HealthIssue, Callable[[_Context, HealthIssue], None]] | None:
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


def _inactive_with_issue(c: _Context) -> tuple[HealthIssue, Callable[[_Context, HealthIssue], None]] | None:
    if c.worker.active or c.worker.issue_id is None:
        return None
    message = f"{role_name(c.role)} worker on {c.project.name} is idle but still holds issue {c.worker.issue_id}"
    return c.issue("inactive_with_issue", "warning", message), _clear_issue


CHECKS: tuple[Check, ...] = (_active_no_session, _zombie_session, _stale_worker, _inactive_with_issue)


def _release_worker(c: _Context, report: HealthIssue) -> None:
    """Put the worker's issue back in its queue, then free the worker. If the tracker cannot be
    reached, change nothing: a freed worker with its issue still on Doing would be invisible work."""
    issue_id = issue_number(c.worker.issue_id)
    if issue_id is not None:
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
    tracker.move_issue(issue, next_label(issue.label, Event.REVERT))
    return True


def _clear_issue(c: _Context, report: HealthIssue) -> None:
    c.worker.issue_id = None
    report.fixed = True


def _report(ws: Workspace, params: SessionHealthInput, projects: int, findings: list[_Finding]) -> SessionHealthResult:
    issues = [finding.report for finding in findings]
    fixes = sum(1 for issue in issues if issue.fixed)
    note = None
    if not params.active_sessions:
        note = (
            "Zombie detection skipped: no activeSessions given. Pass the session keys from sessions_list; "
            "unknown is not dead."
        )
    ws.audit.append(
        "health_check",
        projectsScanned=projects,
        issuesFound=len(issues),
        fixesApplied=fixes,
        autoFix=params.auto_fix,
        activeSessionsProvided=params.active_sessions is not None,
    )
    return SessionHealthResult(
        success=True,
        healthy=not issues,
        issues_found=len(issues),
        fixes_applied=fixes,
        issues=issues,
        note=note,
    )


SESSION_HEALTH = Tool("session_health", SessionHealthInput, session_health, mutating=True)
