"""session_health: each check is set up through the public surface (tool calls, the tracker, the files),
run without and then with autoFix, and its exact result checked."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from devclaw.state import Project
from devclaw.trackers.local import LocalTracker
from devclaw.workflow import Label
from devclaw.workspace import Workspace
from tests.conftest import GROUP, OTHER_GROUP, add_local_project, call, local_tracker, new_issue, snapshot

DEV_SESSION = "agent:main:subagent:dev-1"
QA_SESSION = "agent:main:subagent:qa-1"


def pickup(ws: Workspace, issue: int, role: str, session: str | None = None) -> None:
    call(ws, "task_pickup", issueId=issue, role=role, projectGroupId=GROUP)
    if session:
        call(ws, "task_pickup_confirm", projectGroupId=GROUP, role=role, sessionId=session)


def health(ws: Workspace, **params: Any) -> dict[str, Any]:
    return call(ws, "session_health", **params)


def worker(ws: Workspace, role: str, group: str = GROUP) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ws.store.path.read_text())["projects"][group]["workers"][role][0]
    # What a retry needs (lastCompletion) and the run's usage are checked by the engine tests.
    return {key: value for key, value in data.items() if key not in ("lastCompletion", "usage")}


def sql(ws: Workspace, statement: str, *args: Any) -> None:
    """A person acting in the tracker's own storage (close, delete): the embedded tracker has no UI."""
    with sqlite3.connect(ws.memory / "tracker.sqlite3") as conn:
        conn.execute(statement, args)


def human_move(tracker: LocalTracker, issue: int, target: Label) -> None:
    tracker.move_issue(tracker.get_issue(issue), target)


def to_testing(ws: Workspace, tracker: LocalTracker) -> int:
    issue = new_issue(tracker)
    pickup(ws, issue, "dev", DEV_SESSION)
    call(ws, "task_complete", role="dev", result="done", projectGroupId=GROUP)
    pickup(ws, issue, "qa", QA_SESSION)
    return issue


# --- the request budget: a report without fixes reads no tracker --------------------------------------


def test_report_without_autofix_reads_no_tracker(ws: Workspace, tracker: LocalTracker) -> None:
    issue = new_issue(tracker)
    human_move(tracker, issue, Label.DOING)  # an orphan the report cannot see without reading the tracker
    (ws.memory / "tracker.sqlite3").unlink()
    (ws.memory / "tracker.sqlite3").mkdir()  # any read of the tracker would now fail
    result = health(ws)
    assert result["healthy"] is True and result["trackerChecked"] is False
    checked = health(ws, checkTracker=True)
    assert [(i["type"], i["severity"]) for i in checked["issues"]] == [("tracker_unreachable", "unknown")]


# --- issue_gone / issue_closed / label_mismatch -----------------------------------------------------


def test_issue_gone(ws: Workspace, tracker: LocalTracker) -> None:
    issue = new_issue(tracker)
    pickup(ws, issue, "dev", DEV_SESSION)
    sql(ws, "DELETE FROM issues WHERE number = ?", issue)
    before = snapshot(ws)[0]
    report = health(ws, checkTracker=True, activeSessions=[DEV_SESSION])
    assert report["issues"] == [{
        "type": "issue_gone", "severity": "critical", "project": "webapp", "groupId": GROUP, "role": "dev",
        "message": "DEV worker on webapp works on issue #1, which was deleted", "sessionId": DEV_SESSION,
        "issueId": issue,
    }]  # fmt: skip
    assert snapshot(ws)[0] == before
    fixed = health(ws, autoFix=True, activeSessions=[DEV_SESSION])
    assert fixed["fixesApplied"] == 1 and fixed["issues"][0]["fixed"] is True
    assert worker(ws, "dev") == {"active": False, "sessionId": DEV_SESSION, "issueId": None,
                                 "startTime": worker(ws, "dev")["startTime"], "model": "sonnet", "pickedFrom": None}  # fmt: skip
    assert health(ws, autoFix=True, activeSessions=[DEV_SESSION])["healthy"] is True


