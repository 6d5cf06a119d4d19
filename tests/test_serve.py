"""``devclaw serve`` as the plugin runs it: a real subprocess, JSON lines in, JSON lines out."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import filelock
import pytest

from devclaw.engine import _lock_file
from devclaw.errors import DevclawError
from devclaw.serve import Request, worker_index
from devclaw.state import Project
from devclaw.tools import call_tool
from devclaw.trackers.local import LocalTracker
from devclaw.workspace import Workspace

from .conftest import GROUP, OTHER_GROUP, add_local_project, local_tracker, new_issue

TIMEOUT = 30.0


class Serve:
    """One ``devclaw serve`` process; every stdout line must be a protocol response."""

    def __init__(self, command: list[str], stderr_path: Path, env: dict[str, str] | None = None) -> None:
        self.stderr_path = stderr_path
        with stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env
            )
        self.responses: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stray: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                response = json.loads(line)
            except ValueError:
                self.stray.append(line)
                continue
            if not (isinstance(response, dict) and set(response) in ({"id", "ok", "result"}, {"id", "ok", "error"})):
                self.stray.append(line)
                continue
            self.responses.put(response)

    def send_raw(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send(self, request_id: object, tool: str, params: object = None, **extra: object) -> None:
        request = {"id": request_id, "tool": tool, "params": {} if params is None else params, **extra}
        self.send_raw(json.dumps(request).encode() + b"\n")

    def receive(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        return self.responses.get(timeout=timeout)

    def call(self, tool: str, params: object = None, **extra: object) -> dict[str, Any]:
        self.send("only", tool, params, **extra)
        response = self.receive()
        assert response["id"] == "only"
        return response

    def close(self) -> int:
        """Close stdin as the plugin does on shutdown; the exit code once the process ends."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        code = self.process.wait(timeout=TIMEOUT)
        self._reader.join(timeout=TIMEOUT)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=TIMEOUT)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@pytest.fixture
def start_serve(tmp_path: Path) -> Iterator[Any]:
    started: list[Serve] = []

    def start(workspace: Workspace | None, *, python_code: str | None = None, processes: int | None = None) -> Serve:
        options = ["--workspace", str(workspace.root)] if workspace else []
        if python_code is None:
            serve_options = [] if processes is None else ["--processes", str(processes)]
            command = [sys.executable, "-m", "devclaw.cli", *options, "serve", *serve_options]
        else:
            command = [sys.executable, "-c", python_code, *options[1:]]
        serve = Serve(command, tmp_path / f"serve-{len(started)}.stderr")
        started.append(serve)
        return serve

    yield start
    for serve in started:
        serve.kill()
        assert serve.stray == [], f"non-protocol output on stdout: {serve.stray!r}"


def test_a_call_returns_what_the_tool_returns_in_process(
    start_serve: Any, ws: Workspace, project: Project, tracker: LocalTracker
) -> None:
    new_issue(tracker)
    serve = start_serve(ws)
    response = serve.call("queue_status", {"projectGroupId": GROUP})
    assert response["ok"] is True
    assert response["result"] == call_tool(ws, "queue_status", {"projectGroupId": GROUP})
    assert serve.close() == 0
    assert "ready" in serve.stderr


def test_a_devclaw_error_is_an_error_response_with_its_type_and_message(
    start_serve: Any, ws: Workspace, project: Project, tracker: LocalTracker
) -> None:
    issue = new_issue(tracker)
    serve = start_serve(ws)
    params = {"issueId": issue, "role": "qa", "projectGroupId": GROUP}
    response = serve.call("task_pickup", params)
    assert response["ok"] is False
    with pytest.raises(DevclawError) as in_process:
        call_tool(ws, "task_pickup", params)
    assert response["error"] == {"type": "workflow", "message": str(in_process.value)}

    unknown = serve.call("task_pikcup", {})
    assert unknown["error"]["type"] == "invalid_input" and "task_pickup" in unknown["error"]["message"]
    invalid = serve.call("task_complete", {"role": "dev"})
    assert invalid["error"]["type"] == "invalid_input" and "projectGroupId" in invalid["error"]["message"]
    assert serve.call("task_complete", ["not", "an", "object"])["error"]["type"] == "invalid_input"


