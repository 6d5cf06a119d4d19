"""Registering a project: a decision like any other mutation, applied by ``engine.apply``."""

from __future__ import annotations

from typing import Any

from devclaw.engine import Plan, Record, mutate
from devclaw.errors import ConfigError
from devclaw.state import Project, ProjectsFile
from devclaw.tools.base import ToolResult
from devclaw.workspace import Workspace


class RegisterResult(ToolResult):
    group_id: str
    project: dict[str, Any]
    labels_created: list[str]
    updated: bool


def register_project(ws: Workspace, group_id: str, project: Project) -> dict[str, Any]:
    """Add or update a project: tracker labels first, then projects.json, then a ``project_register``
    audit line carrying the configuration (never a token) so the log alone can rebuild the registry."""
    applied = mutate(ws, group_id, lambda state: decide_register(ws, state, group_id, project))
    data: dict[str, Any] = applied.result.model_dump(mode="json", by_alias=True)
    return data


def decide_register(ws: Workspace, state: ProjectsFile, group_id: str, project: Project) -> Plan[RegisterResult]:
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
