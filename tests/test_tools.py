"""The tools on the embedded tracker: every branch, every error message, nothing changed on error."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from devclaw.errors import DevclawError, InputError, NotFoundError, StateError, WorkflowError
from devclaw.state import Project
from devclaw.tools import TOOLS, call_tool, tool_specs
from devclaw.trackers.local import LocalTracker
from devclaw.workflow import Label
from devclaw.workspace import Workspace
from tests.conftest import GROUP, OTHER_GROUP, add_local_project, audit_events, call, new_issue, snapshot

DEV_SESSION = "agent:main:subagent:dev-1"
QA_SESSION = "agent:main:subagent:qa-1"


def pickup(ws: Workspace, issue: int, role: str, **extra: Any) -> dict[str, Any]:
    return call(ws, "task_pickup", issueId=issue, role=role, projectGroupId=GROUP, **extra)


def complete(ws: Workspace, role: str, result: str, **extra: Any) -> dict[str, Any]:
    return call(ws, "task_complete", role=role, result=result, projectGroupId=GROUP, **extra)


def worker(ws: Workspace, role: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ws.store.path.read_text())["projects"][GROUP]["workers"][role][0]
    # What a retry needs (lastCompletion) and the run's usage are checked by the engine tests.
    return {key: value for key, value in data.items() if key not in ("lastCompletion", "usage")}


def label_of(tracker: LocalTracker, issue: int) -> str | None:
    return tracker.get_issue(issue).label


def test_first_pickup_spawns_and_returns_the_reference_fields(ws: Workspace, tracker: LocalTracker) -> None:
    issue = new_issue(tracker)
    result = pickup(ws, issue, "dev")
    assert result == {
        "success": True, "project": "webapp", "groupId": GROUP, "issueId": issue, "issueTitle": "Add login page",
        "issueUrl": f"devclaw://webapp/issues/{issue}", "role": "dev", "model": "sonnet",
        "fullModel": "anthropic/claude-sonnet-4-5", "modelReason": "Standard dev task", "sessionAction": "spawn",
        "announcement": "🔧 Spawning DEV (sonnet) for #1: Add login page", "labelTransition": "To Do → Doing",
        "taskMessage": result["taskMessage"], "instructions": result["instructions"],
    }  # fmt: skip
    assert "sessionId" not in result
    assert "sessions_spawn" in result["instructions"] and "task_pickup_confirm" in result["instructions"]
    assert '"model": "anthropic/claude-sonnet-4-5"' in result["instructions"]
    assert f"issue #{issue} — Add login page" in result["taskMessage"] and "DONE:" in result["taskMessage"]
    assert label_of(tracker, issue) is Label.DOING
    state = worker(ws, "dev")
    assert state["active"] is True and state["issueId"] == 1 and state["model"] == "sonnet"
    assert state["startTime"].endswith("Z")
    assert audit_events(ws)[-2:] == ["task_pickup", "model_selection"]


def test_confirm_then_reuse_sends_to_the_saved_session(ws: Workspace, tracker: LocalTracker) -> None:
    first, second = new_issue(tracker), new_issue(tracker, "Second")
    pickup(ws, first, "dev")
    confirmed = call(ws, "task_pickup_confirm", projectGroupId=GROUP, role="dev", sessionId=DEV_SESSION)
    assert confirmed == {"success": True, "project": "webapp", "groupId": GROUP, "role": "dev", "issueId": first,
                         "sessionId": DEV_SESSION}  # fmt: skip
    complete(ws, "dev", "done")
    again = pickup(ws, second, "dev")
    assert again["sessionAction"] == "send" and again["sessionId"] == DEV_SESSION
    assert again["announcement"].startswith("🔧 Sending DEV (sonnet) for #2")
    assert "sessions_send" in again["instructions"] and DEV_SESSION in again["instructions"]
    assert worker(ws, "dev")["sessionId"] == DEV_SESSION


def test_full_lifecycle_with_fail_fix_and_pass(ws: Workspace, tracker: LocalTracker) -> None:
    issue = new_issue(tracker, extra=("priority::high",))
    pickup(ws, issue, "dev")
    call(ws, "task_pickup_confirm", projectGroupId=GROUP, role="dev", sessionId=DEV_SESSION)
    done = complete(ws, "dev", "done", summary="Login page with OAuth")
    assert done["announcement"] == "✅ DEV done #1 — Login page with OAuth. Moved to QA queue."
    assert done["labelTransition"] == "Doing → To Test" and done["gitPull"].startswith("warning: no repo")
    assert worker(ws, "dev") == {"active": False, "sessionId": DEV_SESSION, "issueId": None,
                                 "startTime": worker(ws, "dev")["startTime"], "model": "sonnet", "pickedFrom": None}  # fmt: skip
    qa = pickup(ws, issue, "qa")
    assert qa["announcement"] == "🔍 Spawning QA (grok) for #1: Add login page" and qa["labelTransition"] == (
        "To Test → Testing"
    )
    call(ws, "task_pickup_confirm", projectGroupId=GROUP, role="qa", sessionId=QA_SESSION)
    fail = complete(ws, "qa", "fail", summary="OAuth redirect broken")
    assert fail["announcement"] == "❌ QA FAIL #1 — OAuth redirect broken. Sent back to DEV."
    assert fail["labelTransition"] == "Testing → To Improve" and fail["issueReopened"] is False
    assert fail["devSessionId"] == DEV_SESSION and fail["devModel"] == "sonnet"
    assert '"issueId": 1, "role": "dev"' in fail["devFixInstructions"]
    assert "OAuth redirect broken" in fail["devFixInstructions"]
    fix = pickup(ws, issue, "dev")
    assert fix["labelTransition"] == "To Improve → Doing" and fix["sessionAction"] == "send"
    complete(ws, "dev", "done")
    pickup(ws, issue, "qa")
    passed = complete(ws, "qa", "pass")
    assert passed["announcement"] == "🎉 QA PASS #1. Issue closed." and passed["issueClosed"] is True
    final = tracker.get_issue(issue)
    assert final.state == "closed" and final.labels == ("priority::high", "Done")


def test_refine_waits_for_a_human(ws: Workspace, tracker: LocalTracker) -> None:
    issue = new_issue(tracker)
    pickup(ws, issue, "dev")
    complete(ws, "dev", "done")
    pickup(ws, issue, "qa")
    refine = complete(ws, "qa", "refine", summary="Needs a product decision")
    assert refine["announcement"] == "🤔 QA REFINE #1 — Needs a product decision. Awaiting human decision."
    assert label_of(tracker, issue) is Label.REFINING


def test_qa_fail_reopens_a_closed_issue(ws: Workspace, tracker: LocalTracker) -> None:
    issue = new_issue(tracker, label=Label.TO_TEST)
    pickup(ws, issue, "qa")
    tracker.move_issue(tracker.get_issue(issue), Label.TESTING, "closed")  # closed by a merge meanwhile
    fail = complete(ws, "qa", "fail")
    assert fail["issueReopened"] is True and tracker.get_issue(issue).state == "open"
    assert fail["announcement"] == "❌ QA FAIL #1. Sent back to DEV."


@pytest.mark.parametrize(
    ("label", "role", "message"),
    [
        (Label.DOING, "dev", 'Issue #1 has label "Doing" but expected one of: "To Do", "To Improve". Cannot pick up for DEV.'),
        (None, "dev", 'Issue #1 has label "none" but expected one of: "To Do", "To Improve". Cannot pick up for DEV.'),
        (Label.TO_DO, "qa", 'Issue #1 has label "To Do" but expected one of: "To Test". Cannot pick up for QA.'),
    ],
)  # fmt: skip
def test_pickup_from_a_wrong_label_changes_nothing(
    ws: Workspace, tracker: LocalTracker, label: Label | None, role: str, message: str
) -> None:
    new_issue(tracker, label=label)
    before = snapshot(ws)
    with pytest.raises(WorkflowError) as caught:
        pickup(ws, 1, role)
    assert caught.value.message == message
    after = snapshot(ws)
    assert after[0] == before[0] and after[2] == before[2]
    assert audit_events(ws)[-1] == "error"


def test_pickup_while_active_names_issue_and_session(ws: Workspace, tracker: LocalTracker) -> None:
    first, second = new_issue(tracker), new_issue(tracker)
    pickup(ws, first, "dev")
    call(ws, "task_pickup_confirm", projectGroupId=GROUP, role="dev", sessionId=DEV_SESSION)
    with pytest.raises(WorkflowError) as caught:
        pickup(ws, second, "dev")
    assert caught.value.message == (
        f"DEV worker already active on webapp (issue: 1, session: {DEV_SESSION}). Complete current task first."
    )
    assert label_of(tracker, second) is Label.TO_DO


def test_unknown_project_lists_available_ids(ws: Workspace, project: Project) -> None:
    add_local_project(ws, OTHER_GROUP, "api")
    with pytest.raises(NotFoundError) as caught:
        call(ws, "task_pickup", issueId=1, role="dev", projectGroupId="-42")
    assert caught.value.message == f"Project not found for groupId: -42. Available: {GROUP}, {OTHER_GROUP}"


def test_missing_issue(ws: Workspace, project: Project) -> None:
    with pytest.raises(NotFoundError, match="issue #9 not found in webapp"):
        pickup(ws, 9, "dev")


def test_closed_issue_is_not_picked_up(ws: Workspace, tracker: LocalTracker) -> None:
    issue = new_issue(tracker)
    tracker.move_issue(tracker.get_issue(issue), Label.TO_DO, "closed")
    with pytest.raises(WorkflowError, match="is closed"):
        pickup(ws, issue, "dev")


@pytest.mark.parametrize(
    ("role", "result", "message"),
    [
        ("dev", "pass", 'DEV can only complete with result "done", got "pass"'),
        ("qa", "done", 'QA cannot use result "done". Use "pass", "fail", or "refine".'),
    ],
)
def test_complete_rejects_wrong_results(ws: Workspace, tracker: LocalTracker, role: str, result: str,
                                        message: str) -> None:  # fmt: skip
    with pytest.raises(InputError) as caught:
        complete(ws, role, result)
    assert caught.value.message == message


def test_complete_an_idle_worker(ws: Workspace, project: Project) -> None:
    with pytest.raises(WorkflowError) as caught:
        complete(ws, "qa", "pass")
    assert caught.value.message == "QA worker is not active on webapp. Nothing to complete."


def test_complete_after_someone_moved_the_issue(ws: Workspace, tracker: LocalTracker) -> None:
    issue = new_issue(tracker)
    pickup(ws, issue, "dev")
    tracker.move_issue(tracker.get_issue(issue), Label.TO_DO)
    before = snapshot(ws)
    with pytest.raises(WorkflowError, match=r'is on "To Do", not "Doing".*session_health'):
        complete(ws, "dev", "done")
    assert snapshot(ws)[0] == before[0] and snapshot(ws)[2] == before[2]


def test_confirm_without_active_worker(ws: Workspace, project: Project) -> None:
    with pytest.raises(WorkflowError, match=r"DEV worker is not active on webapp\. Call task_pickup first\."):
        call(ws, "task_pickup_confirm", projectGroupId=GROUP, role="dev", sessionId="x")


def test_model_override_alias_and_full_id(ws: Workspace, tracker: LocalTracker) -> None:
    one, two = new_issue(tracker), new_issue(tracker)
    result = pickup(ws, one, "dev", modelOverride="opus")
    assert (result["model"], result["fullModel"], result["modelReason"]) == (
        "opus", "anthropic/claude-opus-4-5", "User override: opus"
    )  # fmt: skip
    assert result["announcement"].startswith("🧠 Spawning DEV (opus)")
    complete(ws, "dev", "done")
    custom = pickup(ws, two, "dev", modelOverride="openrouter/qwen3-coder")
    assert custom["fullModel"] == "openrouter/qwen3-coder"
    model_lines = [r for r in ws.audit.records(event="model_selection")]
    assert model_lines[-1]["override"] is True and model_lines[0]["selected"] == "opus"


def test_model_aliases_come_from_projects_json(ws: Workspace, tracker: LocalTracker) -> None:
    with ws.store.locked() as state:
        state.models["sonnet"] = "openrouter/anthropic/claude-sonnet-4.5"
        ws.store.write(state)
    assert pickup(ws, new_issue(tracker), "dev")["fullModel"] == "openrouter/anthropic/claude-sonnet-4.5"


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def test_announcement_fits_telegram_as_it_counts(ws: Workspace, tracker: LocalTracker) -> None:
    # Telegram counts UTF-16 code units: the emoji are two each, and so is any character outside the BMP.
    issue = new_issue(tracker, title="𝕏" * 5000)
    announced = pickup(ws, issue, "dev")["announcement"]
    assert utf16(announced) <= 4096 and announced.endswith("…") and "\ud835" not in announced
    assert utf16(complete(ws, "dev", "done", summary="y" * 5000)["announcement"]) == 4096


def test_queue_status_lists_queues_oldest_first(ws: Workspace, tracker: LocalTracker) -> None:
    for title, label in [("a", Label.TO_DO), ("b", Label.TO_TEST), ("c", Label.TO_DO), ("d", Label.TO_IMPROVE),
                         ("e", Label.PLANNING), ("f", Label.DOING)]:  # fmt: skip
        new_issue(tracker, title, label)
    result = call(ws, "queue_status")
    assert result == {
        "success": True,
        "projects": [{
            "name": "webapp", "groupId": GROUP,
            "dev": {"active": False, "sessionId": None, "issueId": None, "model": None},
            "qa": {"active": False, "sessionId": None, "issueId": None, "model": None},
            "queue": {"toImprove": [{"id": 4, "title": "d"}], "toTest": [{"id": 2, "title": "b"}],
                      "toDo": [{"id": 1, "title": "a"}, {"id": 3, "title": "c"}]},
        }],
    }  # fmt: skip
    line = list(ws.audit.records(event="queue_status"))[-1]
    assert (line["projectCount"], line["totalToImprove"], line["totalToTest"], line["totalToDo"]) == (1, 1, 1, 2)


def test_queue_status_for_one_unknown_project(ws: Workspace, project: Project) -> None:
    with pytest.raises(NotFoundError, match=r"Available: -1001234567890$"):
        call(ws, "queue_status", projectGroupId="-5")


def test_queue_status_tracker_failure_is_never_an_empty_queue(ws: Workspace, project: Project) -> None:
    add_local_project(ws, OTHER_GROUP, "api")
    broken = ws.memory / "broken.sqlite3"
    broken.write_text("this is not a database")
    # The embedded tracker of "api" points at a corrupt database file (no patching: a real failure).
    with ws.store.locked() as state:
        state.projects[OTHER_GROUP].tracker.path = "api"
        ws.store.write(state)
    db = ws.memory / "tracker.sqlite3"
    db.rename(ws.memory / "good.sqlite3")
    db.write_text("this is not a database")
    result = call(ws, "queue_status")
    rows = {row["name"]: row for row in result["projects"]}
    assert rows["api"]["queue"] is None and rows["api"]["error"]["type"] == "tracker"
    assert "file is not a database" in rows["api"]["error"]["message"]
    with pytest.raises(DevclawError, match="file is not a database"):
        call(ws, "queue_status", projectGroupId=OTHER_GROUP)


def test_projects_json_keeps_a_backup_of_the_last_good_version(ws: Workspace, tracker: LocalTracker) -> None:
    pickup(ws, new_issue(tracker), "dev")
    previous = ws.store.path.read_bytes()
    call(ws, "task_pickup_confirm", projectGroupId=GROUP, role="dev", sessionId=DEV_SESSION)
    assert ws.store.backup_path.read_bytes() == previous
    assert ws.store.path.read_bytes() != previous


# --- input validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "params", "fragment"),
    [
        ("task_pickup", {"role": "dev", "projectGroupId": GROUP}, "issueId: Field required"),
        ("task_pickup", {"issueId": "abc", "role": "dev", "projectGroupId": GROUP}, "issueId: Input should be a valid integer"),
        ("task_pickup", {"issueId": 0, "role": "dev", "projectGroupId": GROUP}, "issueId: Input should be greater than or equal to 1"),
        ("task_pickup", {"issueId": 1, "role": "ops", "projectGroupId": GROUP}, "role: Input should be 'dev', 'qa' or 'reviewer'"),
        ("task_pickup", {"issueId": 1, "role": "dev", "projectGroupId": GROUP, "extra": 1}, "extra: Extra inputs are not permitted"),
        ("task_complete", {"role": "dev", "result": "ok", "projectGroupId": GROUP}, "result: Input should be 'done', 'pass', 'fail', 'refine', 'approve' or 'reject'"),
        ("session_health", {"activeSessions": "abc"}, "activeSessions: Input should be a valid list"),
        ("queue_status", [], "parameters must be a JSON object"),
    ],
)  # fmt: skip
def test_invalid_parameters_name_the_field(ws: Workspace, project: Project, tool: str, params: Any,
                                           fragment: str) -> None:  # fmt: skip
    before = snapshot(ws)
    with pytest.raises(InputError) as caught:
        call_tool(ws, tool, params)
    assert fragment in caught.value.message
    assert snapshot(ws)[0] == before[0]
    error = list(ws.audit.records(event="error"))[-1]
    assert error["tool"] == tool and fragment in error["message"]


def test_lenient_where_agents_differ(ws: Workspace, tracker: LocalTracker) -> None:
    issue = new_issue(tracker)
    result = call_tool(ws, "task_pickup", {"issueId": str(issue), "role": "DEV", "projectGroupId": int(GROUP)})
    assert result["role"] == "dev" and result["groupId"] == GROUP


def test_unknown_tool(ws: Workspace) -> None:
    with pytest.raises(InputError, match=r"Unknown tool 'task_pikcup'\. Tools: task_pickup, task_pickup_confirm"):
        call_tool(ws, "task_pikcup", {})


def test_error_event_masks_secrets(ws: Workspace, project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITLAB_TOKEN", "glpat-very-secret-value")
    with pytest.raises(InputError):
        call_tool(ws, "queue_status", {"token": "abc", "projectGroupId": "glpat-very-secret-value"})
    line = ws.audit.path.read_text().splitlines()[-1]
    assert "glpat-very-secret-value" not in line and '"token": "***"' in line


def test_tool_specs_come_from_the_input_models() -> None:
    specs = {spec["name"]: spec for spec in tool_specs()}
    assert list(specs) == list(TOOLS) == [
        "task_pickup", "task_pickup_confirm", "task_complete", "queue_status", "session_health", "loop_status"
    ]  # fmt: skip
    pickup_schema = specs["task_pickup"]["parameters"]
    assert pickup_schema["required"] == ["issueId", "role", "projectGroupId"]
    assert pickup_schema["additionalProperties"] is False
    assert all(spec["description"] for spec in specs.values())


# --- the commit step --------------------------------------------------------------------------------


def test_unwritable_state_fails_before_the_tracker_is_touched(ws: Workspace, tracker: LocalTracker) -> None:
    issue = new_issue(tracker)
    # A real failure, even for root: a non-empty folder stands where the backup of projects.json goes.
    # The intent is the first write, so the call fails before the label moves.
    ws.store.backup_path.mkdir()
    (ws.store.backup_path / "keep").write_text("x")
    state_before = ws.store.path.read_bytes()
    with pytest.raises(DevclawError, match="Cannot write"):
        pickup(ws, issue, "dev")
    assert label_of(tracker, issue) is Label.TO_DO
    assert ws.store.path.read_bytes() == state_before
    assert audit_events(ws)[-1] == "error"
    assert not list(ws.memory.glob(".projects.json.*.tmp"))


def test_failed_state_commit_moves_the_label_back(
    ws: Workspace, tracker: LocalTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    issue = new_issue(tracker)
    # Patched, because nothing on disk fails exactly the commit after the label moved and lets the
    # writes after it through: only the first write (the commit; the embedded tracker needs no intent)
    # fails.
    real_write, writes = ws.store.write, []

    def failing_second_write(state: Any) -> None:
        writes.append(state)
        if len(writes) == 1:
            raise StateError("Cannot write projects.json: No space left on device")
        real_write(state)

    monkeypatch.setattr(ws.store, "write", failing_second_write)
    with pytest.raises(DevclawError, match=r'The label move was undone: issue #1 is on "To Do" again'):
        pickup(ws, issue, "dev")
    assert label_of(tracker, issue) is Label.TO_DO
    project = ws.store.read().project(GROUP)
    assert project.intents == [] and not project.worker("dev").active


def test_health_grace_and_clock(ws: Workspace, tracker: LocalTracker) -> None:
    pickup(ws, new_issue(tracker), "dev")
    soon = call(ws, "session_health", activeSessions=["other"], autoFix=True)
    assert soon["issuesFound"] == 0  # just picked up: the spawn may still be under way
    later = replace(ws, clock=lambda: ws.clock() + timedelta(minutes=6))
    found = call(later, "session_health", activeSessions=["other"])
    assert [i["type"] for i in found["issues"]] == ["active_no_session"]
