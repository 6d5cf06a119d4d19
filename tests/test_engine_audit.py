"""A short write of audit.log (a full disk, simulated with RLIMIT_FSIZE so it runs unprivileged).

The CLI runs in a child process whose file size limit sits just above audit.log's size, with SIGXFSZ
ignored so the write comes back short instead of killing it. The change was made, so the call reports
success with ``auditError``; the log stays whole; projects.json keeps the missing line as a gap, which
``session_health`` with autoFix writes (marked late) once the limit is gone.
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
from typing import Any

import pytest

from devclaw.workspace import Workspace
from tests.conftest import GROUP, PYTHON, add_local_project, call, local_tracker, new_issue

DEV_SESSION = "agent:main:subagent:dev-1"


def run_limited(ws: Workspace, tool: str, params: dict[str, Any], limit: int) -> subprocess.CompletedProcess[str]:
    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # ignored signals stay ignored across exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    argv = [PYTHON, "-m", "devclaw.cli", "--workspace", str(ws.root), "call", tool, json.dumps(params)]
    return subprocess.run(argv, preexec_fn=limit_file_size, capture_output=True, text=True, timeout=60, check=False)


def grow_audit_log(ws: Workspace, size: int) -> None:
    """Whole earlier lines, so audit.log is the largest file devclaw writes (the limit binds only there)."""
    with ws.audit.path.open("a") as log:
        while ws.audit.path.stat().st_size + 200 < size:
            log.write(json.dumps({"ts": "2026-01-01T00:00:00.000Z", "event": "note", "pad": "x" * 150}) + "\n")
            log.flush()


def assert_whole(ws: Workspace) -> list[dict[str, Any]]:
    data = ws.audit.path.read_bytes()
    assert data.endswith(b"\n")
    records = [json.loads(line) for line in data.splitlines()]  # every line parses: none torn or glued
    assert all(isinstance(r, dict) for r in records)
    return records


@pytest.mark.parametrize("tool", ["task_pickup", "task_complete"])
def test_a_short_audit_write_reports_success_and_health_writes_the_line_late(ws: Workspace, tool: str) -> None:
    add_local_project(ws)
    tracker = local_tracker(ws)
    issue = new_issue(tracker)
    params: dict[str, Any] = {"projectGroupId": GROUP, "issueId": issue, "role": "dev"}
    if tool == "task_complete":
        call(ws, "task_pickup", **params)
        call(ws, "task_pickup_confirm", projectGroupId=GROUP, role="dev", sessionId=DEV_SESSION)
        params = {"projectGroupId": GROUP, "role": "dev", "result": "done"}
    grow_audit_log(ws, 512 * 1024)
    size = ws.audit.path.stat().st_size
    lines_before = len(assert_whole(ws))

    done = run_limited(ws, tool, params, size + 20)  # room for 20 bytes: every line is longer

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["success"] is True
    assert "audit line was not written" in result["auditError"], result
    assert ws.audit.path.stat().st_size == size  # the short write was truncated back
    assert len(assert_whole(ws)) == lines_before
    expected = "Doing" if tool == "task_pickup" else "To Test"
    assert tracker.get_issue(issue).label == expected  # the change was made
    gaps = json.loads(ws.store.path.read_text())["projects"][GROUP]["auditGaps"]
    assert [g["event"] for g in gaps][:1] == [tool]

    check = call(ws, "session_health")
    assert any(i["type"] == "audit_gap" for i in check["issues"]), check["issues"]
    fixed = call(ws, "session_health", autoFix=True, activeSessions=[DEV_SESSION])
    assert any(i["type"] == "audit_gap" and i["fixed"] for i in fixed["issues"]), fixed["issues"]
    records = assert_whole(ws)
    late = [r for r in records if r["event"] == tool and str(r.get("issue")) == str(issue) and r.get("late")]
    assert len(late) == 1
    assert json.loads(ws.store.path.read_text())["projects"][GROUP].get("auditGaps", []) == []
    again = call(ws, "session_health", autoFix=True, activeSessions=[DEV_SESSION])
    assert again["fixesApplied"] == 0, again["issues"]