@pytest.mark.parametrize(
    ("line", "expected_id", "message"),
    [
        (b"not json\n", None, "not valid JSON"),
        (b"\xff\xfe\n", None, "not valid JSON"),
        (b"[1, 2]\n", None, "JSON object"),
        (b'{"tool": "queue_status"}\n', None, "'id'"),
        (b'{"id": true, "tool": "queue_status"}\n', None, "'id'"),
        (b'{"id": 5}\n', 5, "'tool'"),
        (b'{"id": "a", "tool": 3}\n', "a", "'tool'"),
        (b'{"id": "b", "tool": "queue_status", "workspace": 7}\n', "b", "'workspace'"),
    ],
)
@pytest.mark.parametrize("processes", [1, 2])
def test_a_malformed_line_gets_an_error_and_the_server_goes_on(
    start_serve: Any, ws: Workspace, project: Project, line: bytes, expected_id: object, message: str, processes: int
) -> None:
    serve = start_serve(ws, processes=processes)
    serve.send_raw(b"\n   \n" + line)  # blank lines are not requests: no answer for them
    response = serve.receive()
    assert response["id"] == expected_id and response["ok"] is False
    assert response["error"]["type"] == "invalid_input" and message in response["error"]["message"]
    assert serve.call("queue_status")["ok"] is True
    assert serve.responses.empty()


def test_reads_are_answered_while_a_write_waits_for_the_project_lock(
    start_serve: Any, ws: Workspace, project: Project, tracker: LocalTracker
) -> None:
    issue = new_issue(tracker)
    serve = start_serve(ws)
    serve.call("queue_status")  # started and warm
    lock = filelock.FileLock(str(ws.store.path) + ".lock")
    with lock:
        serve.send("write", "task_pickup", {"issueId": issue, "role": "dev", "projectGroupId": GROUP})
        time.sleep(0.5)  # the write is now blocked on the lock we hold
        serve.send("read", "queue_status", {"projectGroupId": GROUP})
        first = serve.receive()
        assert first["id"] == "read" and first["ok"] is True
        assert first["result"]["projects"][0]["dev"]["active"] is False
        assert serve.responses.empty()
    second = serve.receive()
    assert second["id"] == "write" and second["ok"] is True, second
    assert ws.store.read().project(GROUP).worker("dev").active is True


@pytest.mark.parametrize("processes", [1, 3])
def test_concurrent_writes_to_one_workspace_lose_nothing(start_serve: Any, ws: Workspace, processes: int) -> None:
    groups = [f"-100{n}" for n in range(12)]
    for group in groups:
        add_local_project(ws, group, name=f"p{group[1:]}")
        new_issue(local_tracker(ws, f"p{group[1:]}"))
    serve = start_serve(ws, processes=processes)
    batch = b"".join(
        json.dumps(
            {"id": group, "tool": "task_pickup", "params": {"issueId": 1, "role": "dev", "projectGroupId": group}}
        ).encode()
        + b"\n"
        for group in groups
    )
    serve.send_raw(batch)
    responses = [serve.receive() for _ in groups]
    assert sorted(r["id"] for r in responses) == sorted(groups)
    assert all(r["ok"] for r in responses), [r for r in responses if not r["ok"]]
    state = ws.store.read()
    assert all(state.project(group).worker("dev").active for group in groups)
    assert [r["event"] for r in ws.audit.records()].count("task_pickup") == len(groups)


@pytest.mark.parametrize("processes", [1, 2])
def test_each_request_may_name_its_workspace(
    start_serve: Any, tmp_path: Path, ws: Workspace, project: Project, processes: int
) -> None:
    other = Workspace(tmp_path / "other")
    other.memory.mkdir(parents=True)
    add_local_project(other, OTHER_GROUP, name="mobile")
    serve = start_serve(ws, processes=processes)
    default = serve.call("queue_status")["result"]["projects"]
    named = serve.call("queue_status", workspace=str(other.root))["result"]["projects"]
    assert [p["groupId"] for p in default] == [GROUP]
    assert [p["groupId"] for p in named] == [OTHER_GROUP]


@pytest.mark.parametrize("processes", [1, 2])
def test_closing_stdin_finishes_the_calls_in_flight_then_exits_0(
    start_serve: Any, ws: Workspace, project: Project, tracker: LocalTracker, processes: int
) -> None:
    issue = new_issue(tracker)
    serve = start_serve(ws, processes=processes)
    serve.send(1, "task_pickup", {"issueId": issue, "role": "dev", "projectGroupId": GROUP})
    serve.send(2, "queue_status")
    assert serve.close() == 0
    assert sorted(serve.receive(timeout=0)["id"] for _ in range(2)) == [1, 2]
    assert local_tracker(ws).get_issue(issue).labels == ("Doing",)


