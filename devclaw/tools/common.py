"""Pieces the tools share: parameter types, worker views, the commit step, message limits."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from devclaw.errors import DevclawError, StateError
from devclaw.state import ProjectsFile, Worker
from devclaw.tools.base import ToolResult
from devclaw.trackers.base import Issue, Tracker
from devclaw.workflow import IssueState, Label, Role
from devclaw.workspace import Workspace

TELEGRAM_LIMIT = 4096


def _group_id(value: Any) -> Any:
    # Agents send group ids as numbers as often as strings; devclaw.inputs is the one rule for every front end.
    from devclaw.errors import InputError
    from devclaw.inputs import normalize_group_id

    try:
        return normalize_group_id(value)
    except InputError as exc:
        raise ValueError(exc.message) from None


def _role(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


GroupId = Annotated[
    str,
    BeforeValidator(_group_id),
    Field(min_length=1, description="The project's Telegram group id (its key in projects.json)."),
]
RoleParam = Annotated[Role, BeforeValidator(_role), Field(description='"dev" or "qa".')]


class WorkerView(ToolResult):
    active: bool
    session_id: str | None
    issue_id: int | None
    model: str | None

    @classmethod
    def of(cls, worker: Worker) -> WorkerView:
        return cls(
            active=worker.active,
            session_id=worker.session_id,
            issue_id=issue_number(worker.issue_id),
            model=worker.model,
        )


def issue_number(stored: str | None) -> int | None:
    """projects.json keeps issue ids as strings (DevClaw's format); results use integers."""
    if stored is None:
        return None
    try:
        return int(stored)
    except ValueError:
        return None


def fit_message(text: str, limit: int = TELEGRAM_LIMIT) -> str:
    """Telegram refuses messages over 4096 characters: cut, and say so."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def with_summary(summary: str | None) -> str:
    return f" — {summary.strip()}" if summary and summary.strip() else ""


def commit_or_undo(
    ws: Workspace, state: ProjectsFile, tracker: Tracker, moved: Issue, back_to: Label, back_state: IssueState
) -> None:
    """Write the state after the tracker write; if that fails, put the label back and report both."""
    try:
        ws.store.write(state)
    except DevclawError as exc:
        try:
            tracker.move_issue(moved, back_to, back_state if back_state != moved.state else None)
        except DevclawError as undo_exc:
            raise StateError(
                f'{exc.message}. Issue #{moved.id} was moved to "{moved.label}" and moving it back to '
                f'"{back_to}" failed too ({undo_exc.message}): run session_health with autoFix to repair'
            ) from exc
        raise StateError(
            f'{exc.message}. The label move was undone: issue #{moved.id} is on "{back_to}" again'
        ) from exc


def role_name(role: Role) -> str:
    return role.upper()
