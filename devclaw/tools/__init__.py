"""The tools the orchestrator calls, in one registry, and ``call_tool``: validate, run, log failures."""

from __future__ import annotations

import sys
from typing import Any

from pydantic import ValidationError

from devclaw.errors import DevclawError, InputError, error_payload
from devclaw.redact import sanitize
from devclaw.tools.base import Tool
from devclaw.tools.complete import COMPLETE
from devclaw.tools.health import SESSION_HEALTH
from devclaw.tools.loop_status import LOOP_STATUS
from devclaw.tools.pickup import PICKUP, PICKUP_CONFIRM
from devclaw.tools.queue import QUEUE_STATUS
from devclaw.workspace import Workspace

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
        result = tool.run(ws, parsed)
    except Exception as exc:
        _log_failure(ws, name, params, exc)
        raise
    data: dict[str, Any] = result.model_dump(mode="json", by_alias=True)
    return data


def _find(name: str) -> Tool[Any, Any]:
    try:
        return TOOLS[name]
    except KeyError:
        raise InputError(f"Unknown tool {name!r}. Tools: {', '.join(TOOLS)}") from None


def _parse(tool: Tool[Any, Any], params: object) -> Any:
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InputError(f"{tool.name}: parameters must be a JSON object, got {type(params).__name__}")
    try:
        return tool.input_model.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'parameters'}: {error['msg']}" for error in exc.errors()
        )
        raise InputError(f"{tool.name}: invalid parameters: {problems}") from None


def _log_failure(ws: Workspace, name: str, params: object, exc: Exception) -> None:
    if not ws.memory.is_dir():
        return  # not a workspace: don't create one just to log that it isn't
    payload = error_payload(exc)
    named = params if isinstance(params, dict) else {}
    # Where the call named them, the project and issue go on the line too, so per-project and per-issue
    # queries find the failures.
    where = {key: sanitize(named[param]) for key, param in (("groupId", "projectGroupId"), ("issue", "issueId"))
             if param in named}  # fmt: skip
    try:
        ws.audit.append(
            "error", tool=name, **where, type=payload["type"], message=payload["message"], params=sanitize(params)
        )
    except DevclawError as audit_exc:
        print(f"devclaw: could not log the failure: {audit_exc.message}", file=sys.stderr)


__all__ = ["TOOLS", "Tool", "call_tool", "tool_specs"]