def test_issue_closed(ws: Workspace, tracker: LocalTracker) -> None:
    issue = to_testing(ws, tracker)
    sql(ws, "UPDATE issues SET state = 'closed' WHERE number = ?", issue)
    report = health(ws, checkTracker=True)
    assert [(i["type"], i["role"], i["issueId"], i.get("fixed")) for i in report["issues"]] == [
        ("issue_closed", "qa", issue, None)
    ]
    assert report["issues"][0]["message"] == "QA worker on webapp works on issue #1, which was closed"
    assert worker(ws, "qa")["active"] is True
    fixed = health(ws, autoFix=True)
    assert [(i["type"], i["fixed"]) for i in fixed["issues"]] == [("issue_closed", True)]
    assert worker(ws, "qa")["active"] is False and worker(ws, "qa")["sessionId"] == QA_SESSION
    assert tracker.get_issue(issue).labels == ("Testing",)  # a closed issue's label is not ours to fix


def test_label_mismatch_frees_the_worker_and_leaves_the_label(ws: Workspace, tracker: LocalTracker) -> None:
    issue = new_issue(tracker)
    pickup(ws, issue, "dev", DEV_SESSION)
    human_move(tracker, issue, Label.PLANNING)  # someone decided it needs planning after all
    report = health(ws, checkTracker=True, activeSessions=[DEV_SESSION])
    assert [(i["type"], i["severity"]) for i in report["issues"]] == [("label_mismatch", "critical")]
    assert report["issues"][0]["message"] == (
        'DEV worker on webapp works on issue #1, which is on "Planning", not "Doing": someone moved it; '
        "the worker is freed and the label left as they set it"
    )
    fixed = health(ws, autoFix=True, activeSessions=[DEV_SESSION])
    assert fixed["fixesApplied"] == 1
    assert worker(ws, "dev")["active"] is False
    assert tracker.get_issue(issue).label is Label.PLANNING


def test_a_tracker_finding_replaces_the_session_findings_of_that_worker(ws: Workspace, tracker: LocalTracker) -> None:
    issue = new_issue(tracker)
    pickup(ws, issue, "dev", DEV_SESSION)
    human_move(tracker, issue, Label.TO_DO)
    report = health(ws, autoFix=True, activeSessions=["some-other-session"])  # also a zombie, after grace
    later = replace(ws, clock=lambda: ws.clock() + timedelta(minutes=10))
    assert [i["type"] for i in report["issues"]] == ["label_mismatch"]
    assert health(later, autoFix=True, activeSessions=[])["healthy"] is True
    assert tracker.get_issue(issue).label is Label.TO_DO  # not reverted twice, not moved at all


# --- orphaned_label ---------------------------------------------------------------------------------


def test_orphaned_doing_goes_back_to_to_do(ws: Workspace, tracker: LocalTracker) -> None:
    issue = new_issue(tracker)
    human_move(tracker, issue, Label.DOING)  # a manual move, or a crash between the label and the state
    report = health(ws, checkTracker=True)
    assert report["issues"] == [{
        "type": "orphaned_label", "severity": "critical", "project": "webapp", "groupId": GROUP, "role": "dev",
        "message": 'Issue #1 on webapp is on "Doing" but no DEV worker tracks it; it goes back to "To Do"',
        "issueId": issue,
    }]  # fmt: skip
    assert tracker.get_issue(issue).label is Label.DOING
    fixed = health(ws, autoFix=True)
    assert [(i["type"], i["fixed"], i["labelReverted"]) for i in fixed["issues"]] == [("orphaned_label", True, True)]
    assert tracker.get_issue(issue).label is Label.TO_DO
    assert worker(ws, "dev")["active"] is False


def test_orphaned_doing_after_a_qa_fail_goes_back_to_to_improve(ws: Workspace, tracker: LocalTracker) -> None:
    issue = to_testing(ws, tracker)
    call(ws, "task_complete", role="qa", result="fail", projectGroupId=GROUP, summary="broken")
    human_move(tracker, issue, Label.DOING)
    fixed = health(ws, autoFix=True)
    assert fixed["issues"][0]["message"].endswith('it goes back to "To Improve"')
    assert tracker.get_issue(issue).label is Label.TO_IMPROVE


