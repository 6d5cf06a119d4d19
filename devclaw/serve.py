"""``devclaw serve``: the Python end of the OpenClaw bridge, one JSON object per line over stdio.

Protocol (UTF-8, one object per line, in both directions):

    request   {"id": 7, "tool": "task_pickup", "params": {...}, "workspace": "/path", "deadline": 1764650000.5}
    response  {"id": 7, "ok": true, "result": {...}}
              {"id": 7, "ok": false, "error": {"type": "workflow", "message": "..."}}

1. ``id`` is any JSON string or number chosen by the caller and echoed back; responses come in the
   order calls finish, not the order they arrived.
2. ``params`` defaults to ``{}``; ``workspace`` defaults to ``serve --workspace``, then
   ``$DEVCLAW_WORKSPACE``, then the current directory. Unknown keys (e.g. ``context``) are ignored.
3. A line that is not a request gets an ``invalid_input`` error, with ``"id": null`` when no id could
   be read. Blank lines are ignored. Any exception becomes an error response, never a traceback.
4. Every request runs in its own thread, at once: read-only tools never wait for a mutation, and a
   mutation waits only for the project it changes (the engine's per-project lock, bounded). At most
   ``MAX_IN_FLIGHT`` calls run at once; past that a request is answered "busy" at once.
5. ``deadline`` (optional, seconds since the epoch) is when the caller stops waiting: a mutation whose
   deadline has passed is not started, and no lock is waited for past it.
6. Stdout carries protocol lines only: the real fd 1 is kept for them and everything else written to
   it goes to stderr.
7. End of input: finish the calls in flight, answer them, exit 0.
8. Besides the tools, ``tool`` may name a request of the plugin itself (``tick``, ``loop_release``, and the
   read-only ``task_session``; see devclaw/loop.py). They are not published to the agent.
9. With ``--processes N`` (N > 1) the calls run in N worker processes, each a ``devclaw serve`` speaking
   this protocol; the first process only routes. A request whose params name a ``projectGroupId`` goes to
   the same worker every time (its tracker client and parsed state stay warm there), others go round-robin.
   Rule 4's limit is per worker. A worker that dies answers none of its calls in flight: the router answers
   each with an ``internal`` error, and starts a new worker for the next call routed there. At end of input
   the workers get end of input too, and the router exits once they have finished their calls (rule 7).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

from devclaw.engine import DEADLINE
from devclaw.errors import DevclawError, InputError, InternalError, error_payload
from devclaw.inputs import normalize_group_id
from devclaw.loop import LOOP_REQUESTS, call_loop
from devclaw.tools import TOOLS, call_tool
from devclaw.workspace import Workspace

log = logging.getLogger("devclaw.serve")

MAX_IN_FLIGHT = 256
RequestId = str | int | float | None


class ProtocolWriter:
    """Writes one response per line; the lock keeps lines from different threads whole."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, response: dict[str, Any]) -> None:
        self.send_line(json.dumps(response, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")

    def send_line(self, line: bytes) -> None:
        """A response already encoded (a worker's), ending in a newline."""
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


class RequestError(InputError):
    """A line that is not a valid request; ``request_id`` is what could be read of its id."""

    def __init__(self, request_id: RequestId, message: str) -> None:
        super().__init__(message)
        self.request_id = request_id


@dataclass(frozen=True)
class Request:
    id: RequestId
    tool: str
    params: object
    workspace: str | None
    deadline: float | None


MAX_LINE = 1 << 20  # a request line over 1 MiB is refused, not parsed


def parse_request(line: bytes) -> Request:
    """The request on one line, or ``RequestError``."""
    if len(line) > MAX_LINE:
        raise RequestError(None, f"request is {len(line)} bytes; the limit is {MAX_LINE}")
    try:
        request = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(None, f"request is not valid JSON: {exc}") from None
    except RecursionError:
        raise RequestError(None, "request is nested too deeply") from None
    if not isinstance(request, dict):
        raise RequestError(None, "request must be a JSON object")
    request_id = request.get("id")
    if not _valid_id(request_id):
        raise RequestError(None, "request needs an 'id' (a string or a finite number)")
    tool, params, workspace = request.get("tool"), request.get("params", {}), request.get("workspace")
    if not isinstance(tool, str):
        raise RequestError(request_id, "request needs a 'tool' (a string)")
    if workspace is not None and not isinstance(workspace, str):
        raise RequestError(request_id, "'workspace' must be a string path")
    deadline = request.get("deadline")
    if deadline is not None and (
        isinstance(deadline, bool) or not isinstance(deadline, int | float) or not math.isfinite(deadline)
    ):
        raise RequestError(request_id, "'deadline' must be a number of seconds since the epoch")
    return Request(request_id, tool, params, workspace, None if deadline is None else float(deadline))


def _valid_id(value: object) -> bool:
    # NaN, Infinity and 1e400 parse, but cannot be echoed back as JSON.
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, str):
        return len(value) <= 200
    return isinstance(value, int | float) and math.isfinite(value)


class Server:
    def __init__(self, writer: ProtocolWriter, workspace_option: str | None) -> None:
        self._writer = writer
        self._workspace_option = workspace_option
        self._workspaces: dict[str, Workspace] = {}
        self._resolved: dict[str | None, Workspace] = {}  # each --workspace option as given, resolved
        self._guard = threading.Lock()
        self._in_flight = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        self._threads: set[threading.Thread] = set()

    def serve(self, lines: Iterable[bytes]) -> None:
        for line in lines:
            if line.strip():
                self._start(line)
        for thread in list(self._threads):
            thread.join()

    def _start(self, line: bytes) -> None:
        if not self._in_flight.acquire(blocking=False):
            self._answer_busy(line)
            return
        thread = threading.Thread(target=self._run, args=(line,), name="devclaw-call", daemon=True)
        with self._guard:
            self._threads.add(thread)
        thread.start()

    def _run(self, line: bytes) -> None:
        try:
            self.handle(line)
        finally:
            self._in_flight.release()
            with self._guard:
                self._threads.discard(threading.current_thread())

    def _answer_busy(self, line: bytes) -> None:
        try:
            request_id = parse_request(line).id
        except RequestError as exc:
            request_id = exc.request_id
        error = {"type": "state", "message": f"devclaw serve is running {MAX_IN_FLIGHT} calls already; try again"}
        self._writer.send({"id": request_id, "ok": False, "error": error})

    def handle(self, line: bytes) -> None:
        request_id: RequestId = None
        try:
            request = parse_request(line)
            request_id = request.id
            result = self._call(request)
            response: dict[str, Any] = {"id": request_id, "ok": True, "result": result}
        except RequestError as exc:
            response = {"id": exc.request_id, "ok": False, "error": error_payload(exc)}
        except Exception as exc:
            if isinstance(exc, InternalError):
                log.error("call %s: %s", request_id, exc.message)
            elif not isinstance(exc, DevclawError):
                log.exception("call %s failed with an internal error", request_id)
            response = {"id": request_id, "ok": False, "error": error_payload(exc)}
        try:
            self._writer.send(response)
        except (TypeError, ValueError) as exc:  # a result JSON cannot hold: a bug, but still an answer
            log.exception("call %s returned a result that is not JSON", request_id)
            self._writer.send({"id": request_id, "ok": False, "error": error_payload(exc)})

    def workspace(self, option: str | None) -> Workspace:
        """One Workspace per root for the life of the process: its parsed projects.json and its
        tracker clients (and their connections) are reused from call to call."""
        chosen = option or self._workspace_option
        with self._guard:
            found = self._resolved.get(chosen)
        if found is not None:
            return found  # resolving the path (realpath: a syscall per part) once per option is enough
        fresh = Workspace.resolve(chosen)
        with self._guard:
            found = self._workspaces.setdefault(str(fresh.root), fresh)
            self._resolved[chosen] = found
        return found

    def _call(self, request: Request) -> dict[str, Any]:
        started = time.perf_counter()
        workspace = self.workspace(request.workspace)
        token = DEADLINE.set(request.deadline)
        try:
            if request.tool in LOOP_REQUESTS:
                result = call_loop(workspace, request.tool, request.params)
            else:
                result = call_tool(workspace, request.tool, request.params)
        finally:
            DEADLINE.reset(token)
        log.debug("%s in %s: %.1f ms", request.tool, workspace.root, (time.perf_counter() - started) * 1000)
        return result


class WorkerProcess:
    """One worker of the router: a ``devclaw serve`` child and the ids of its calls not yet answered."""

    def __init__(self, index: int, command: list[str], writer: ProtocolWriter) -> None:
        self.index = index
        self._command = command
        self._writer = writer
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._pending: Counter[RequestId] = Counter()

    def send(self, request_id: RequestId, line: bytes) -> None:
        """Forward one request line; the worker's answer (or an error if it dies first) goes to the writer."""
        with self._lock:
            process = self._process or self._start()
            self._pending[request_id] += 1
        try:  # not under the lock: a full pipe must not stop the reader from taking answers
            assert process.stdin is not None
            process.stdin.write(line if line.endswith(b"\n") else line + b"\n")
            process.stdin.flush()
        except OSError:
            pass  # the worker died: the reader answers this call when its output ends

    def _start(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._process = process
        self._reader = threading.Thread(target=self._read, args=(process,), name="devclaw-worker", daemon=True)
        self._reader.start()
        log.info("worker %d started (pid %d)", self.index, process.pid)
        return process

    def start(self) -> None:
        with self._lock:
            if self._process is None:
                self._start()

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._answered(line)
            self._writer.send_line(line)
        self._ended(process, process.wait())

    def _answered(self, line: bytes) -> None:
        try:
            request_id = json.loads(line).get("id")
        except (ValueError, AttributeError):
            return  # not a protocol line: the worker's stdout guard should make this impossible
        with self._lock:
            if self._pending[request_id] > 1:
                self._pending[request_id] -= 1
            else:
                self._pending.pop(request_id, None)

    def _ended(self, process: subprocess.Popen[bytes], code: int) -> None:
        with self._lock:
            unanswered = list(self._pending.elements())
            self._pending.clear()
            if self._process is process:
                self._process = None
        if unanswered:
            log.error("worker %d (pid %d) exited (code %d) with %d calls in flight", self.index, process.pid, code,
                      len(unanswered))  # fmt: skip
        elif code != 0:
            log.warning("worker %d (pid %d) exited (code %d)", self.index, process.pid, code)
        message = (
            f"devclaw serve's worker process (pid {process.pid}) exited (code {code}) while running this call; "
            "it may or may not have been applied: call queue_status to see where the issue is, or retry the "
            "same call (a retry converges). The next call starts a new worker."
        )
        for request_id in unanswered:
            self._writer.send({"id": request_id, "ok": False, "error": {"type": "internal", "message": message}})

    def close(self) -> None:
        """End the worker's input and wait until it has answered its calls and exited."""
        with self._lock:
            process, reader = self._process, self._reader
        if process is None or reader is None:
            return
        try:
            assert process.stdin is not None
            process.stdin.close()
        except OSError:
            pass  # already gone: its reader has seen the end
        reader.join()


class Router:
    """``serve --processes N``: reads the requests and hands each to one of N worker processes."""

    def __init__(self, writer: ProtocolWriter, workspace_option: str | None, processes: int) -> None:
        options = [] if workspace_option is None else ["--workspace", workspace_option]
        command = [sys.executable, "-m", "devclaw.cli", *options, "serve", "--processes", "1"]
        self._writer = writer
        self._workers = [WorkerProcess(n, command, writer) for n in range(processes)]
        self._turn = itertools.count()

    def serve(self, lines: Iterable[bytes]) -> None:
        for worker in self._workers:
            worker.start()
        for line in lines:
            if line.strip():
                self._forward(line)
        for worker in self._workers:
            worker.close()

    def _forward(self, line: bytes) -> None:
        try:
            request = parse_request(line)
        except RequestError as exc:
            self._writer.send({"id": exc.request_id, "ok": False, "error": error_payload(exc)})
            return
        index = worker_index(request, len(self._workers))
        self._workers[next(self._turn) % len(self._workers) if index is None else index].send(request.id, line)


def worker_index(request: Request, processes: int) -> int | None:
    """The worker of the request's project (the same for the life of the router), or None if it names none."""
    if not isinstance(request.params, dict) or "projectGroupId" not in request.params:
        return None
    try:  # the tools' own rule: " -100" and -100 are the same project, so the same worker
        group = normalize_group_id(request.params["projectGroupId"])
    except InputError:
        return None  # any worker answers the error
    return zlib.crc32(group.encode()) % processes


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


def run(workspace_option: str | None, processes: int = 1) -> int:
    """Serve requests from stdin until it closes; the exit code is 0 unless startup failed."""
    protocol = protocol_stdout()
    if not logging.getLogger().handlers:
        level = os.environ.get("DEVCLAW_LOG_LEVEL", "INFO").upper()
        logging.basicConfig(stream=sys.stderr, level=level, format="devclaw serve: %(levelname)s %(message)s")
    writer = ProtocolWriter(protocol)
    if processes > 1:
        log.info("ready (pid %d, routing to %d worker processes)", os.getpid(), processes)
        Router(writer, workspace_option, processes).serve(sys.stdin.buffer)
    else:
        log.info("ready (pid %d, %d tools)", os.getpid(), len(TOOLS))
        Server(writer, workspace_option).serve(sys.stdin.buffer)
    log.info("input closed, exiting")
    return 0
