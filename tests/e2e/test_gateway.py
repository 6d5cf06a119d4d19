"""devclaw through a real OpenClaw 2026.9.6 gateway: loading, every tool, crash recovery, an agent turn.

The tests share one gateway (starting one takes 10-20 s) and run in file order; the last one stops it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from devclaw.tools import tool_specs

from .conftest import AGENT_GROUP, devclaw
from .fake_model import DEFAULT_USAGE, FINAL_ANSWER, FakeModel
from .gateway import Gateway

pytestmark = pytest.mark.e2e

GROUP = "-1001"
TOOL_NAMES = [spec["name"] for spec in tool_specs()]


def issue_labels(workspace: Path, group: str, issue: int) -> tuple[str, list[str]]:
    shown = devclaw(workspace, "issue", "show", group, str(issue))
    return shown["state"], shown["labels"]


def worker(workspace: Path, group: str, role: str) -> dict[str, Any]:
    state = json.loads((workspace / "memory" / "projects.json").read_text())
    role_state: dict[str, Any] = state["projects"][group]["workers"][role][0]
    return role_state


def audit_records(workspace: Path) -> list[dict[str, Any]]:
    lines = (workspace / "memory" / "audit.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def new_audit_events(workspace: Path, before: int) -> list[str]:
    return [record["event"] for record in audit_records(workspace)[before:]]


def test_plugin_is_loaded_with_every_tool(gateway: Gateway) -> None:
    done = gateway.cli("plugins", "inspect", "devclaw", "--runtime", "--json")
    assert done.returncode == 0, done.stderr
    plugin = json.loads(done.stdout)["plugin"]
    assert plugin["status"] == "loaded", plugin.get("error")
    assert sorted(plugin["toolNames"]) == sorted(TOOL_NAMES)
    assert sorted(plugin["contracts"]["tools"]) == sorted(TOOL_NAMES)


def test_full_lifecycle_through_tools_invoke(gateway: Gateway, agent_workspace: Path) -> None:
    ws = agent_workspace
    devclaw(ws, "project", "add", GROUP, "--name", "webapp", "--provider", "local")
    issue = devclaw(ws, "issue", "create", GROUP, "--title", "Add login page", "--label", "To Do")["id"]

    queue = gateway.result("queue_status", {"projectGroupId": GROUP})
    assert [p["queue"]["toDo"][0]["id"] for p in queue["projects"]] == [issue]

    audit_before = len(audit_records(ws))
    pickup = gateway.result("task_pickup", {"issueId": issue, "role": "dev", "projectGroupId": GROUP})
    assert pickup["sessionAction"] == "spawn"
    assert issue_labels(ws, GROUP, issue) == ("open", ["Doing"])
    assert worker(ws, GROUP, "dev")["active"] is True
    assert worker(ws, GROUP, "dev")["issueId"] == issue
    assert new_audit_events(ws, audit_before)[:1] == ["task_pickup"]

    gateway.result(
        "task_pickup_confirm", {"projectGroupId": GROUP, "role": "dev", "sessionId": "agent:main:subagent:dev-1"}
    )
    assert worker(ws, GROUP, "dev")["sessionId"] == "agent:main:subagent:dev-1"

    gateway.result("task_complete", {"role": "dev", "result": "done", "projectGroupId": GROUP, "summary": "Login form"})
    assert issue_labels(ws, GROUP, issue) == ("open", ["To Test"])
    assert worker(ws, GROUP, "dev")["active"] is False
    assert worker(ws, GROUP, "dev")["sessionId"] == "agent:main:subagent:dev-1"  # kept for reuse

    gateway.result("task_pickup", {"issueId": issue, "role": "qa", "projectGroupId": GROUP})
    assert issue_labels(ws, GROUP, issue) == ("open", ["Testing"])
    assert worker(ws, GROUP, "qa")["active"] is True

    qa_session = "agent:main:subagent:qa-1"
    gateway.result("task_pickup_confirm", {"projectGroupId": GROUP, "role": "qa", "sessionId": qa_session})
    health = gateway.result("session_health", {"activeSessions": [qa_session, "agent:main:subagent:dev-1"]})
    assert health["healthy"] is True, health
    assert health["issuesFound"] == 0

    gateway.result("task_complete", {"role": "qa", "result": "pass", "projectGroupId": GROUP})
    assert issue_labels(ws, GROUP, issue) == ("closed", ["Done"])
    assert worker(ws, GROUP, "qa")["active"] is False

    events = new_audit_events(ws, audit_before)
    for event in ("task_pickup", "task_complete", "health_check"):
        assert event in events, events


def test_a_bad_call_comes_back_as_an_error(gateway: Gateway, agent_workspace: Path) -> None:
    for args in ({"issueId": 99, "role": "dev", "projectGroupId": GROUP}, {"issueId": "one", "role": "tester"}):
        audit_before = len(audit_records(agent_workspace))
        status, body = gateway.invoke("task_pickup", args)
        assert status == 500 and body["ok"] is False, body
        [error] = audit_records(agent_workspace)[audit_before:]
        assert error["event"] == "error" and error["tool"] == "task_pickup"
        # HTTP callers get a generic error; the agent and the gateway log get devclaw's own message.
        expected = f"tool execution failed: DevclawError: {error['message']}"
        assert _wait_for(lambda text=expected: text in gateway.log_text()), gateway.log_tail()


def test_killing_devclaw_serve_fails_the_call_in_flight_and_the_next_call_works(gateway: Gateway) -> None:
    gateway.result("queue_status", {})  # make sure the process exists
    [pid] = gateway.devclaw_serve_pids()
    calls_sent = gateway.log_text().count(f"sent to devclaw serve pid {pid}")

    os.kill(pid, signal.SIGSTOP)  # it reads nothing more: the next call stays in flight
    try:
        in_flight: list[tuple[int, dict[str, Any]]] = []
        caller = threading.Thread(target=lambda: in_flight.append(gateway.invoke("queue_status", {})))
        caller.start()
        sent = f"sent to devclaw serve pid {pid}"
        assert _wait_for(lambda: gateway.log_text().count(sent) > calls_sent, timeout=30), gateway.log_tail()
    finally:
        os.kill(pid, signal.SIGKILL)
    caller.join(timeout=30)
    [(status, body)] = in_flight
    assert status == 500 and body["ok"] is False, body
    assert _wait_for(lambda: "devclaw serve exited (SIGKILL) while running queue_status" in gateway.log_text())

    assert gateway.result("queue_status", {})["projects"]
    [new_pid] = gateway.devclaw_serve_pids()
    assert new_pid != pid


def test_an_agent_turn_calls_queue_status_then_task_pickup(
    gateway: Gateway, agent_workspace: Path, fake_model: FakeModel
) -> None:
    assert issue_labels(agent_workspace, AGENT_GROUP, 1) == ("open", ["To Do"])
    serve_before = gateway.devclaw_serve_pids()
    done = gateway.cli("agent", "--session-id", "e2e-turn", "--message", "Heartbeat: check the queue.", "--json")
    assert done.returncode == 0, done.stderr + done.stdout + gateway.log_tail()

    [(first, queue), (second, pickup)] = fake_model.tool_results()
    assert (first, second) == ("queue_status", "task_pickup")
    assert json.loads(queue)["projects"][0]["queue"]["toDo"] == [{"id": 1, "title": "Add a logout button"}]
    assert json.loads(pickup)["sessionAction"] == "spawn"
    assert FINAL_ANSWER in done.stdout
    assert issue_labels(agent_workspace, AGENT_GROUP, 1) == ("open", ["Doing"])
    assert worker(agent_workspace, AGENT_GROUP, "dev")["active"] is True
    # The agent run registers the plugin again; its calls still go to the one devclaw serve.
    assert gateway.devclaw_serve_pids() == serve_before and len(serve_before) == 1


WORKER_SESSION = "agent:main:subagent:manual-worker-1"


def test_a_task_completed_by_hand_counts_its_sessions_tokens(
    gateway: Gateway, agent_workspace: Path, fake_model: FakeModel
) -> None:
    # The orchestrator's turn above picked up issue 1; its worker runs in a session of its own (as
    # sessions_spawn would start it), is confirmed, then completed by hand with no usage given.
    assert worker(agent_workspace, AGENT_GROUP, "dev")["active"] is True
    before = len(fake_model.requests)
    done = gateway.cli("agent", "--session-key", WORKER_SESSION, "--message", "Work on issue 1.", "--json")
    assert done.returncode == 0, done.stderr + done.stdout + gateway.log_tail()
    runs = len(fake_model.requests) - before
    assert runs >= 1
    gateway.result("task_pickup_confirm", {"projectGroupId": AGENT_GROUP, "role": "dev", "sessionId": WORKER_SESSION})
    gateway.result("task_complete", {"role": "dev", "result": "done", "projectGroupId": AGENT_GROUP})

    [line] = [
        r for r in audit_records(agent_workspace) if r["event"] == "task_complete" and r["groupId"] == AGENT_GROUP
    ]
    per_request = {"input": DEFAULT_USAGE["prompt_tokens"], "output": DEFAULT_USAGE["completion_tokens"]}
    usage = line["usage"]
    assert {key: usage[key] for key in per_request} == {key: value * runs for key, value in per_request.items()}
    assert (usage["cacheRead"], usage["cacheWrite"]) == (0, 0)
    assert line["model"] == "fake/fake-model"
    total = devclaw(agent_workspace, "cost", "--project", "agentdemo", "--json")["totals"]
    assert [(t["tasks"], t["unmeasured"], t["input"]) for t in total] == [(1, 0, usage["input"])]


def test_stopping_the_gateway_stops_devclaw_serve(gateway: Gateway) -> None:
    gateway.result("queue_status", {})
    [pid] = gateway.devclaw_serve_pids()
    gateway.stop()
    assert gateway.process is not None and gateway.process.returncode is not None
    assert gateway.leftovers() == [], "processes the gateway started outlived it"
    assert not Path(f"/proc/{pid}").exists() or pid not in gateway.leftovers(wait=0)


def _wait_for(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