def test_orphaned_testing_goes_back_to_to_test(ws: Workspace, tracker: LocalTracker) -> None:
    issue = new_issue(tracker, label=Label.TESTING)
    fixed = health(ws, autoFix=True)
    assert [(i["type"], i["role"], i["issueId"]) for i in fixed["issues"]] == [("orphaned_label", "qa", issue)]
    assert tracker.get_issue(issue).label is Label.TO_TEST


def test_a_second_issue_on_doing_is_orphaned_the_tracked_one_is_not(ws: Workspace, tracker: LocalTracker) -> None:
    tracked, stray = new_issue(tracker), new_issue(tracker, "Stray", label=Label.DOING)
    pickup(ws, tracked, "dev", DEV_SESSION)
    fixed = health(ws, autoFix=True, activeSessions=[DEV_SESSION])
    assert [(i["type"], i["issueId"]) for i in fixed["issues"]] == [("orphaned_label", stray)]
    assert tracker.get_issue(tracked).label is Label.DOING and tracker.get_issue(stray).label is Label.TO_DO
    assert worker(ws, "dev")["active"] is True


def test_orphan_that_moved_again_meanwhile_is_left_alone(ws: Workspace, tracker: LocalTracker) -> None:
    # The lists are read before the project is locked; the fix re-reads the issue and leaves it if it
    # moved. That window cannot be reached through the tool, so the fix step is called with a stale issue.
    from devclaw.engine import Move, Plan
    from devclaw.tools import health as health_module

    issue = new_issue(tracker, label=Label.DOING)
    stale = tracker.get_issue(issue)
    human_move(tracker, issue, Label.PLANNING)
    report = health_module.HealthIssue(type="orphaned_label", severity="critical", project="webapp",
                                       group_id=GROUP, message="m")  # fmt: skip
    plan = Plan(tool="session_health", group_id=GROUP, result=report, move=Move(stale, Label.TO_DO))
    assert health_module._unless_moved(ws, plan) is False
    assert report.message.endswith("left alone: it moved since the scan")
    assert tracker.get_issue(issue).label is Label.PLANNING


# --- grace, stale threshold, settings ---------------------------------------------------------------


def test_grace_and_stale_thresholds_come_from_projects_json(ws: Workspace, tracker: LocalTracker) -> None:
    pickup(ws, new_issue(tracker), "dev", DEV_SESSION)
    data = json.loads(ws.store.path.read_text())
    data["health"] = {"graceMinutes": 1, "staleHours": 0.05, "qaFailLimit": 3}
    ws.store.path.write_text(json.dumps(data))
    two_minutes = replace(ws, clock=lambda: ws.clock() + timedelta(minutes=2))
    assert [i["type"] for i in health(two_minutes, activeSessions=["x"])["issues"]] == ["zombie_session"]
    four_minutes = replace(ws, clock=lambda: ws.clock() + timedelta(minutes=4))
    found = health(four_minutes, activeSessions=[DEV_SESSION])["issues"]
    assert [(i["type"], i["severity"], i["hoursActive"]) for i in found] == [("stale_worker", "warning", 0.07)]


def test_defaults_are_five_minutes_and_two_hours(ws: Workspace, tracker: LocalTracker) -> None:
    pickup(ws, new_issue(tracker), "dev", DEV_SESSION)

    def at(minutes: float) -> Workspace:
        return replace(ws, clock=lambda: ws.clock() + timedelta(minutes=minutes))

    assert health(at(4.9), activeSessions=["x"])["healthy"] is True
    assert health(at(5.1), activeSessions=["x"])["issues"][0]["type"] == "zombie_session"
    assert health(at(119), activeSessions=[DEV_SESSION])["healthy"] is True
    assert health(at(121), activeSessions=[DEV_SESSION])["issues"][0]["type"] == "stale_worker"


