"""Rebuild projects.json when it is lost or unreadable, from what survives it.

- The registry (each project's configuration, the health settings, the model aliases) comes from the last
  good version, ``projects.json.bak``, and from the ``project_register`` lines of the audit log for
  projects registered after that backup was made, or when there is no usable backup at all.
- The workers come from the tracker and the log: a worker is active on the issue that sits on its active
  label (Doing for DEV, Testing for QA). Its session, model and start time are the last ones the log
  recorded for it; a session that health forgot (a zombie it released) stays forgotten.
- The broken file is kept aside as ``projects.json.broken-<time>``; nothing is deleted.

Two issues on the same active label cannot both have the worker: the one picked up last gets it and
the other is left for ``session_health`` (an ``orphaned_label``) to put back in its queue.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from devclaw.audit import utc_now
from devclaw.errors import ConfigError, DevclawError, StateError
from devclaw.state import Project, ProjectsFile, ProjectStore, Worker
from devclaw.workflow import Role
from devclaw.workspace import Workspace


@dataclass
class RebuildReport:
    kept_aside: str | None = None
    config_from_backup: list[str] = field(default_factory=list)
    config_from_log: list[str] = field(default_factory=list)
    active_workers: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "success": True,
            "keptAside": self.kept_aside,
            "configFromBackup": self.config_from_backup,
            "configFromLog": self.config_from_log,
            "activeWorkers": self.active_workers,
            "warnings": self.warnings,
        }


def rebuild_state(ws: Workspace, *, force: bool = False) -> RebuildReport:
    """Write a new projects.json from the backup, the audit log and the trackers."""
    store = ws.store
    if not force and _current_is_valid(store):
        raise StateError(f"{store.path} is valid: nothing to rebuild (pass --force to rebuild it anyway)")
    report = RebuildReport()
    state = _registry(ws, report)
    if not state.projects:
        raise ConfigError("Nothing to rebuild from: no readable projects.json.bak and no project_register lines")
    history = _History.read(ws)
    for group_id, project in state.projects.items():
        _rebuild_workers(ws, group_id, project, history, report)
    report.kept_aside = _keep_aside(store)
    with store.locked():
        store.write(state)
    return report


def _current_is_valid(store: ProjectStore) -> bool:
    if not store.path.exists():
        return False
    try:
        store.read()
    except ConfigError:
        return False
    return True


def _registry(ws: Workspace, report: RebuildReport) -> ProjectsFile:
    state = ProjectsFile()
    backup = ws.store.backup_path
    if backup.exists():
        try:
            state = ProjectsFile.model_validate_json(backup.read_bytes())
            report.config_from_backup = list(state.projects)
        except (OSError, ValidationError, ValueError):
            report.warnings.append(f"{backup} is unreadable too; the configuration comes from the audit log")
    for record in ws.audit.records():
        group_id = str(record.get("groupId", ""))
        if record.get("event") == "project_remove" and group_id not in report.config_from_backup:
            state.projects.pop(group_id, None)  # removed after it was registered: it stays removed
            if group_id in report.config_from_log:
                report.config_from_log.remove(group_id)
            continue
        if record.get("event") != "project_register":
            continue
        if not group_id or group_id in report.config_from_backup:
            continue  # the backup is newer than a registration it already contains
        try:
            state.projects[group_id] = Project.model_validate(record.get("config", {}))
        except ValidationError:
            report.warnings.append(f"project_register line for {group_id} has no valid configuration; skipped")
            continue
        if group_id not in report.config_from_log:
            report.config_from_log.append(group_id)
    return state


@dataclass
class _History:
    """What the audit log last said about each worker slot: (groupId, role, slot) -> fields."""

    session: dict[tuple[str, str, int], str | None] = field(default_factory=dict)
    model: dict[tuple[str, str, int], str] = field(default_factory=dict)
    #: (groupId, role, issue) -> (pickup time, slot, the state it was picked up from)
    picked: dict[tuple[str, str, int], tuple[str, int, str | None]] = field(default_factory=dict)
    #: (groupId, issue) -> QA fails (the loop brake's count)
    qa_fails: dict[tuple[str, int], int] = field(default_factory=dict)

    @classmethod
    def read(cls, ws: Workspace) -> _History:
        history = cls()
        for record in ws.audit.records():
            history._apply(record)
        return history

    def _apply(self, record: dict[str, Any]) -> None:
        event, group, role = record.get("event"), str(record.get("groupId")), str(record.get("role"))
        slot: int = record["slot"] if isinstance(record.get("slot"), int) else 0
        key = (group, role, slot)
        if event == "task_pickup":
            self.model[key] = str(record.get("model"))
            origin = str(record.get("labelTransition") or "").split(" → ")[0] or None
            self.picked[(group, role, int(record.get("issue", 0)))] = (str(record.get("ts")), slot, origin)
            # A spawn starts a new session (none until it is confirmed); a send keeps the one it names.
            self.session[key] = str(record["sessionId"]) if record.get("sessionId") else None
        elif event == "task_pickup_confirm":
            self.session[key] = record.get("sessionId")
        elif event == "task_complete" and role == "qa" and record.get("result") == "fail":
            issue = (group, int(record.get("issue", 0)))
            self.qa_fails[issue] = self.qa_fails.get(issue, 0) + 1
        elif event == "health_fix" and record.get("type") == "zombie_session":
            self.session[key] = None
        elif event == "health_check":
            for fix in record.get("fixed") or []:
                if isinstance(fix, dict) and fix.get("type") == "zombie_session":
                    fixed_slot: int = fix["slot"] if isinstance(fix.get("slot"), int) else 0
                    self.session[(str(fix.get("groupId")), str(fix.get("role")), fixed_slot)] = None


def _rebuild_workers(ws: Workspace, group_id: str, project: Project, history: _History, report: RebuildReport) -> None:
    fails = {str(issue): count for (gid, issue), count in history.qa_fails.items() if gid == group_id}
    project.qa_fails = {**fails, **project.qa_fails}
    project.intents = []
    try:
        tracker = ws.tracker(project)
        workflow = project.effective_workflow()
        on_label = {role: tracker.list_issues(spec.active_label) for role, spec in workflow.roles.items()}
    except DevclawError as exc:
        report.warnings.append(
            f"{project.name}: tracker unreachable ({exc.message}); workers kept as in the backup, or idle"
        )
        return
    for role in on_label:
        workers = _workers(group_id, role, project.max_slots(role), [i.id for i in on_label[role]], history)
        project.workers[role] = workers
        for slot, worker in enumerate(workers):
            if worker.active:
                several = {"slot": slot} if project.max_slots(role) > 1 else {}
                report.active_workers.append({"groupId": group_id, "role": role, **several, "issueId": worker.issue_id})


def _workers(group_id: str, role: Role, slots: int, issues: list[int], history: _History) -> list[Worker]:
    workers = [
        Worker(session_id=history.session.get((group_id, role, s)), model=history.model.get((group_id, role, s)))
        for s in range(slots)
    ]
    latest_first = sorted(issues, key=lambda i: history.picked.get((group_id, role, i), ("", 0, None))[0], reverse=True)
    free = list(range(slots))
    for issue in latest_first[:slots]:
        picked_at, slot, origin = history.picked.get((group_id, role, issue), ("", free[0], None))
        slot = slot if slot in free else free[0]
        free.remove(slot)
        workers[slot] = workers[slot].model_copy(
            update={"active": True, "issue_id": issue, "start_time": picked_at or utc_now(), "picked_from": origin}
        )
    return workers


def _keep_aside(store: ProjectStore) -> str | None:
    if not store.path.exists():
        return None
    aside = store.path.with_name(f"{store.path.name}.broken-{utc_now().replace(':', '')}")
    with contextlib.suppress(FileNotFoundError):
        store.path.replace(aside)
        return str(aside)
    return None
