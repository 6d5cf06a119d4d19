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
from devclaw.workflow import ACTIVE_LABEL, ROLES, Role
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
    for record in ws.audit.records(event="project_register"):
        group_id = str(record.get("groupId", ""))
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
    """What the audit log last said about each worker: (groupId, role) -> fields."""

    session: dict[tuple[str, str], str | None] = field(default_factory=dict)
    model: dict[tuple[str, str], str] = field(default_factory=dict)
    picked: dict[tuple[str, str, int], str] = field(default_factory=dict)  # (groupId, role, issue) -> ts

    @classmethod
    def read(cls, ws: Workspace) -> _History:
        history = cls()
        for record in ws.audit.records():
            history._apply(record)
        return history

    def _apply(self, record: dict[str, Any]) -> None:
        event, key = record.get("event"), (str(record.get("groupId")), str(record.get("role")))
        if event == "task_pickup":
            self.model[key] = str(record.get("model"))
            self.picked[(*key, int(record.get("issue", 0)))] = str(record.get("ts"))
            if record.get("sessionId"):
                self.session[key] = str(record["sessionId"])
        elif event == "task_pickup_confirm":
            self.session[key] = record.get("sessionId")
        elif event == "health_check":
            for fix in record.get("fixed") or []:
                if isinstance(fix, dict) and fix.get("type") == "zombie_session":
                    self.session[(str(fix.get("groupId")), str(fix.get("role")))] = None


def _rebuild_workers(ws: Workspace, group_id: str, project: Project, history: _History, report: RebuildReport) -> None:
    try:
        tracker = ws.tracker(project)
        on_label = {role: tracker.list_issues(ACTIVE_LABEL[role]) for role in ROLES}
    except DevclawError as exc:
        report.warnings.append(
            f"{project.name}: tracker unreachable ({exc.message}); workers kept as in the backup, or idle"
        )
        return
    for role in ROLES:
        worker = _worker(group_id, role, [issue.id for issue in on_label[role]], history)
        setattr(project, role, worker)
        if worker.active:
            report.active_workers.append({"groupId": group_id, "role": role, "issueId": int(worker.issue_id or 0)})


def _worker(group_id: str, role: Role, issues: list[int], history: _History) -> Worker:
    key = (group_id, role)
    worker = Worker(session_id=history.session.get(key), model=history.model.get(key))
    if issues:
        latest = max(issues, key=lambda issue: history.picked.get((*key, issue), ""))
        worker.active, worker.issue_id = True, str(latest)
        worker.start_time = history.picked.get((*key, latest)) or utc_now()
    return worker


def _keep_aside(store: ProjectStore) -> str | None:
    if not store.path.exists():
        return None
    aside = store.path.with_name(f"{store.path.name}.broken-{utc_now().replace(':', '')}")
    with contextlib.suppress(FileNotFoundError):
        store.path.replace(aside)
        return str(aside)
    return None