def test_zombie_revert_of_a_fix_goes_to_to_improve(ws: Workspace, tracker: LocalTracker) -> None:
    issue = to_testing(ws, tracker)
    call(ws, "task_complete", role="qa", result="fail", projectGroupId=GROUP)
    pickup(ws, issue, "dev")
    later = replace(ws, clock=lambda: ws.clock() + timedelta(minutes=6))
    fixed = health(later, autoFix=True, activeSessions=["other"])
    assert [(i["type"], i["fixed"], i["labelReverted"]) for i in fixed["issues"]] == [("zombie_session", True, True)]
    assert tracker.get_issue(issue).label is Label.TO_IMPROVE


def test_active_without_issue(ws: Workspace, project: Project) -> None:
    data = json.loads(ws.store.path.read_text())
    data["projects"][GROUP]["workers"]["dev"][0].update(active=True, issueId="abc", sessionId=DEV_SESSION)
    ws.store.path.write_text(json.dumps(data))
    report = health(ws, activeSessions=[DEV_SESSION])
    assert [(i["type"], i["severity"], i["message"]) for i in report["issues"]] == [
        ("active_without_issue", "critical", "DEV worker on webapp is active but holds no valid issue")
    ]
    assert health(ws, autoFix=True, activeSessions=[DEV_SESSION])["fixesApplied"] == 1
    assert worker(ws, "dev")["active"] is False


# --- unknown is not dead ----------------------------------------------------------------------------


def test_unreachable_tracker_is_unknown_for_that_project_only(ws: Workspace, tracker: LocalTracker) -> None:
    add_local_project(ws, OTHER_GROUP, "api")
    data = json.loads(ws.store.path.read_text())
    data["projects"][GROUP]["tracker"] = {"provider": "gitlab", "path": "acme/webapp", "tokenEnv": "NO_SUCH_TOKEN"}
    data["projects"][GROUP]["workers"]["dev"][0].update(active=True, issueId="1", sessionId=DEV_SESSION,
                                          startTime="2020-01-01T00:00:00.000Z")  # fmt: skip
    ws.store.path.write_text(json.dumps(data))
    stray = new_issue(local_tracker(ws, "api"), label=Label.DOING)
    before = ws.store.path.read_bytes()
    result = health(ws, autoFix=True, activeSessions=["other"])
    types = [(i["type"], i["severity"], i["groupId"], i.get("fixed")) for i in result["issues"]]
    assert types == [
        ("tracker_unreachable", "unknown", GROUP, None),
        ("zombie_session", "critical", GROUP, False),
        ("stale_worker", "warning", GROUP, None),
        ("orphaned_label", "critical", OTHER_GROUP, True),
    ]
    assert "NO_SUCH_TOKEN" in result["issues"][0]["message"]
    assert result["issues"][1]["message"].endswith("not fixed: the tracker could not be reached in this run")
    after = json.loads(ws.store.path.read_bytes())["projects"][GROUP]
    # The file is rewritten (the other project's orphan was fixed): this project's workers are the same.
    assert (
        Project.model_validate(after).workers == Project.model_validate(json.loads(before)["projects"][GROUP]).workers
    )
    assert local_tracker(ws, "api").get_issue(stray).label is Label.TO_DO


@pytest.mark.parametrize("auto_fix", [False, True])
def test_health_check_audit_line_lists_the_fixes(ws: Workspace, tracker: LocalTracker, auto_fix: bool) -> None:
    issue = new_issue(tracker, label=Label.TESTING)
    health(ws, autoFix=auto_fix, checkTracker=True)
    line = list(ws.audit.records(event="health_check"))[-1]
    assert line["trackerChecked"] is True and line["autoFix"] is auto_fix
    assert line["fixed"] == ([{"type": "orphaned_label", "groupId": GROUP, "role": "qa", "issue": issue}]
                             if auto_fix else [])  # fmt: skip


# --- the loop brake ---------------------------------------------------------------------------------


