"""``devclaw state rebuild``: projects.json lost or corrupt, rebuilt from the backup, the log and the tracker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devclaw.cli import main
from devclaw.workspace import Workspace
from tests.conftest import GROUP, OTHER_GROUP, add_local_project, call, local_tracker, new_issue

DEV_SESSION = "agent:main:subagent:dev-1"
QA_SESSION = "agent:main:subagent:qa-1"


def busy_workspace(ws: Workspace) -> None:
    """webapp: DEV on #3 (confirmed), QA on #1 (confirmed); api: idle, DEV session kept from a done task."""
    add_local_project(ws, repo="/srv/webapp", base_branch="develop")
    add_local_project(ws, OTHER_GROUP, "api")
    webapp, api = local_tracker(ws), local_tracker(ws, "api")
    first, _, third = new_issue(webapp), new_issue(webapp, "Second"), new_issue(webapp, "Third")
    call(ws, "task_pickup", issueId=first, role="dev", projectGroupId=GROUP)
    call(ws, "task_pickup_confirm", projectGroupId=GROUP, role="dev", sessionId=DEV_SESSION)
    call(ws, "task_complete", role="dev", result="done", projectGroupId=GROUP)
    call(ws, "task_pickup", issueId=first, role="qa", projectGroupId=GROUP)
    call(ws, "task_pickup_confirm", projectGroupId=GROUP, role="qa", sessionId=QA_SESSION)
    call(ws, "task_pickup", issueId=third, role="dev", projectGroupId=GROUP, modelOverride="opus")
    api_issue = new_issue(api)
    call(ws, "task_pickup", issueId=api_issue, role="dev", projectGroupId=OTHER_GROUP)
    call(ws, "task_pickup_confirm", projectGroupId=OTHER_GROUP, role="dev", sessionId="api-dev")
    call(ws, "task_complete", role="dev", result="done", projectGroupId=OTHER_GROUP)


def projects(ws: Workspace) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ws.store.path.read_text())["projects"]
    for project in data.values():
        for slots in project["workers"].values():
            for worker in slots:
                worker.pop("startTime")
                worker.pop(
                    "lastCompletion"
                )  # what a retried call answers: not rebuilt, a retry then fails clearly  # written by the tool's clock, rebuilt from the log's timestamps
    return data


def rebuild(ws: Workspace, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, Any]]:
    code = main(["--workspace", str(ws.root), "state", "rebuild", *extra])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def test_rebuild_from_the_log_alone(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    busy_workspace(ws)
    before = projects(ws)
    ws.store.path.write_text("{ this is not json")
    ws.store.backup_path.unlink()
    code, report = rebuild(ws, capsys)
    assert code == 0
    assert report["configFromLog"] == [GROUP, OTHER_GROUP] and report["configFromBackup"] == []
    assert report["activeWorkers"] == [{"groupId": GROUP, "role": "dev", "issueId": 3},
                                       {"groupId": GROUP, "role": "qa", "issueId": 1}]  # fmt: skip
    assert projects(ws) == before
    assert Path(report["keptAside"]).read_text() == "{ this is not json"
    state = ws.store.read()
    assert state.project(GROUP).worker("dev").start_time == list(ws.audit.records(event="task_pickup"))[-2]["ts"]
    assert call(ws, "session_health", checkTracker=True, activeSessions=[DEV_SESSION, QA_SESSION])["healthy"]
    call(ws, "task_complete", role="qa", result="pass", projectGroupId=GROUP)  # work goes on


def test_rebuild_takes_the_configuration_from_the_backup(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    busy_workspace(ws)
    data = json.loads(ws.store.path.read_text())
    data["health"]["qaFailLimit"] = 5
    data["models"] = {"sonnet": "anthropic/claude-sonnet-9"}
    with ws.store.locked():
        from devclaw.state import ProjectsFile

        ws.store.write(ProjectsFile.model_validate(data))  # the backup now has the defaults, the file the edits
        ws.store.write(ProjectsFile.model_validate(data))  # and now the backup has the edits too
    before = projects(ws)
    ws.store.path.unlink()  # lost
    code, report = rebuild(ws, capsys)
    assert code == 0 and report["keptAside"] is None
    assert report["configFromBackup"] == [GROUP, OTHER_GROUP] and report["configFromLog"] == []
    state = ws.store.read()
    assert state.health.qa_fail_limit == 5 and state.models == {"sonnet": "anthropic/claude-sonnet-9"}
    assert projects(ws) == before


def test_a_project_registered_after_the_backup_comes_from_the_log(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    add_local_project(ws)
    add_local_project(ws, OTHER_GROUP, "api")  # the backup holds only webapp now
    ws.store.path.write_bytes(b"\x00garbage")
    code, report = rebuild(ws, capsys)
    assert code == 0 and report["configFromBackup"] == [GROUP] and report["configFromLog"] == [OTHER_GROUP]
    assert sorted(ws.store.read().projects) == sorted([GROUP, OTHER_GROUP])


def test_a_valid_file_is_not_rebuilt_without_force(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    busy_workspace(ws)
    before = ws.store.path.read_bytes()
    code, answer = rebuild(ws, capsys)  # a JSON command: its failures are JSON too
    assert code == 1 and "is valid: nothing to rebuild" in answer["error"]["message"]
    assert ws.store.path.read_bytes() == before
    code, report = rebuild(ws, capsys, "--force")
    assert code == 0 and report["keptAside"].startswith(str(ws.store.path) + ".broken-")


def test_nothing_to_rebuild_from(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    ws.store.path.write_text("[]")
    code, answer = rebuild(ws, capsys)
    assert code == 1 and "Nothing to rebuild from" in answer["error"]["message"]
    assert ws.store.path.read_text() == "[]"


def test_a_zombie_session_that_health_released_stays_forgotten(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    from dataclasses import replace
    from datetime import timedelta

    add_local_project(ws)
    call(ws, "task_pickup", issueId=new_issue(local_tracker(ws)), role="dev", projectGroupId=GROUP)
    call(ws, "task_pickup_confirm", projectGroupId=GROUP, role="dev", sessionId=DEV_SESSION)
    later = replace(ws, clock=lambda: ws.clock() + timedelta(minutes=10))
    assert call(later, "session_health", autoFix=True, activeSessions=["other"])["fixesApplied"] == 1
    before = projects(ws)
    ws.store.path.write_text("corrupt")
    assert rebuild(ws, capsys)[0] == 0
    assert projects(ws) == before and before[GROUP]["workers"]["dev"][0]["sessionId"] is None
