"""The engine's promises, through the tools: lost replies converge, and a project runs N workers per role.

Lost replies run on GitLab and GitHub (the real clients against the stateful fakes): the fake applies the
label write and then drops the connection, or answers 500 and refuses every read for a while. Either the
call succeeds (the engine re-read the issue), or it says the move may have landed and leaves an intent that
one retry of the same call, or one ``session_health`` with autoFix, settles. In every case the tracker,
projects.json and audit.log agree afterwards, and a second health run finds nothing to fix.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest

from devclaw.errors import DevclawError, InputError, TrackerError, WorkflowError
from devclaw.workflow import DEFAULT
from devclaw.workspace import Workspace
from tests.conftest import GROUP, NO_CHANGES, add_local_project, call, local_tracker, new_issue, snapshot
from tests.fakes import GITHUB_URL, GITLAB_URL, KINDS, REMOTE_KINDS, TrackerKind, make_fake, mount_responses
from tests.test_tool_budgets import TOKEN_ENV, Setup, register, registered

DEV_SESSION = "agent:main:subagent:dev-1"
QA_SESSION = "agent:main:subagent:qa-1"


@pytest.fixture(params=REMOTE_KINDS)
def remote(request: pytest.FixtureRequest, ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    with registered(request.param, ws, monkeypatch, changes=NO_CHANGES) as made:
        yield made


def later(ws: Workspace) -> Workspace:
    """The workspace seen ten minutes on: past the health grace period of a fresh pickup."""
    return replace(ws, clock=lambda: ws.clock() + timedelta(minutes=10))


def health(ws: Workspace, sessions: list[str] | None = None) -> dict[str, Any]:
    """autoFix, ten minutes on, with ``sessions`` alive (none by default: every worker is a zombie)."""
    return call(later(ws), "session_health", autoFix=True, activeSessions=sessions or [])


def projects(ws: Workspace) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ws.store.path.read_text())
    return data


def project_entry(ws: Workspace) -> dict[str, Any]:
    entry: dict[str, Any] = projects(ws)["projects"][GROUP]
    return entry


def worker(ws: Workspace, role: str, slot: int = 0) -> dict[str, Any]:
    found: dict[str, Any] = project_entry(ws)["workers"][role][slot]
    return found


def lines(ws: Workspace, event: str, issue: int) -> list[dict[str, Any]]:
    return [r for r in ws.audit.records(event=event) if str(r.get("issue")) == str(issue)]


# --- lost replies ----------------------------------------------------------------------------------


def to_dev_active(s: Setup, issue: int) -> None:
    call(s.ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="dev")
    call(s.ws, "task_pickup_confirm", projectGroupId=GROUP, role="dev", sessionId=DEV_SESSION)


def to_qa_active(s: Setup, issue: int) -> None:
    to_dev_active(s, issue)
    call(s.ws, "task_complete", projectGroupId=GROUP, role="dev", result="done")
    call(s.ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="qa")
    call(s.ws, "task_pickup_confirm", projectGroupId=GROUP, role="qa", sessionId=QA_SESSION)


@dataclass(frozen=True)
class Move:
    """One mutating call whose label write loses its reply, and where it must leave things."""

    name: str
    prepare: Callable[[Setup, int], None]
    tool: str
    params: dict[str, Any]
    label: str  # the issue's workflow label afterwards
    role: str  # the role whose worker the move changes
    active: bool  # that worker afterwards
    event: str  # its audit line

    def run(self, s: Setup) -> dict[str, Any]:
        if self.tool == "session_health":
            return health(s.ws)
        return call(s.ws, self.tool, projectGroupId=GROUP, **self.params)


MOVES = [
    Move("pickup", lambda s, i: None, "task_pickup", {"issueId": 0, "role": "dev"}, "Doing", "dev", True,
         "task_pickup"),
    Move("dev-done", to_dev_active, "task_complete", {"role": "dev", "result": "done"}, "To Test", "dev", False,
         "task_complete"),
    Move("qa-pass", to_qa_active, "task_complete", {"role": "qa", "result": "pass"}, "Done", "qa", False,
         "task_complete"),
    Move("qa-fail", to_qa_active, "task_complete", {"role": "qa", "result": "fail", "summary": "button dead"},
         "To Improve", "qa", False, "task_complete"),
    Move("health-revert", to_dev_active, "session_health", {}, "To Do", "dev", False, "health_fix"),
]  # fmt: skip


def begin(s: Setup, move: Move) -> tuple[int, Move]:
    issue = s.seed("Add login page", ["To Do", "area/ui"])
    if move.tool == "task_pickup":
        move = replace(move, params={**move.params, "issueId": issue})
    move.prepare(s, issue)
    return issue, move


def write_method(s: Setup) -> str:
    return "PUT" if s.kind == "gitlab" else "PATCH"


def assert_agree(s: Setup, move: Move, issue: int, *, reconciled: bool) -> None:
    """Tracker, projects.json and audit.log tell the same story, once."""
    assert s.fake is not None
    workflow = {"To Do", "Doing", "To Test", "Testing", "Done", "To Improve", "Refining", "Planning"}
    assert s.labels(issue) & workflow == {move.label}
    assert "area/ui" in s.labels(issue)
    entry = project_entry(s.ws)
    assert entry.get("intents", []) == []
    found = worker(s.ws, move.role)
    assert found["active"] is move.active
    assert (str(found.get("issueId")) == str(issue)) is move.active
    if move.name == "qa-pass":
        assert s.fake.project.issues[issue].state == "closed"
    if move.name == "qa-fail":
        assert entry["qaFails"] == {str(issue): 1}
    written = lines(s.ws, move.event, issue)
    if move.event == "task_pickup":
        written = [r for r in written if r.get("role") == move.role]
    elif move.event == "task_complete":
        written = [r for r in written if r.get("result") == move.params["result"]]
    assert len(written) == 1, written
    assert written[0].get("labelTransition", "").endswith(move.label)
    assert bool(written[0].get("reconciled")) is reconciled


def assert_nothing_to_fix(s: Setup) -> None:
    # Now, not later: a pickup that was not confirmed yet is in its grace period.
    again = call(s.ws, "session_health", autoFix=True, activeSessions=[DEV_SESSION, QA_SESSION])
    assert again["fixesApplied"] == 0, again["issues"]
    assert [i for i in again["issues"] if i.get("fixed") is not None] == []


@pytest.mark.parametrize("move", MOVES, ids=[m.name for m in MOVES])
def test_a_dropped_connection_after_the_write_is_read_back_and_succeeds(remote: Setup, move: Move) -> None:
    s = remote
    assert s.fake is not None
    issue, move = begin(s, move)
    s.fake.reset(method=write_method(s))
    result = move.run(s)
    if move.tool == "session_health":
        [fixed] = [i for i in result["issues"] if i["type"] == "zombie_session"]
        assert fixed["fixed"] is True and fixed["labelReverted"] is True
    else:
        assert result["success"] is True and not result.get("repeated")
    assert not s.fake.faults  # the fault was played
    assert_agree(s, move, issue, reconciled=False)
    assert_nothing_to_fix(s)


@pytest.mark.parametrize("settle", ["retry", "health"])
@pytest.mark.parametrize("move", MOVES, ids=[m.name for m in MOVES])
def test_a_write_whose_reply_and_rereads_fail_converges_once(remote: Setup, move: Move, settle: str) -> None:
    s = remote
    assert s.fake is not None
    issue, move = begin(s, move)
    expected = None if move.tool == "session_health" else call(s.ws, move.tool, projectGroupId=GROUP,
                                                                 dryRun=True, **move.params)  # fmt: skip
    s.fake.apply_then_fail(500, method=write_method(s), then_gets=3)
    if move.tool == "session_health":
        result = move.run(s)
        [report] = [i for i in result["issues"] if i["type"] == "zombie_session"]
        assert report["fixed"] is False
        message = report["message"]
    else:
        with pytest.raises(TrackerError) as caught:
            move.run(s)
        message = caught.value.message
    assert "may have applied" in message and "reconcile" in message, message
    [intent] = project_entry(s.ws)["intents"]
    assert str(intent["issueId"]) == str(issue)
    assert s.labels(issue) & {move.label} == {move.label}  # the tracker did apply it
    s.fake.faults.clear()
    if settle == "retry":
        again = move.run(s)
        if move.tool == "session_health":
            assert [i["type"] for i in again["issues"] if i.get("fixed")] == ["pending_move"]
        else:
            assert again["repeated"] is True
            assert expected is not None
            for key in ("announcement", "labelTransition", "instructions", "taskMessage", "issueId"):
                if key in expected and key != "labelTransition":
                    assert again[key] == expected[key], key
    else:
        report = call(s.ws, "session_health", autoFix=True, activeSessions=[DEV_SESSION, QA_SESSION])
        assert [i["type"] for i in report["issues"] if i.get("fixed")] == ["pending_move"], report["issues"]
    assert_agree(s, move, issue, reconciled=True)
    assert_nothing_to_fix(s)


# --- N workers per role ------------------------------------------------------------------------------


def set_state(ws: Workspace, change: Callable[[dict[str, Any]], None]) -> None:
    data = projects(ws)
    change(data)
    ws.store.path.write_text(json.dumps(data))


@pytest.fixture
def three_devs(ws: Workspace) -> list[int]:
    add_local_project(ws)
    set_state(ws, lambda d: d["projects"][GROUP].__setitem__("maxWorkers", {"dev": 3}))
    tracker = local_tracker(ws)
    return [new_issue(tracker, f"Task {n}") for n in range(4)]


def test_three_dev_workers_run_at_once_and_a_fourth_is_refused(ws: Workspace, three_devs: list[int]) -> None:
    first = three_devs[:3]
    for n, issue in enumerate(first):
        result = call(ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="dev")
        assert result["slot"] == n
        call(ws, "task_pickup_confirm", projectGroupId=GROUP, role="dev", issueId=issue, sessionId=f"dev-{n}")
    tracker = local_tracker(ws)
    assert [tracker.get_issue(i).label for i in first] == ["Doing"] * 3
    before = snapshot(ws)
    with pytest.raises(WorkflowError) as caught:
        call(ws, "task_pickup", projectGroupId=GROUP, issueId=three_devs[3], role="dev")
    assert "All 3 DEV workers" in caught.value.message and "maxWorkers.dev" in caught.value.message
    assert all(f"#{i}" in caught.value.message for i in first)
    with pytest.raises(InputError) as which:
        call(ws, "task_complete", projectGroupId=GROUP, role="dev", result="done")
    assert "pass issueId" in which.value.message and all(f"#{i}" in which.value.message for i in first)
    after = snapshot(ws)
    assert after[0] == before[0] and after[2] == before[2]  # only the refusals' error lines were added

    done = call(ws, "task_complete", projectGroupId=GROUP, role="dev", result="done", issueId=first[1])
    assert done["issueId"] == first[1]
    assert tracker.get_issue(first[1]).label == "To Test"
    assert [tracker.get_issue(i).label for i in (first[0], first[2])] == ["Doing", "Doing"]
    slots = project_entry(ws)["workers"]["dev"]
    assert [w["active"] for w in slots] == [True, False, True]
    assert [str(w.get("issueId")) for w in (slots[0], slots[2])] == [str(first[0]), str(first[2])]
    # the freed slot takes the fourth task
    fourth = call(ws, "task_pickup", projectGroupId=GROUP, issueId=three_devs[3], role="dev")
    assert fourth["slot"] == 1


@pytest.mark.parametrize("cap", ["maxActiveWorkers", "maxActiveWorkersPerRole"])
def test_workspace_caps_refuse_and_change_nothing(ws: Workspace, three_devs: list[int], cap: str) -> None:
    set_state(ws, lambda d: d.__setitem__(cap, 2 if cap == "maxActiveWorkers" else {"dev": 2}))
    for issue in three_devs[:2]:
        call(ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="dev")
    before = snapshot(ws)
    with pytest.raises(DevclawError) as caught:
        call(ws, "task_pickup", projectGroupId=GROUP, issueId=three_devs[2], role="dev")
    assert cap in caught.value.message and "2" in caught.value.message
    after = snapshot(ws)
    assert after[0] == before[0] and after[2] == before[2]
    assert local_tracker(ws).get_issue(three_devs[2]).label == "To Do"


# --- health never moves live work ----------------------------------------------------------------------


@pytest.fixture(params=KINDS)
def any_kind(request: pytest.FixtureRequest, ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    with registered(request.param, ws, monkeypatch, changes=NO_CHANGES) as made:
        yield made


def add_label_by_hand(s: Setup, issue: int, name: str) -> None:
    """A person adds a label on the tracker, outside devclaw."""
    if s.fake is not None:
        s.fake.project.issues[issue].labels.append(name)
        return
    db = s.ws.memory / "tracker.sqlite3"
    with sqlite3.connect(db) as conn:
        (labels,) = conn.execute("SELECT labels FROM issues WHERE number = ?", (issue,)).fetchone()
        conn.execute("UPDATE issues SET labels = ? WHERE number = ?", (json.dumps([*json.loads(labels), name]), issue))


@pytest.mark.parametrize("worked", [True, False], ids=["dev-active", "no-worker"])
def test_an_issue_with_two_workflow_labels_is_reported_and_left_alone(any_kind: Setup, worked: bool) -> None:
    s = any_kind
    issue = s.seed("Add login page", ["To Do"])
    if worked:
        to_dev_active(s, issue)
    else:
        add_label_by_hand(s, issue, "Doing")
    add_label_by_hand(s, issue, "Testing")
    labels_before = s.labels(issue)
    state_before = s.ws.store.path.read_bytes()
    for run in range(2):
        report = health(s.ws, [DEV_SESSION])
        conflicts = [i for i in report["issues"] if i["type"] == "conflicting_labels"]
        assert [c["issueId"] for c in conflicts] == [issue], report["issues"]
        assert report["fixesApplied"] == 0, (run, report["issues"])
        assert s.labels(issue) == labels_before
        assert s.ws.store.path.read_bytes() == state_before
    dev = worker(s.ws, "dev")
    assert dev["active"] is worked and (str(dev.get("issueId")) == str(issue)) is worked
    assert not worker(s.ws, "qa")["active"]
    assert lines(s.ws, "health_fix", issue) == []


# --- dry runs, secrets ---------------------------------------------------------------------------------


def test_a_dry_run_answers_the_plan_and_changes_nothing(any_kind: Setup) -> None:
    s = any_kind
    issue = s.seed("Add login page", ["To Do"])
    before, requests = snapshot(s.ws), s.count()
    planned = call(s.ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="dev", dryRun=True)
    assert planned["dryRun"] is True and planned["labelTransition"] == "To Do → Doing"
    assert snapshot(s.ws) == before and s.labels(issue) == {"To Do"}
    if s.fake is not None:  # it read the issue, and wrote nothing
        assert {r.method for r in s.fake.log[requests:]} == {"GET"}
    to_dev_active(s, issue)
    before = snapshot(s.ws)
    planned = call(s.ws, "task_complete", projectGroupId=GROUP, role="dev", result="done", dryRun=True)
    assert planned["dryRun"] is True and planned["labelTransition"] == "Doing → To Test"
    assert snapshot(s.ws) == before and s.labels(issue) == {"Doing"}
    assert worker(s.ws, "dev")["active"] is True
    done = call(s.ws, "task_complete", projectGroupId=GROUP, role="dev", result="done")
    assert not done.get("dryRun") and s.labels(issue) == {"To Test"}


SECRET = "s3cr3t/t0ken+value=xyz"


@pytest.mark.parametrize("variable", ["ACME_TRACKER_CREDENTIAL", "ACME_GITLAB_TOKEN"])
def test_a_token_in_a_summary_is_masked_in_the_announcement_and_the_audit_line(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    from devclaw.registry import register_project
    from devclaw.state import Project, TrackerConfig
    from tests.fakes import GITLAB_URL, FakeGitLab, mount_responses

    fake = FakeGitLab("acme/platform/webapp", token=SECRET)
    monkeypatch.setenv(variable, SECRET)
    config = TrackerConfig(provider="gitlab", path=fake.path, base_url=GITLAB_URL, token_env=variable)
    with mount_responses(fake, GITLAB_URL):
        register_project(ws, GROUP, Project(name="webapp", tracker=config, changes=NO_CHANGES))
        s = Setup("gitlab", ws, fake)
        issue = s.seed("Add login page", ["To Do"])
        to_qa_active(s, issue)
        summary = f"login fails with {SECRET} (sent as {quote(SECRET, safe='')})"
        result = call(ws, "task_complete", projectGroupId=GROUP, role="qa", result="fail", summary=summary)
    assert "fails with" in result["announcement"]
    for text in (json.dumps(result), ws.audit.path.read_text(), ws.store.path.read_text()):
        assert SECRET not in text and quote(SECRET, safe="") not in text and SECRET[:8] not in text
    [line] = lines(ws, "task_complete", issue)[-1:]
    assert "***" in line["summary"]


def test_a_base_url_with_credentials_is_refused_naming_token_env() -> None:
    from pydantic import ValidationError

    from devclaw.state import TrackerConfig

    with pytest.raises(ValidationError) as caught:
        TrackerConfig(provider="gitlab", path="acme/webapp", base_url="https://user:pw@gitlab.example")
    assert "--token-env" in str(caught.value)
    assert TrackerConfig(provider="gitlab", path="acme/webapp", base_url="https://gitlab.example").base_url


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_project_add_whose_label_creation_reply_is_lost_converges_on_retry(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = make_fake(kind, "acme/platform/webapp" if kind == "gitlab" else "acme/webapp")
    monkeypatch.setenv(TOKEN_ENV, fake.token)
    base_url = GITLAB_URL if kind == "gitlab" else GITHUB_URL
    with mount_responses(fake, base_url):
        fake.apply_then_fail(502, method="POST")  # the first label is created, its answer is lost
        with pytest.raises(TrackerError, match="not registered, and labels created so far stay; run the same"):
            register(ws, kind, base_url)
        assert GROUP not in ws.store.read().projects  # nothing registered, nothing on the audit log
        assert list(ws.audit.records(event="project_register")) == []
        assert len(fake.project.labels) == 1
        result = register(ws, kind, base_url)  # the same call again
    assert result["labelsCreated"] == list(DEFAULT.states)[1:]
    assert sorted(fake.project.labels) == sorted(DEFAULT.states)  # each once
    assert GROUP in ws.store.read().projects
    assert len(list(ws.audit.records(event="project_register"))) == 1


def test_a_human_move_whose_reply_is_lost_converges_on_retry(remote: Setup) -> None:
    from devclaw.commands.issue import label_issue

    s = remote
    assert s.fake is not None
    issue = s.seed("Decide the year", ["Refining"])
    s.fake.apply_then_fail(500, method=write_method(s), then_gets=3)
    with pytest.raises(TrackerError, match="may have applied"):
        label_issue(s.ws, GROUP, issue, "To Do")
    assert [i["issueId"] for i in project_entry(s.ws)["intents"]] == [issue]
    s.fake.faults.clear()
    assert "To Do" in label_issue(s.ws, GROUP, issue, "To Do")["labels"]
    assert project_entry(s.ws).get("intents", []) == []
    [line] = lines(s.ws, "issue_label", issue)
    assert line["labelTransition"] == "Refining → To Do" and line["reconciled"] is True
