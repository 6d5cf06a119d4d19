"""loop_status: what the plugin's work loop is doing, read from ``memory/loop.json``.

The loop runs in the gateway (index.js); after every tick and every change to its runs in flight it
rewrites ``memory/loop.json`` atomically (temp file + rename). This tool and ``devclaw doctor`` read it;
nothing in Python writes it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, ValidationError

from devclaw.errors import ConfigError
from devclaw.tools.base import Tool, ToolInput, ToolResult
from devclaw.workspace import Workspace

LOOP_FILE = "loop.json"
#: The file is older than this many tick intervals: the gateway (or its loop) is not running.
STALE_TICKS = 3


class LoopStatusInput(ToolInput):
    pass


class LastTick(ToolResult):
    model_config = ConfigDict(extra="ignore")

    number: int | None = None
    at: str | None = None
    ok: bool | None = None
    ms: int | None = None
    dispatches: int | None = None
    skipped: int | None = None
    fixes: int | None = None
    error: str | None = None


class RunInFlight(ToolResult):
    model_config = ConfigDict(extra="ignore")

    group_id: str
    project: str | None = None
    role: str
    slot: int = 0
    issue_id: int
    session_key: str
    run_id: str | None = None
    started_at: str | None = None
    redispatches: int = 0


class LoopStatusResult(ToolResult):
    success: bool
    enabled: bool
    running: bool
    updated_at: str | None = None
    tick_seconds: float | None = None
    last_tick: LastTick | None = None
    next_tick_at: str | None = None
    model_override: bool | None = None
    announce_channel: bool | None = None
    in_flight: list[RunInFlight]
    note: str | None = None


def loop_status(ws: Workspace, params: LoopStatusInput) -> LoopStatusResult:
    """Show the work loop (the plugin service that picks up work and drives worker runs without an
    orchestrator turn): on or off, the last tick and its outcome, the next tick, whether the model override
    is allowed and the announce channel available, and the worker runs in flight."""
    return read_loop_status(ws)


def read_loop_status(ws: Workspace) -> LoopStatusResult:
    data = _read(ws.memory / LOOP_FILE)
    if data is None:
        return LoopStatusResult(success=True, enabled=False, running=False, in_flight=[],
                                note="The work loop has not run in this workspace. It is off unless "
                                     "plugins.entries.devclaw.config.loop.enabled is true.")  # fmt: skip
    try:
        result = LoopStatusResult.model_validate({"success": True, "running": False, **_known(data)})
    except ValidationError as exc:
        raise ConfigError(
            f"{ws.memory / LOOP_FILE} is not a devclaw loop file: {exc.error_count()} problem(s)"
        ) from None
    result.running = result.enabled and not _stale(result, ws.clock())
    if result.enabled and not result.running:
        result.note = "loop.json has not been updated for several ticks: is the gateway running?"
    return result


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return data


def _known(data: dict[str, Any]) -> dict[str, Any]:
    fields = {"enabled", "updatedAt", "tickSeconds", "lastTick", "nextTickAt", "modelOverride", "announceChannel"}
    return {**{key: data[key] for key in fields if key in data}, "inFlight": data.get("inFlight") or []}


def _stale(result: LoopStatusResult, now: datetime) -> bool:
    if not result.updated_at or not result.tick_seconds:
        return True
    try:
        updated = datetime.fromisoformat(result.updated_at.replace("Z", "+00:00"))
    except ValueError:
        return True
    if updated.tzinfo is None:
        updated = updated.replace(tzinfo=UTC)
    return (now - updated).total_seconds() > STALE_TICKS * result.tick_seconds + 30


LOOP_STATUS = Tool("loop_status", LoopStatusInput, loop_status, mutating=False)
