"""Registering a project: a decision like any other mutation, applied by ``engine.apply``."""

from __future__ import annotations

from typing import Any

from devclaw.engine import Plan, Record, mutate
from devclaw.errors import ConfigError, InputError, WorkflowError
from devclaw.state import Project, ProjectsFile
from devclaw.tools.base import ToolResult
from devclaw.workspace import Workspace


class RegisterResult(ToolResult):
    group_id: str
    project: dict[str, Any]
    labels_created: list[str]
    updated: bool


class RemoveResult(ToolResult):
    success: bool
    group_id: str
    removed: str
    tracker_kept: bool


def register_project(ws: Workspace, group_id: str, project: Project, *, update: bool = False) -> dict[str, Any]:
    """Add a project (``update``: change one): tracker labels first, then projects.json, then a
    ``project_register`` audit line carrying the configuration (never a token) so the log alone can
    rebuild the registry. A new project may not take an existing group id nor another's tracker."""
    decide = lambda state: decide_register(ws, state, group_id, project, update=update)  # noqa: E731
    data: dict[str, Any] = mutate(ws, group_id, decide).result.model_dump(mode="json", by_alias=True)
    return data


def remove_project(ws: Workspace, group_id: str, *, force: bool = False) -> dict[str, Any]:
    """Forget a project (its tracker and its issues are kept); refused while a worker is active, unless
    ``force``."""
    decide = lambda state: decide_remove(state, group_id, force=force)  # noqa: E731
    data: dict[str, Any] = mutate(ws, group_id, decide).result.model_dump(mode="json", by_alias=True)
    return data


def decide_remove(state: ProjectsFile, group_id: str, *, force: bool) -> Plan[RemoveResult]:
    project = state.project(group_id)
    busy = sorted({role.upper() for role, _, worker in project.every_worker() if worker.active})
    if busy and not force:
        raise WorkflowError(
            f"Project {group_id} ({project.name}) has an active {' and '.join(busy)} worker; finish its task "
            "first, or remove it anyway with --force"
        )
    result = RemoveResult(success=True, group_id=group_id, removed=project.name, tracker_kept=True)
    record = Record("project_remove", {"groupId": group_id, "project": project.name, "forced": bool(busy)})
    return Plan(tool="project_remove", group_id=group_id, result=result, remove_project=True, records=[record])


def check_registration(state: ProjectsFile, group_id: str, project: Project, *, update: bool) -> None:
    """Refuse, before anything is written: a taken group id (add), an unknown one (edit), and an
    embedded tracker another project already uses (its issues would show in both queues)."""
    existing = state.projects.get(group_id)
    if existing is not None and not update:
        raise InputError(
            f"Project {group_id} ({existing.name}) is already registered. Change it with "
            f"`devclaw project edit {group_id} --OPTION VALUE` (only what you give changes), "
            f"or remove it with `devclaw project remove {group_id}`"
        )
    if existing is None and update:
        state.project(group_id)  # raises NotFoundError naming the registered ones
    if project.tracker.provider != "local":
        return
    mine = project.tracker.path or project.name
    for other_id, other in state.projects.items():
        if other_id != group_id and other.tracker.provider == "local" and (other.tracker.path or other.name) == mine:
            raise InputError(
                f"The embedded tracker {mine!r} already belongs to project {other_id} ({other.name}); "
                f"give this project its own with --path NAME"
            )


def decide_register(
    ws: Workspace, state: ProjectsFile, group_id: str, project: Project, *, update: bool = False
) -> Plan[RegisterResult]:
    check_registration(state, group_id, project, update=update)
    existing = state.projects.get(group_id)
    # The tracker path is resolved once (e.g. from the git remote), then stored.
    path = ws.tracker(project).path
    new = project.model_copy(update={"tracker": project.tracker.model_copy(update={"path": path})})
    if existing is not None:  # keep the work: re-registering must not drop work in progress
        new = new.model_copy(
            update={
                "workers": existing.workers,
                "qa_fails": existing.qa_fails,
                "intents": existing.intents,
                "audit_gaps": existing.audit_gaps,
            }
        )
    _check_tracker_unique(state, group_id, new)
    config = new.config_json()
    result = RegisterResult(group_id=group_id, project=config, labels_created=[], updated=existing is not None)
    record = Record(
        "project_register",
        {
            "groupId": group_id,
            "project": new.name,
            "config": config,
            "labelsCreated": [],
            "updated": existing is not None,
        },
    )
    return Plan(
        tool="project_register", group_id=group_id, result=result, project=new, records=[record], ensure_labels=True
    )


def _check_tracker_unique(state: ProjectsFile, group_id: str, project: Project) -> None:
    """Two projects on one tracker project would each see the other's work as orphans and undo it."""
    identity = project.tracker.identity()
    for other_id, other in state.projects.items():
        if other_id != group_id and other.tracker.identity() == identity:
            raise ConfigError(
                f"Project {other.name} ({other_id}) already uses the tracker {project.tracker.provider} "
                f'"{project.tracker.path}"; two devclaw projects on one tracker would undo each other\'s '
                "work. Use that project's group id, or give this one its own tracker path (--path)"
            )
