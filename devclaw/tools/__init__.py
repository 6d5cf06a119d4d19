"""The tools the orchestrator calls, in one registry, and ``call_tool``: validate, run, log failures."""

from __future__ import annotations

import sys
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from devclaw.errors import DevclawError, InputError, error_payload, record_crash
from devclaw.redact import redact_result, sanitize
from devclaw.tools.base import Tool
from devclaw.tools.complete import COMPLETE
from devclaw.tools.health import SESSION_HEALTH
from devclaw.tools.loop_status import LOOP_STATUS
from devclaw.tools.pickup import PICKUP, PICKUP_CONFIRM
from devclaw.tools.queue import QUEUE_STATUS
from devclaw.workspace import Workspace

M = TypeVar("M", bound=BaseModel)

TOOLS: dict[str, Tool[Any, Any]] = {
    tool.name: tool for tool in (PICKUP, PICKUP_CONFIRM, COMPLETE, QUEUE_STATUS, SESSION_HEALTH, LOOP_STATUS)
}


def tool_specs() -> list[dict[str, Any]]:
    """Every tool's name, description and JSON Schema: what ``devclaw tools`` prints and the bridge publishes."""
    return [{"name": t.name, "description": t.description, "parameters": t.schema()} for t in TOOLS.values()]


def call_tool(ws: Workspace, name: str, params: object) -> dict[str, Any]:
    """Validate ``params``, run the tool, return its JSON-able result. Every failure is logged as an
    ``error`` audit event and raised; only ``DevclawError`` is expected, anything else is a bug."""
    try:
        tool = _find(name)
        parsed = _parse(tool, params)
        # Never create a workspace by accident (a mistyped path, serve's workspace field pointing
        # nowhere); a mutation also needs it writable before anything reaches the tracker.
        ws.require_writable() if tool.mutating else ws.require_existing()
        result = tool.run(ws, parsed)
        data: dict[str, Any] = redact_result(result.model_dump(mode="json", by_alias=True))
    except DevclawError as exc:
        _log_failure(ws, name, params, exc)
        raise
    except Exception as exc:
        crash = record_crash(exc, ws.memory) if ws.memory.is_dir() else exc
        _log_failure(ws, name, params, crash)
        raise crash from exc
    return data


def _find(name: str) -> Tool[Any, Any]:
    try:
        return TOOLS[name]
    except KeyError:
        raise InputError(f"Unknown tool {name!r}. Tools: {', '.join(TOOLS)}") from None


def _parse(tool: Tool[Any, Any], params: object) -> Any:
    return parse_params(tool.name, tool.input_model, params)


def parse_params(name: str, model: type[M], params: object) -> M:
    """``params`` as ``model``, or an ``InputError`` naming each bad field: the one validation of every
    request, tools and the work loop's alike."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InputError(f"{name}: parameters must be a JSON object, got {type(params).__name__}")
    _check_values(name, params, "parameters", 0)
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p)[:80] for p in error['loc']) or 'parameters'}: {error['msg'][:300]}"
            for error in exc.errors()[:10]
        )
        raise InputError(f"{name}: invalid parameters: {problems}") from None


MAX_NESTING = 32


def _check_values(tool: str, value: object, where: str, depth: int) -> None:
    """Refuse what no parameter can hold and what would break later writes: deep nesting, and lone
    UTF-16 surrogates (they cannot be written as UTF-8 to the tracker or the audit log)."""
    if depth > MAX_NESTING:
        raise InputError(f"{tool}: parameters are nested more than {MAX_NESTING} levels deep")
    if isinstance(value, str):
        if any("\ud800" <= char <= "\udfff" for char in value):
            raise InputError(f"{tool}: {where[:80]} contains a lone UTF-16 surrogate, which is not text")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_values(tool, key, "a parameter name", depth + 1)
            _check_values(tool, item, f"{where}.{key}" if where != "parameters" else str(key), depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_values(tool, item, where, depth + 1)


def _log_failure(ws: Workspace, name: str, params: object, exc: BaseException) -> None:
    if not ws.memory.is_dir():
        return  # not a workspace: don't create one just to log that it isn't
    payload = error_payload(exc)
    named = params if isinstance(params, dict) else {}
    # Where the call named them, the project and issue go on the line too, so per-project and per-issue
    # queries find the failures.
    where = {key: sanitize(named[param]) for key, param in (("groupId", "projectGroupId"), ("issue", "issueId"))
             if param in named}  # fmt: skip
    if isinstance(where.get("groupId"), str):
        where = {"project": _project_name(ws, where["groupId"]), **where}
    try:
        ws.audit.append(
            "error", tool=name, **where, type=payload["type"], message=payload["message"], params=sanitize(params)
        )
    except DevclawError as audit_exc:
        print(f"devclaw: could not log the failure: {audit_exc.message}", file=sys.stderr)


def _project_name(ws: Workspace, group_id: str) -> str | None:
    try:
        project = ws.store.read().projects.get(group_id)
    except DevclawError:
        return None
    return project.name if project else None


__all__ = ["TOOLS", "Tool", "call_tool", "tool_specs"]