def fail_qa(ws: Workspace, issue: int, summary: str) -> dict[str, Any]:
    pickup(ws, issue, "dev", DEV_SESSION)
    call(ws, "task_complete", role="dev", result="done", projectGroupId=GROUP)
    pickup(ws, issue, "qa", QA_SESSION)
    return call(ws, "task_complete", role="qa", result="fail", projectGroupId=GROUP, summary=summary)


def test_third_qa_fail_goes_to_refining_with_a_comment(ws: Workspace, tracker: LocalTracker) -> None:
    issue, other = new_issue(tracker), new_issue(tracker, "Other")
    first, second = fail_qa(ws, issue, "one"), fail_qa(ws, issue, "two")
    fail_qa(ws, other, "a fail of another issue does not count")
    assert first["announcement"] == "❌ QA FAIL #1 — one. Sent back to DEV."
    assert second["labelTransition"] == "Testing → To Improve" and "loopBrake" not in second
    third = fail_qa(ws, issue, "three")
    assert third["labelTransition"] == "Testing → Refining" and third["loopBrake"] is True
    assert third["announcement"] == (
        "🛑 QA FAIL #1 — three. Failed QA 3 times: sent to Refining for a human decision instead of back to DEV."
    )
    assert third["loopBrakeComment"] == "added" and "devFixInstructions" not in third
    assert tracker.get_issue(issue).label is Label.REFINING and tracker.get_issue(other).label is Label.TO_IMPROVE
    (comment,) = tracker.comments(issue)
    assert comment.startswith("devclaw loop brake: this issue failed QA 3 times") and comment.endswith("three")
    assert list(ws.audit.records(event="task_complete"))[-1]["loopBrake"] is True


def test_loop_brake_limit_is_configurable_and_counts_rotated_logs(ws: Workspace, tracker: LocalTracker) -> None:
    data = json.loads(ws.store.path.read_text())
    data["health"] = {"qaFailLimit": 2}
    ws.store.path.write_text(json.dumps(data))
    issue = new_issue(tracker)
    fail_qa(ws, issue, "one")
    ws.audit.path.rename(ws.audit.path.with_name("audit.log.1"))  # the first fail now sits in a rotated file
    assert fail_qa(ws, issue, "two")["loopBrake"] is True
    assert tracker.get_issue(issue).label is Label.REFINING


def test_loop_brake_comment_failure_is_a_warning_not_an_error(ws: Workspace, tracker: LocalTracker) -> None:
    data = json.loads(ws.store.path.read_text())
    data["health"] = {"qaFailLimit": 1}
    ws.store.path.write_text(json.dumps(data))
    issue = new_issue(tracker)
    # A trigger refuses comments on this issue: the comment request fails after the move succeeded.
    sql(ws, "CREATE TRIGGER no_comments BEFORE INSERT ON comments BEGIN SELECT RAISE(ABORT, 'read only'); END")
    result = fail_qa(ws, issue, "broken")
    assert result["loopBrake"] is True
    assert result["loopBrakeComment"].startswith("warning: the comment could not be added: Embedded tracker")
    assert tracker.get_issue(issue).label is Label.REFINING and worker(ws, "qa")["active"] is False


# --- faults: a tracker that answers 5xx or times out for the whole run --------------------------------