# No real tool prints or lets a child write to stdout, and none fails with a plain exception, so the
# stdout guard and the internal-error path are reached only with tools added to the registry here, in
# the server's own process, before `run` starts.
MISBEHAVING_TOOLS = """
import dataclasses, os, subprocess, sys
from devclaw import serve
from devclaw.tools import TOOLS

def noisy(ws, params):
    print("a stray print")
    subprocess.run(["echo", "a child writing to fd 1"], check=True)
    os.write(1, b"a raw write to fd 1\\n")
    return TOOLS["queue_status"].run(ws, params)

def broken(ws, params):
    raise RuntimeError("the bug")

TOOLS["noisy"] = dataclasses.replace(TOOLS["queue_status"], name="noisy", run=noisy)
TOOLS["broken"] = dataclasses.replace(TOOLS["queue_status"], name="broken", run=broken)
sys.exit(serve.run(sys.argv[1]))
"""


def test_stray_output_goes_to_stderr_and_a_bug_is_an_internal_error(
    start_serve: Any, ws: Workspace, project: Project
) -> None:
    serve = start_serve(ws, python_code=MISBEHAVING_TOOLS)
    assert serve.call("noisy")["ok"] is True
    broken = serve.call("broken")
    crash_log = ws.memory / "crash.log"
    assert broken["error"] == {
        "type": "internal",
        "message": f"internal error (RuntimeError): the bug. Its traceback and devclaw's version are in {crash_log}: "
        "please report it",
    }
    assert serve.close() == 0
    for noise in ("a stray print", "a child writing to fd 1", "a raw write to fd 1"):
        assert noise in serve.stderr
    assert str(crash_log) in serve.stderr  # the log says where the evidence is
    evidence = crash_log.read_text()
    assert "Traceback" in evidence and "RuntimeError: the bug" in evidence and "devclaw 0.1.0" in evidence
    # the fixture checks that stdout carried nothing but the two responses


@pytest.mark.parametrize("processes", [1, 2])
def test_serve_refuses_ids_it_could_not_echo_as_json(
    start_serve: Any, ws: Workspace, project: Project, processes: int
) -> None:
    serve = start_serve(ws, processes=processes)
    for raw in (
        b'{"id": NaN, "tool": "queue_status"}',
        b'{"id": Infinity, "tool": "queue_status"}',
        b'{"id": 1e400, "tool": "queue_status"}',
        b"[" * 100_000 + b"]" * 100_000,
    ):
        serve.send_raw(raw + b"\n")
        response = serve.receive()
        assert response["id"] is None and response["error"]["type"] == "invalid_input", response
    assert serve.close() == 0  # every line it wrote was valid JSON (the fixture checks stdout)


# ------------------------------------------------------------------------------------- --processes N


def two_workers(ws: Workspace) -> tuple[str, str]:
    """Two local projects (with one To Do issue each) that ``serve --processes 2`` runs in different workers."""
    by_worker: dict[int | None, str] = {}
    for n in range(100):
        group = f"-100{n}"
        by_worker.setdefault(worker_index(Request(n, "task_pickup", {"projectGroupId": group}, None, None), 2), group)
        if len(by_worker) == 2:
            break
    groups = (by_worker[0], by_worker[1])
    for group in groups:
        add_local_project(ws, group, name=f"p{group[1:]}")
        new_issue(local_tracker(ws, f"p{group[1:]}"))
    return groups


