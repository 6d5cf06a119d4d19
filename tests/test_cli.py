"""The command line as users run it: a real ``devclaw`` subprocess, JSON out, exit codes, no tracebacks."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from devclaw.workspace import Workspace
from tests.conftest import GROUP, PYTHON


def devclaw(ws: Path | None, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    prefix = ["--workspace", str(ws)] if ws is not None else []
    done = subprocess.run(
        [PYTHON, "-m", "devclaw", *prefix, *args], input=stdin, capture_output=True, text=True, timeout=60,
        env=env, cwd=cwd,
    )  # fmt: skip
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    return done


def ok(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)


def failed(done: subprocess.CompletedProcess[str], code: int, type_: str) -> str:
    assert done.returncode == code, done.stdout + done.stderr
    data = json.loads(done.stdout)
    assert data["success"] is False and data["error"]["type"] == type_
    message: str = data["error"]["message"]
    return message


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    ok(devclaw(path, "project", "add", GROUP, "--name", "webapp", "--group-name", "Dev - Webapp"))
    return path


def test_project_add_creates_labels_once(tmp_path: Path) -> None:
    path = tmp_path / "ws"
    first = ok(devclaw(path, "project", "add", GROUP, "--name", "webapp"))
    assert first["labelsCreated"] == ["Planning", "To Do", "Doing", "To Test", "Testing", "Done", "To Improve",
                                      "Refining"]  # fmt: skip
    assert first["project"]["tracker"] == {"provider": "local", "path": "webapp", "baseUrl": None, "tokenEnv": None}
    again = ok(devclaw(path, "project", "edit", GROUP, "--group-name", "Dev - Webapp"))
    assert again["labelsCreated"] == [] and again["updated"] is True
    listed = ok(devclaw(path, "project", "list", "--json"))
    assert list(listed) == [GROUP] and listed[GROUP]["workers"]["dev"][0]["active"] is False


def test_issue_commands_with_negative_group_ids(root: Path) -> None:
    created = ok(devclaw(root, "issue", "create", GROUP, "--title", "Add login", "--label", "planning"))
    assert created["id"] == 1 and created["labels"] == ["Planning"] and created["state"] == "open"
    shown = ok(devclaw(root, "issue", "show", GROUP, "1"))
    assert set(shown) == {"id", "title", "description", "state", "labels", "url"}
    moved = ok(devclaw(root, "issue", "label", GROUP, "1", "To Do"))
    assert moved["labels"] == ["To Do"]
    refused = failed(devclaw(root, "issue", "label", GROUP, "1", "Done"), 1, "workflow")
    assert 'from "To Do" to "Done"' in refused and "--force" in refused
    assert ok(devclaw(root, "issue", "label", GROUP, "1", "Done", "--force"))["labels"] == ["Done"]
    assert [i["id"] for i in ok(devclaw(root, "issue", "list", GROUP, "--label", "Done", "--json"))] == [1]
    assert "not found" in failed(devclaw(root, "issue", "show", GROUP, "7"), 1, "not_found")


def test_call_from_argument_and_from_stdin(root: Path) -> None:
    ok(devclaw(root, "issue", "create", GROUP, "--title", "Add login", "--label", "To Do"))
    picked = ok(
        devclaw(root, "call", "task_pickup", json.dumps({"issueId": 1, "role": "dev", "projectGroupId": GROUP}))
    )
    assert picked["labelTransition"] == "To Do → Doing"
    done = ok(devclaw(root, "call", "task_complete", stdin=json.dumps({"role": "dev", "result": "done",
                                                                       "projectGroupId": GROUP})))  # fmt: skip
    assert done["announcement"] == "✅ DEV done #1. Moved to QA queue."
    text = devclaw(root, "call", "queue_status", "{}").stdout
    assert text.startswith('{\n  "success": true,\n  "projects": [')  # 2-space indent


@pytest.mark.parametrize(
    ("args", "code", "type_", "fragment"),
    [
        (["call", "task_pickup", "{bad json"], 2, "invalid_input", "Parameters are not valid JSON"),
        (["call", "nope", "{}"], 2, "invalid_input", "Unknown tool 'nope'"),
        (["call", "task_pickup", '{"role": "dev", "projectGroupId": "-1"}'], 2, "invalid_input", "issueId: Field required"),
        (["call", "task_pickup", '{"issueId": "x", "role": "dev", "projectGroupId": "-1"}'], 2, "invalid_input", "issueId"),
        (["call", "task_pickup", '{"issueId": 1, "role": "dev", "projectGroupId": "-1"}'], 1, "not_found",
         f"Project not found for groupId: -1. Available: {GROUP}"),
        (["call", "task_complete", '{"role": "qa", "result": "pass", "projectGroupId": "' + GROUP + '"}'], 1, "workflow",
         "QA worker is not active on webapp. Nothing to complete."),
    ],
)  # fmt: skip
def test_call_failures_are_json_on_stdout(root: Path, args: list[str], code: int, type_: str, fragment: str) -> None:
    before = (root / "memory" / "projects.json").read_bytes()
    assert fragment in failed(devclaw(root, *args), code, type_)
    assert (root / "memory" / "projects.json").read_bytes() == before


def test_corrupt_state_file_is_reported_not_overwritten(root: Path) -> None:
    state = root / "memory" / "projects.json"
    state.write_text('{"version": 1, "projects": ')
    message = failed(devclaw(root, "call", "queue_status", "{}"), 1, "config")
    assert str(state) in message and "Invalid JSON" in message
    done = devclaw(root, "status")
    assert done.returncode == 1 and "not a valid devclaw projects file" in done.stderr
    assert state.read_text() == '{"version": 1, "projects": '


def test_tools_prints_every_schema(root: Path) -> None:
    tools = ok(devclaw(None, "tools"))
    assert [t["name"] for t in tools] == ["task_pickup", "task_pickup_confirm", "task_complete", "queue_status",
                                          "session_health", "loop_status"]  # fmt: skip
    assert all(t["parameters"]["type"] == "object" for t in tools)


def test_workspace_from_environment_then_cwd(root: Path, tmp_path: Path) -> None:
    import os

    env = {**os.environ, "DEVCLAW_WORKSPACE": str(root)}
    assert GROUP in ok(devclaw(None, "project", "list", "--json", env=env))
    assert GROUP in ok(devclaw(None, "project", "list", "--json", cwd=root))
    elsewhere = failed(devclaw(None, "project", "list", "--json", cwd=tmp_path), 1, "config")
    assert f"{tmp_path} is not a devclaw workspace" in elsewhere and "devclaw init" in elsewhere


def test_status_board(root: Path) -> None:
    ok(devclaw(root, "issue", "create", GROUP, "--title", "Add login", "--label", "To Do"))
    ok(devclaw(root, "call", "task_pickup", json.dumps({"issueId": 1, "role": "dev", "projectGroupId": GROUP})))
    ok(devclaw(root, "issue", "create", GROUP, "--title", "Fix typo", "--label", "To Test"))
    board = devclaw(root, "status").stdout
    assert f"webapp  ({GROUP})" in board
    assert re.search(r"DEV working on #1 with sonnet for \d+ (s|min)  \(no session confirmed yet\)", board), board
    assert "To Test:    #2 Fix typo" in board and "To Do:      -" in board


def test_audit_command_filters(root: Path) -> None:
    ok(devclaw(root, "issue", "create", GROUP, "--title", "Add login", "--label", "To Do"))
    ok(devclaw(root, "issue", "create", GROUP, "--title", "Add logout", "--label", "To Do"))
    ok(devclaw(root, "call", "task_pickup", json.dumps({"issueId": 1, "role": "dev", "projectGroupId": GROUP})))
    devclaw(root, "call", "task_pickup", json.dumps({"issueId": 2, "role": "dev", "projectGroupId": GROUP}))
    lines = devclaw(root, "audit", "--event", "task_pickup", "--json").stdout.splitlines()
    assert [json.loads(line)["issue"] for line in lines] == [1]
    assert devclaw(root, "audit", "--project", GROUP, "--event", "error").stdout.count("DEV worker already") == 1
    assert len(devclaw(root, "audit", "--issue", "2", "--json").stdout.splitlines()) == 1
    assert devclaw(root, "audit", "--since", "2999-01-01").stdout == ""
    readable = devclaw(root, "audit", "--event", "task_pickup").stdout
    assert " task_pickup " in readable and "webapp #1 DEV" in readable
    bad = devclaw(root, "audit", "--since", "yesterday")
    assert bad.returncode == 2 and "--since takes an ISO date" in bad.stderr


def test_usage_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    assert devclaw(tmp_path, "issue", "show").returncode == 2
    assert devclaw(tmp_path).returncode == 2


def test_demo_plays_the_lifecycle(tmp_path: Path) -> None:
    done = devclaw(None, "demo", "--workspace", str(tmp_path / "demo"))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for line in [
        "🔧 Spawning DEV (sonnet) for #1: Add login page",
        "✅ DEV done #1 — Login form with validation. Moved to QA queue.",
        "❌ QA FAIL #1 — Redirect after login is broken. Sent back to DEV.",
        "🔧 Sending DEV (sonnet) for #1: Add login page",
        "🎉 QA PASS #1. Issue closed.",
        "🤔 QA REFINE #2 — Unclear whether the year should be dynamic. Awaiting human decision.",
        "critical zombie_session",
        "To Do:      #3 Redesign session storage",
        "jq -c 'select(.event==\"task_pickup\")'",
    ]:
        assert line in out, line
    ws = Workspace(tmp_path / "demo")
    assert ws.store.read().project("-1001234567890").worker("dev").active is False
    assert len(list(ws.audit.records(event="task_complete"))) == 6


def test_an_empty_audit_answer_says_what_was_read(root: Path) -> None:
    done = devclaw(root, "audit", "--event", "task_complete")
    assert done.returncode == 0 and done.stdout == ""
    assert f"no matching line in {root / 'memory' / 'audit.log'}" in done.stderr


def test_issue_label_is_applied_by_the_engine_with_its_audit_line(root: Path) -> None:
    ok(devclaw(root, "issue", "create", GROUP, "--title", "Plan it"))  # created on Planning
    moved = ok(devclaw(root, "issue", "label", GROUP, "1", "To Do"))
    assert moved["labels"] == ["To Do"]
    [line] = [json.loads(x) for x in devclaw(root, "audit", "--event", "issue_label", "--json").stdout.splitlines()]
    assert (line["project"], line["labelTransition"], line["forced"]) == ("webapp", "Planning → To Do", False)
    refused = devclaw(root, "issue", "label", GROUP, "1", "Done")
    assert refused.returncode == 1 and "not a workflow move" in refused.stdout + refused.stderr