@pytest.mark.parametrize("kind", ["gitlab", "github"])
@pytest.mark.parametrize("fault", ["503", "timeout"])
def test_failing_tracker_changes_nothing_and_reports_unknown(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, kind: str, fault: str
) -> None:
    from tests.fakes import GITHUB_URL, GITLAB_URL, FakeGitHub, FakeGitLab, FakeTracker, mount_responses

    url = GITLAB_URL if kind == "gitlab" else GITHUB_URL
    fake: FakeTracker = FakeGitLab("acme/webapp") if kind == "gitlab" else FakeGitHub("acme/webapp")
    doing = fake.project.add("Worked on by a dead session", labels=["Doing"])
    fake.project.add("Orphan", labels=["Testing"])
    monkeypatch.setenv("FAKE_TOKEN", fake.token)
    dev = {"active": True, "issueId": str(doing), "sessionId": "dead", "startTime": "2020-01-01T00:00:00.000Z"}
    tracker = {"provider": kind, "path": "acme/webapp", "baseUrl": url, "tokenEnv": "FAKE_TOKEN"}
    ws.store.path.write_text(json.dumps({"version": 1, "projects": {GROUP: {"name": "webapp", "tracker": tracker,
                                                                            "dev": dev}}}))  # fmt: skip
    before = ws.store.path.read_bytes()
    if fault == "503":
        fake.fail(503, times=1000)
    else:
        fake.stall(30, times=1000)
    with mount_responses(fake, url):
        result = health(ws, autoFix=True, activeSessions=["some-live-session"])
    assert [(i["type"], i["severity"], i.get("fixed")) for i in result["issues"]] == [
        ("tracker_unreachable", "unknown", None),
        ("zombie_session", "critical", False),
        ("stale_worker", "warning", None),
    ]
    assert result["fixesApplied"] == 0 and result["healthy"] is False
    assert ws.store.path.read_bytes() == before
    assert [entry.method for entry in fake.requests() if entry.method != "GET"] == []
    assert [issue.labels for issue in fake.project.issues.values()] == [["Doing"], ["Testing"]]


def test_a_braked_fail_reopens_a_closed_issue(ws: Workspace, tracker: LocalTracker) -> None:
    data = json.loads(ws.store.path.read_text())
    data["health"] = {"qaFailLimit": 1}
    ws.store.path.write_text(json.dumps(data))
    issue = to_testing(ws, tracker)
    sql(ws, "UPDATE issues SET state = 'closed' WHERE number = ?", issue)
    result = call(ws, "task_complete", role="qa", result="fail", projectGroupId=GROUP)
    assert result["loopBrake"] is True and result["issueReopened"] is True
    assert tracker.get_issue(issue).state == "open" and tracker.get_issue(issue).label is Label.REFINING


# --- the request cost of the tracker checks, on the GitLab and GitHub fakes ---------------------------


@pytest.mark.parametrize("kind", ["gitlab", "github"])
def test_tracker_checks_cost_two_lists_per_project_plus_one_read_per_moved_issue(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    from tests.fakes import GITHUB_URL, GITLAB_URL, FakeGitHub, FakeGitLab, FakeTracker, mount_responses

    url = GITLAB_URL if kind == "gitlab" else GITHUB_URL
    fake: FakeTracker = FakeGitLab("acme/webapp") if kind == "gitlab" else FakeGitHub("acme/webapp")
    doing = fake.project.add("On Doing, tracked", labels=["Doing"])
    moved = fake.project.add("QA's issue, moved back by a person", labels=["To Test"])
    monkeypatch.setenv("FAKE_TOKEN", fake.token)
    tracker = {"provider": kind, "path": "acme/webapp", "baseUrl": url, "tokenEnv": "FAKE_TOKEN"}
    dev = {"active": True, "issueId": str(doing), "sessionId": DEV_SESSION}
    qa = {"active": True, "issueId": str(moved), "sessionId": QA_SESSION}
    ws.store.path.write_text(json.dumps({"version": 1, "projects": {GROUP: {"name": "webapp", "tracker": tracker,
                                                                            "dev": dev, "qa": qa}}}))  # fmt: skip
    sessions = [DEV_SESSION, QA_SESSION]
    with mount_responses(fake, url):
        assert health(ws, activeSessions=sessions)["healthy"] is True
        assert fake.count() == 0  # a plain report reads nothing
        report = health(ws, checkTracker=True, activeSessions=sessions)
        assert [i["type"] for i in report["issues"]] == ["label_mismatch"]
        assert [entry.method for entry in fake.requests()] == ["GET", "GET", "GET"]  # Doing, Testing, the QA issue
        fixed = health(ws, autoFix=True, activeSessions=sessions)
        assert fixed["fixesApplied"] == 1
        assert [entry.method for entry in fake.requests()][3:] == ["GET", "GET", "GET"]  # freeing writes no label
    assert worker(ws, "qa")["active"] is False and fake.project.issues[moved].labels == ["To Test"]