def worker_pids(serve: Serve, count: int) -> dict[int, int]:
    """Worker index -> pid, from the router's log (each worker's start is logged before any call)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        found = {int(n): int(pid) for n, pid in re.findall(r"worker (\d+) started \(pid (\d+)\)", serve.stderr)}
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)  # polling the log file, not waiting for an event


def pickup(group: str) -> dict[str, object]:
    return {"issueId": 1, "role": "dev", "projectGroupId": group}


def test_a_project_goes_to_the_same_worker_every_time_and_calls_without_one_take_turns() -> None:
    def index(params: object) -> int | None:
        return worker_index(Request(1, "task_pickup", params, None, None), 4)

    groups = [f"-100{n}" for n in range(40)]
    assert [index({"projectGroupId": g}) for g in groups] == [index({"projectGroupId": g}) for g in groups]
    assert {index({"projectGroupId": g}) for g in groups} == {0, 1, 2, 3}
    # As the tools read it: a number or padded text names the same project, so the same worker.
    assert (
        index({"projectGroupId": " -1007 "}) == index({"projectGroupId": -1007}) == index({"projectGroupId": "-1007"})
    )
    nameless: list[object] = [{}, [], {"projectGroupId": None}, {"projectGroupId": True}, {"projectGroupId": ""}, "x"]
    assert [index(params) for params in nameless] == [None] * len(nameless)


def test_each_project_runs_in_its_own_worker_whose_death_fails_only_its_calls(start_serve: Any, ws: Workspace) -> None:
    first, second = two_workers(ws)
    serve = start_serve(ws, processes=2)
    pids = worker_pids(serve, 2)
    locks = {group: filelock.FileLock(_lock_file(ws, group)) for group in (first, second)}
    for lock in locks.values():
        lock.acquire()  # both pickups wait for their project's lock, each in its worker
    try:
        serve.send("second", "task_pickup", pickup(second))
        serve.send("first", "task_pickup", pickup(first))
        serve.send("first again", "task_pickup", pickup(first))
        os.kill(pids[0], signal.SIGKILL)
        failed = [serve.receive(), serve.receive()]
        assert sorted(r["id"] for r in failed) == ["first", "first again"]
        for response in failed:
            assert response["ok"] is False and response["error"]["type"] == "internal"
            assert f"worker process (pid {pids[0]}) exited" in response["error"]["message"]
        assert serve.responses.empty()  # the other worker's call is still waiting for its lock
    finally:
        for lock in locks.values():
            lock.release()
    answered = serve.receive()
    assert answered["id"] == "second" and answered["ok"] is True, answered
    retried = serve.call("task_pickup", pickup(first))  # a new worker takes the project's calls
    assert retried["ok"] is True and retried["result"]["issueId"] == 1, retried
    assert serve.close() == 0
    state = ws.store.read()
    assert state.project(first).worker("dev").active and state.project(second).worker("dev").active
    assert f"worker 0 (pid {pids[0]}) exited" in serve.stderr and "Traceback" not in serve.stderr


def test_a_projects_calls_run_in_order_across_workers(start_serve: Any, ws: Workspace) -> None:
    groups = two_workers(ws)
    serve = start_serve(ws, processes=2)
    steps = (("task_pickup", "dev", None), ("task_complete", "dev", "done"), ("task_pickup", "qa", None),
             ("task_complete", "qa", "pass"))  # fmt: skip
    for tool, role, result in steps:
        for group in groups:
            params = {"projectGroupId": group, "role": role, **({"issueId": 1} if result is None else {})}
            response = serve.call(tool, {**params, **({"result": result} if result else {})})
            assert response["ok"] is True, response
    for group in groups:
        issue = local_tracker(ws, f"p{group[1:]}").get_issue(1)
        assert issue.labels == ("Done",)
        events = [(r["event"], r.get("role")) for r in ws.audit.records() if r.get("groupId") == group]
        assert [e for e in events if e[0] in {"task_pickup", "task_complete"}] == [
            ("task_pickup", "dev"), ("task_complete", "dev"), ("task_pickup", "qa"), ("task_complete", "qa")
        ]  # fmt: skip
    # The same id twice in flight (the caller's choice): both are answered.
    serve.send_raw(b"".join(json.dumps({"id": "same", "tool": "queue_status"}).encode() + b"\n" for _ in range(2)))
    assert [serve.receive()["id"], serve.receive()["id"]] == ["same", "same"]


def test_end_of_input_lets_a_workers_mutation_in_flight_finish(start_serve: Any, ws: Workspace) -> None:
    first, _ = two_workers(ws)
    serve = start_serve(ws, processes=2)
    with filelock.FileLock(_lock_file(ws, first)):
        serve.send(1, "task_pickup", pickup(first))
        assert serve.process.stdin is not None
        serve.process.stdin.close()  # the router reads the call before the end, so its worker gets it
    assert serve.process.wait(timeout=TIMEOUT) == 0
    response = serve.receive()
    assert response["id"] == 1 and response["ok"] is True, response
    assert local_tracker(ws, f"p{first[1:]}").get_issue(1).labels == ("Doing",)


@pytest.mark.parametrize(
    ("arguments", "env", "message"),
    [
        (["--processes", "0"], {}, "--processes must be from 1 to 64, not 0"),
        ([], {"DEVCLAW_SERVE_PROCESSES": "two"}, "DEVCLAW_SERVE_PROCESSES must be a whole number"),
        ([], {"DEVCLAW_SERVE_PROCESSES": "65"}, "DEVCLAW_SERVE_PROCESSES must be from 1 to 64, not 65"),
    ],
)
def test_a_wrong_number_of_processes_is_refused_before_serving(
    ws: Workspace, project: Project, arguments: list[str], env: dict[str, str], message: str
) -> None:
    command = [sys.executable, "-m", "devclaw.cli", "--workspace", str(ws.root), "serve", *arguments]
    done = subprocess.run(command, input=b"", capture_output=True, env={**os.environ, **env}, timeout=TIMEOUT)
    assert done.returncode != 0 and message in done.stderr.decode() and done.stdout == b""
