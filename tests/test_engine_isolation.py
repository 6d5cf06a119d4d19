"""Projects are isolated in ``devclaw serve``: project A's tracker hangs past the HTTP timeout, and project
B (embedded tracker) is answered meanwhile — its queue, a pickup, a confirm and a completion all come back
before A's pickup does. Only the order of the responses is asserted, never a duration."""

from __future__ import annotations

import contextlib
import queue
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devclaw.workspace import Workspace
from tests.conftest import GROUP, NO_CHANGES, OTHER_GROUP, add_local_project, local_tracker, new_issue
from tests.fakes import FakeGitLab, FakeServer
from tests.test_serve import TIMEOUT, Serve
from tests.test_tool_budgets import TOKEN_ENV, register

HANG = 3600.0  # far past the client's HTTP timeout: A's requests are never answered during the test


@pytest.fixture
def hung_gitlab(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitLab]:
    fake = FakeGitLab("acme/platform/webapp")
    monkeypatch.setenv(TOKEN_ENV, fake.token)  # the serve child inherits it
    with FakeServer(fake) as server:
        register(ws, "gitlab", server.url, changes=NO_CHANGES)
        fake.project.add("Slow task", ["To Do"])
        fake.log.clear()
        fake.stall(HANG, times=1000)
        yield fake


def test_a_hung_tracker_does_not_hold_up_another_project(
    ws: Workspace, hung_gitlab: FakeGitLab, tmp_path: Path
) -> None:
    add_local_project(ws, OTHER_GROUP, name="api")
    b_issue = new_issue(local_tracker(ws, "api"))
    serve = Serve([sys.executable, "-m", "devclaw.cli", "--workspace", str(ws.root), "serve"], tmp_path / "serve.err")
    try:
        serve.send("a-pickup", "task_pickup", {"projectGroupId": GROUP, "issueId": 1, "role": "dev"})
        # Wait until A's pickup is in flight: the fake has its request (and will not answer it).
        started = time.monotonic()
        while not hung_gitlab.log:
            assert serve.process.poll() is None and time.monotonic() - started < TIMEOUT, serve.stderr
            with contextlib.suppress(queue.Empty):
                pytest.fail(f"A answered before its tracker did: {serve.receive(timeout=0.05)}")
        b_calls = [
            ("b-queue", "queue_status", {"projectGroupId": OTHER_GROUP}),
            ("b-pickup", "task_pickup", {"projectGroupId": OTHER_GROUP, "issueId": b_issue, "role": "dev"}),
            ("b-confirm", "task_pickup_confirm", {"projectGroupId": OTHER_GROUP, "role": "dev", "sessionId": "s"}),
            ("b-complete", "task_complete", {"projectGroupId": OTHER_GROUP, "role": "dev", "result": "done"}),
        ]
        order = []
        for request_id, tool, params in b_calls:
            serve.send(request_id, tool, params)
            response = serve.receive(timeout=TIMEOUT)
            order.append(response["id"])
            assert response["id"] == request_id, f"{response} came before B's {request_id}"
            assert response["ok"] is True, response
        assert order == [request_id for request_id, _, _ in b_calls]
        assert serve.responses.empty()  # A's pickup is still hanging
        assert local_tracker(ws, "api").get_issue(b_issue).label == "To Test"
        assert hung_gitlab.project.issues[1].labels == ["To Do"]
    finally:
        serve.kill()
    assert serve.stray == []


def test_a_hung_tracker_does_not_hold_up_another_project_through_the_cli(
    ws: Workspace, hung_gitlab: FakeGitLab
) -> None:
    import json
    import subprocess

    add_local_project(ws, OTHER_GROUP, name="api")
    b_issue = new_issue(local_tracker(ws, "api"))
    cli = [sys.executable, "-m", "devclaw.cli", "--workspace", str(ws.root), "call"]
    hung = subprocess.Popen(
        [*cli, "task_pickup", json.dumps({"projectGroupId": GROUP, "issueId": 1, "role": "dev"})],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        started = time.monotonic()
        while not hung_gitlab.log:  # A's process is in its tracker request, and will stay there
            assert hung.poll() is None and time.monotonic() - started < TIMEOUT
            time.sleep(0.05)
        for tool, params in [
            ("task_pickup", {"projectGroupId": OTHER_GROUP, "issueId": b_issue, "role": "dev"}),
            ("task_complete", {"projectGroupId": OTHER_GROUP, "role": "dev", "result": "done"}),
        ]:
            done = subprocess.run([*cli, tool, json.dumps(params)], capture_output=True, text=True, timeout=TIMEOUT)
            assert done.returncode == 0, done.stdout + done.stderr
        assert hung.poll() is None  # B's two calls were answered while A's still hangs
        assert local_tracker(ws, "api").get_issue(b_issue).label == "To Test"
    finally:
        hung.kill()  # by its own PID
        hung.wait(timeout=TIMEOUT)
