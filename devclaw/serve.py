"""``devclaw serve``: the Python end of the OpenClaw bridge, one JSON object per line over stdio.

Protocol (UTF-8, one object per line, in both directions):

    request   {"id": 7, "tool": "task_pickup", "params": {...}, "workspace": "/path"}
    response  {"id": 7, "ok": true, "result": {...}}
              {"id": 7, "ok": false, "error": {"type": "workflow", "message": "..."}}

1. ``id`` is any JSON string or number chosen by the caller and echoed back; responses come in the
   order calls finish, not the order they arrived.
2. ``params`` defaults to ``{}``; ``workspace`` defaults to ``serve --workspace``, then
   ``$DEVCLAW_WORKSPACE``, then the current directory. Unknown keys (e.g. ``context``) are ignored.
3. A line that is not a request gets an ``invalid_input`` error, with ``"id": null`` when no id could
   be read. Blank lines are ignored. Any exception becomes an error response, never a traceback.
4. Read-only tools run concurrently; mutating tools run one at a time per workspace in this process
   (the projects.json lock still guards against other processes). Stdout carries protocol lines
   only: the real fd 1 is kept for them and everything else written to it goes to stderr.
5. End of input: finish the calls in flight, answer them, exit 0.
6. Besides the tools, ``tool`` may name a request of the plugin's work loop (``tick``, ``loop_release``;
   see devclaw/loop.py). They are mutating and are not published to the agent.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

from devclaw.errors import DevclawError, InputError, error_payload
from devclaw.loop import LOOP_REQUESTS, call_loop
from devclaw.tools import TOOLS, call_tool
from devclaw.workspace import Workspace

log = logging.getLogger("devclaw.serve")

WORKERS = 4
RequestId = str | int | float | None


class ProtocolWriter:
    """Writes one response per line; the lock keeps lines from different threads whole."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, response: dict[str, Any]) -> None:
        line = json.dumps(response, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


class WorkspaceLocks:
    """One in-process lock per workspace root, taken by mutating tools only."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def for_root(self, root: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(root, threading.Lock())


class RequestError(InputError):
    """A line that is not a valid request; ``request_id`` is what could be read of its id."""

    def __init__(self, request_id: RequestId, message: str) -> None:
        super().__init__(message)
        self.request_id = request_id


def parse_request(line: bytes) -> tuple[RequestId, str, object, str | None]:
    """``(id, tool, params, workspace)`` of one line, or ``RequestError``."""
    try:
        request = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(None, f"request is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise RequestError(None, "request must be a JSON object")
    request_id = request.get("id")
    if request_id is None or isinstance(request_id, bool) or not isinstance(request_id, str | int | float):
        raise RequestError(None, "request needs an 'id' (a string or a number)")
    tool, params, workspace = request.get("tool"), request.get("params", {}), request.get("workspace")
    if not isinstance(tool, str):
        raise RequestError(request_id, "request needs a 'tool' (a string)")
    if workspace is not None and not isinstance(workspace, str):
        raise RequestError(request_id, "'workspace' must be a string path")
    return request_id, tool, params, workspace


class Server:
    def __init__(self, writer: ProtocolWriter, workspace_option: str | None) -> None:
        self._writer = writer
        self._workspace_option = workspace_option
        self._locks = WorkspaceLocks()

    def serve(self, lines: Iterable[bytes]) -> None:
        with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="devclaw-call") as pool:
            for line in lines:
                if line.strip():
                    pool.submit(self.handle, line)

    def handle(self, line: bytes) -> None:
        request_id: RequestId = None
        try:
            request_id, tool, params, workspace = parse_request(line)
            result = self._call(tool, params, workspace)
            response: dict[str, Any] = {"id": request_id, "ok": True, "result": result}
        except RequestError as exc:
            response = {"id": exc.request_id, "ok": False, "error": error_payload(exc)}
        except Exception as exc:
            if not isinstance(exc, DevclawError):
                log.exception("call %s failed with an internal error", request_id)
            response = {"id": request_id, "ok": False, "error": error_payload(exc)}
        try:
            self._writer.send(response)
        except (TypeError, ValueError) as exc:  # a result JSON cannot hold: a bug, but still an answer
            log.exception("call %s returned a result that is not JSON", request_id)
            self._writer.send({"id": request_id, "ok": False, "error": error_payload(exc)})

    def _call(self, tool: str, params: object, workspace_option: str | None) -> dict[str, Any]:
        started = time.perf_counter()
        workspace = Workspace.resolve(workspace_option or self._workspace_option)
        if tool in LOOP_REQUESTS:
            return self._loop_request(workspace, tool, params)
        known = TOOLS.get(tool)
        if known is not None and known.mutating:
            with self._locks.for_root(str(workspace.root)):
                result = call_tool(workspace, tool, params)
        else:
            result = call_tool(workspace, tool, params)
        log.debug("%s in %s: %.1f ms", tool, workspace.root, (time.perf_counter() - started) * 1000)
        return result

    def _loop_request(self, workspace: Workspace, name: str, params: object) -> dict[str, Any]:
        """A work-loop request: mutating, so it takes the workspace's lock like a mutating tool."""
        with self._locks.for_root(str(workspace.root)):
            return call_loop(workspace, name, params)


def protocol_stdout() -> BinaryIO:
    """Keep the real stdout for protocol lines and point fd 1 (and ``sys.stdout``) at stderr.

    A stray ``print`` or a child process that inherits fd 1 then lands in the log, not in the stream
    the gateway parses.
    """
    sys.stdout.flush()
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol


def run(workspace_option: str | None) -> int:
    """Serve requests from stdin until it closes; the exit code is 0 unless startup failed."""
    protocol = protocol_stdout()
    if not logging.getLogger().handlers:
        level = os.environ.get("DEVCLAW_LOG_LEVEL", "INFO").upper()
        logging.basicConfig(stream=sys.stderr, level=level, format="devclaw serve: %(levelname)s %(message)s")
    log.info("ready (pid %d, %d tools)", os.getpid(), len(TOOLS))
    Server(ProtocolWriter(protocol), workspace_option).serve(sys.stdin.buffer)
    log.info("input closed, exiting")
    return 0
