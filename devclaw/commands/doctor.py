"""``devclaw doctor``: a preflight of the workspace and every project, as a readable report or JSON.

Checks: projects.json parses and validates; the audit log can be appended to; per project, the tracker
is reachable and accepts the token, the workflow labels of its workflow exist, and ``repo`` is a git checkout
whose ``origin`` is the tracker's project. Exit 0 when nothing is an error (warnings allowed), 1 otherwise.

The label check goes through ``Tracker.ensure_labels`` (one list request, the only read of labels the
Protocol has): a missing label is created, as ``devclaw project add`` would, and reported as a warning.
Nothing else is written: no audit line, no state.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from dataclasses import asdict, dataclass
from typing import Any, Literal

from devclaw.cli import print_json
from devclaw.errors import DevclawError
from devclaw.redact import redact
from devclaw.state import Project, ProjectsFile
from devclaw.trackers import DEFAULT_TOKEN_ENV
from devclaw.workflow import Label
from devclaw.workspace import Workspace

Status = Literal["ok", "warning", "error"]
GIT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Finding:
    scope: str  # "workspace", or the project's group id
    check: str
    status: Status
    message: str


def register(sub: Any) -> None:
    doctor = sub.add_parser("doctor", help="check the workspace and every project's tracker, labels and repo")
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")
    doctor.set_defaults(handler=run_doctor)


def run_doctor(ws: Workspace, args: argparse.Namespace) -> int:
    ws.require_existing()
    findings, names = diagnose(ws)
    failed = any(finding.status == "error" for finding in findings)
    if args.json:
        print_json({"ok": not failed, "workspace": str(ws.root), "findings": [asdict(f) for f in findings]})
    else:
        print(render(ws, findings, names))
    return 1 if failed else 0


def diagnose(ws: Workspace) -> tuple[list[Finding], dict[str, str]]:
    """Every finding, and the project names by group id (for the report)."""
    findings = [_audit_writable(ws), *_loop_checks(ws)]
    try:
        state = ws.store.read()
    except DevclawError as exc:
        findings.insert(
            0, Finding("workspace", "projects.json", "error", f"{exc.message} (try `devclaw state rebuild`)")
        )
        return findings, {}
    exists = ws.store.path.exists()
    count = f"{len(state.projects)} project(s)"
    message = f"valid, {count}" if exists else "missing: no project registered yet (devclaw project add)"
    findings.insert(0, Finding("workspace", "projects.json", "ok" if exists else "warning", message))
    findings += _shared_trackers(state)
    findings.append(_audit_whole(ws))
    for group_id, project in state.projects.items():
        findings += _tracker_checks(ws, group_id, project)
        findings.append(_repo_check(group_id, project))
        findings += _state_checks(group_id, project)
    return findings, {group_id: project.name for group_id, project in state.projects.items()}


def _shared_trackers(state: ProjectsFile) -> list[Finding]:
    """Two projects on one tracker project undo each other's work (each sees the other's as orphans)."""
    by_tracker: dict[tuple[str, str, str], list[str]] = {}
    for group_id, project in state.projects.items():
        by_tracker.setdefault(project.tracker.identity(), []).append(group_id)
    return [
        Finding(
            groups[1],
            "tracker",
            "error",
            f"{identity[0]} {identity[2]!r} is also the tracker of project(s) "
            f"{', '.join(groups[:1] + groups[2:])}: give each project its own (devclaw project edit --path)",
        )
        for identity, groups in by_tracker.items()
        if len(groups) > 1
    ]


def _audit_whole(ws: Workspace) -> Finding:
    try:
        for _ in ws.audit.lines():
            pass  # a diagnostic may read the whole log; decisions never do
    except OSError as exc:
        return Finding("workspace", "audit lines", "error", f"{ws.audit.path} cannot be read: {exc.strerror or exc}")
    torn = ws.audit.skipped_lines
    if torn:
        return Finding(
            "workspace",
            "audit lines",
            "warning",
            f"{torn} torn or unreadable line(s) skipped by readers "
            "(a full disk or a crash cut them); every other line is whole",
        )
    return Finding("workspace", "audit lines", "ok", "every line is whole")


def _state_checks(group_id: str, project: Project) -> list[Finding]:
    found = []
    if project.intents:
        issues = ", ".join(f"#{i.issue_id}" for i in project.intents)
        found.append(
            Finding(
                group_id,
                "pending moves",
                "warning",
                f"{len(project.intents)} move(s) whose reply "
                f"was lost ({issues}): the next call or session_health settles them",
            )
        )
    if project.audit_gaps:
        found.append(
            Finding(
                group_id,
                "audit gap",
                "warning",
                f"{len(project.audit_gaps)} audit line(s) could not "
                "be written when their change was made: session_health with autoFix writes them",
            )
        )
    return found


def _audit_writable(ws: Workspace) -> Finding:
    path = ws.audit.path
    try:
        if path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))  # opened for appending, nothing written
        elif not os.access(path.parent, os.W_OK):
            raise PermissionError(f"cannot create files in {path.parent}")
    except OSError as exc:
        return Finding("workspace", "audit log", "error", f"{path} is not writable: {exc.strerror or exc}")
    return Finding("workspace", "audit log", "ok", f"writable ({len(ws.audit.files())} file(s) incl. rotated)")


def _loop_checks(ws: Workspace) -> list[Finding]:
    """The work loop as the plugin last wrote it (memory/loop.json): on/off, last and next tick, runs."""
    from devclaw.tools.loop_status import read_loop_status

    try:
        loop = read_loop_status(ws)
    except DevclawError as exc:
        return [Finding("workspace", "work loop", "error", exc.message)]
    if not loop.enabled:
        return [Finding("workspace", "work loop", "ok", "off (manual mode: the orchestrator calls the tools)")]
    last = loop.last_tick
    told = (
        "no tick yet"
        if last is None
        else (
            f"last tick {last.at} {'ok' if last.ok else 'FAILED: ' + (last.error or '?')}, "
            f"{last.dispatches or 0} dispatched, {last.fixes or 0} fixed"
        )
    )
    status: Status = "ok" if loop.running and (last is None or last.ok) else "warning"
    state = "running" if loop.running else "not running (loop.json is stale: is the gateway up?)"
    findings = [Finding("workspace", "work loop", status, f"on, {state}; {told}; next tick {loop.next_tick_at or '?'}")]
    model = (
        "allowed"
        if loop.model_override
        else "not allowed: workers run on the default model (set plugins.entries.devclaw.subagent.allowModelOverride)"
    )
    findings.append(Finding("workspace", "model override", "ok" if loop.model_override else "warning", model))
    channel = {
        True: "telegram loaded",
        False: "no telegram channel: announcements only on the audit log",
        None: "not looked up yet",
    }[loop.announce_channel]
    findings.append(
        Finding("workspace", "announce", "ok" if loop.announce_channel is not False else "warning", channel)
    )
    runs = ", ".join(f"{r.project or r.group_id} {r.role.upper()} #{r.issue_id}" for r in loop.in_flight) or "none"
    findings.append(Finding("workspace", "in flight", "ok", f"{len(loop.in_flight)} worker run(s): {runs}"))
    return findings


def _tracker_checks(ws: Workspace, group_id: str, project: Project) -> list[Finding]:
    provider = project.tracker.provider
    try:
        tracker = ws.tracker(project)
        tracker.list_issues(Label.DOING)
    except DevclawError as exc:
        return [Finding(group_id, "tracker", "error", exc.message)]
    has_token = provider in DEFAULT_TOKEN_ENV
    accepted = "reachable, token accepted" if has_token else "readable (the embedded tracker needs no token)"
    found = [Finding(group_id, "tracker", "ok", f"{provider} {tracker.path}: {accepted}")]
    try:
        created = tracker.ensure_labels()
    except DevclawError as exc:
        return [*found, Finding(group_id, "labels", "error", f"cannot list or create the labels: {exc.message}")]
    if created:
        found.append(
            Finding(
                group_id, "labels", "warning", f"{len(created)} were missing and were created: {', '.join(created)}"
            )
        )
    else:
        found.append(Finding(group_id, "labels", "ok", f"all {len(tracker.workflow.states)} workflow labels present"))
    return found


def _repo_check(group_id: str, project: Project) -> Finding:
    repo = project.repo
    if not repo:
        return Finding(group_id, "repo", "warning", "no repo configured: DEV done pulls nothing")
    inside = _git(repo, "rev-parse", "--is-inside-work-tree")
    if inside != "true":
        return Finding(group_id, "repo", "error", f"{repo} is not a git checkout")
    if project.tracker.provider == "local":
        return Finding(group_id, "repo", "ok", f"{repo} is a git checkout")
    url = _git(repo, "remote", "get-url", "origin")
    if url is None:
        return Finding(group_id, "repo", "error", f"{repo} has no origin remote")
    from devclaw.trackers.remote import path_from_remote

    found = path_from_remote(url)
    expected = project.tracker.path or ""
    if not expected or not (found == expected or found.endswith("/" + expected)):
        return Finding(group_id, "repo", "error", f"origin of {repo} is {redact(found)}, not the tracker's {expected}")
    return Finding(group_id, "repo", "ok", f"{repo} is a git checkout of {expected}")


def _git(repo: str, *argv: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", repo, *argv],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


_MARK: dict[Status, str] = {"ok": "ok   ", "warning": "WARN ", "error": "ERROR"}


def render(ws: Workspace, findings: list[Finding], names: dict[str, str]) -> str:
    lines = [f"devclaw doctor: {ws.root}"]
    scope = None
    for finding in findings:
        if finding.scope != scope:
            scope = finding.scope
            title = "workspace" if scope == "workspace" else f"{names.get(scope, '?')} ({scope})"
            lines.append(f"\n{title}")
        lines.append(f"  {_MARK[finding.status]} {finding.check:<14}{finding.message}")
    errors = sum(1 for f in findings if f.status == "error")
    warnings = sum(1 for f in findings if f.status == "warning")
    verdict = "everything is fine" if not errors and not warnings else f"{errors} error(s), {warnings} warning(s)"
    lines.append(f"\n{verdict}")
    return "\n".join(lines)
