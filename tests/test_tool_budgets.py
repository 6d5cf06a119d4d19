"""The request budget of every tool, through ``call_tool``, on the embedded, GitLab and GitHub trackers.

A whole dev -> QA lifecycle (pickup, confirm, done, QA pickup, fail, fix, pass) runs on each tracker; after
each call the fake's request log says exactly how many requests the call made. Budgets (tracker issue):
task_pickup <= 2, task_complete <= 2 (close/reopen included), queue_status <= 3 per project,
session_health without fixes 0, ``project add`` 1 listing + 1 create per missing label. Where the project
requires changes (the default on GitLab and GitHub), DEV done and QA pickup also look up the issue's change:
GitLab 2 GETs (closed_by, related_merge_requests) + 1 per open merge request (approvals), GitHub 1 GET (the
timeline) + 1 per pull request + 1 per open one (reviews).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from devclaw.errors import ConfigError, TrackerAuthError, TrackerError
from devclaw.state import ChangeSettings, Project, TrackerConfig
from devclaw.workflow import DEFAULT, Label
from devclaw.workspace import Workspace
from tests.conftest import GROUP, call
from tests.fakes import (
    GITHUB_URL,
    GITLAB_URL,
    KINDS,
    REMOTE_KINDS,
    FakeTracker,
    TrackerKind,
    make_fake,
    mount_responses,
)

# A variable name the central secret scrubber does not recognise: these tests prove the trackers
# themselves keep the token out of every message and log line.
TOKEN_ENV = "ACME_TRACKER_CREDENTIAL"
DEV_SESSION = "agent:main:subagent:dev-1"
QA_SESSION = "agent:main:subagent:qa-1"


@dataclass
class Setup:
    kind: TrackerKind
    ws: Workspace
    fake: FakeTracker | None

    def count(self) -> int:
        return len(self.fake.log) if self.fake is not None else 0

    def spent(self, before: int) -> int:
        return self.count() - before

    def labels(self, number: int) -> set[str]:
        if self.fake is not None:
            return set(self.fake.project.issues[number].labels)
        return set(self.ws.tracker(self.ws.store.read().project(GROUP)).get_issue(number).labels)

    def seed(self, title: str, labels: list[str]) -> int:
        if self.fake is not None:
            return self.fake.project.add(title, labels)
        tracker = self.ws.tracker(self.ws.store.read().project(GROUP))
        return tracker.create_issue(title, "", tuple(labels)).id


def register(
    ws: Workspace,
    kind: TrackerKind,
    base_url: str | None,
    *,
    update: bool = False,
    changes: ChangeSettings | None = None,
) -> dict[str, Any]:
    from devclaw.registry import register_project

    path = {"local": "webapp", "gitlab": "acme/platform/webapp", "github": "acme/webapp"}[kind]
    config = TrackerConfig(provider=kind, path=path, base_url=base_url, token_env=TOKEN_ENV)
    project = Project(name="webapp", tracker=config, changes=changes or ChangeSettings())
    return register_project(ws, GROUP, project, update=update)


@contextlib.contextmanager
def registered(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch, *, changes: ChangeSettings | None = None
) -> Iterator[Setup]:
    """A workspace with one project on a fresh tracker of ``kind``, registered like `project add` does
    (``changes``: its changes settings; the tracker's defaults when not given)."""
    if kind == "local":
        register(ws, kind, None, changes=changes)
        yield Setup(kind, ws, None)
        return
    fake = make_fake(kind, "acme/platform/webapp" if kind == "gitlab" else "acme/webapp")
    monkeypatch.setenv(TOKEN_ENV, fake.token)
    base_url = GITLAB_URL if kind == "gitlab" else GITHUB_URL
    with mount_responses(fake, base_url):
        result = register(ws, kind, base_url, changes=changes)
        assert result["labelsCreated"] == list(DEFAULT.states)
        assert len(fake.log) == 1 + 8  # one listing, one create per missing label
        yield Setup(kind, ws, fake)


@pytest.fixture(params=KINDS)
def setup(request: pytest.FixtureRequest, ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    with registered(request.param, ws, monkeypatch) as made:
        yield made


@pytest.fixture(params=REMOTE_KINDS)
def remote(request: pytest.FixtureRequest, ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    with registered(request.param, ws, monkeypatch) as made:
        yield made


def budget(setup: Setup, remote: int) -> int:
    return 0 if setup.kind == "local" else remote


def test_project_edit_costs_one_listing(setup: Setup) -> None:
    before = setup.count()
    result = register(setup.ws, setup.kind, GITLAB_URL if setup.kind == "gitlab" else GITHUB_URL, update=True)
    assert result["labelsCreated"] == [] and setup.spent(before) == budget(setup, 1)


#: The change lookup of a project that requires changes, for an issue with one merged change.
MERGED_LOOKUP = 2


def test_a_full_lifecycle_stays_within_the_request_budget(setup: Setup) -> None:
    issue = setup.seed("Add login page", ["To Do", "priority::high"])
    if setup.fake is not None:
        setup.fake.add_change("Add login page", state="merged", closes=[issue])
    lookup = MERGED_LOOKUP  # GitLab: closed_by + related_merge_requests; GitHub: timeline + the pull request
    steps: list[tuple[str, dict[str, Any], int]] = [
        ("task_pickup", {"issueId": issue, "role": "dev"}, 2),
        ("task_pickup_confirm", {"role": "dev", "sessionId": DEV_SESSION}, 0),
        ("task_complete", {"role": "dev", "result": "done"}, 2 + lookup),
        ("task_pickup", {"issueId": issue, "role": "qa"}, 2 + lookup),
        ("task_pickup_confirm", {"role": "qa", "sessionId": QA_SESSION}, 0),
        ("task_complete", {"role": "qa", "result": "fail", "summary": "button dead"}, 2),
        ("task_pickup", {"issueId": issue, "role": "dev"}, 2),  # To Improve -> Doing, session reused
        ("task_complete", {"role": "dev", "result": "done"}, 2 + lookup),
        ("task_pickup", {"issueId": issue, "role": "qa"}, 2 + lookup),
        # closes the issue in the same write, once its change is found merged (nothing reaches Done unmerged)
        ("task_complete", {"role": "qa", "result": "pass"}, 2 + lookup),
        ("queue_status", {}, 3),
        ("session_health", {"activeSessions": [DEV_SESSION, QA_SESSION]}, 0),
    ]
    for tool, params, allowed in steps:
        before = setup.count()
        where = {} if tool == "session_health" else {"projectGroupId": GROUP}  # health checks every project
        call(setup.ws, tool, **where, **params)
        assert setup.spent(before) == budget(setup, allowed), f"{tool} {params}"
    assert setup.labels(issue) == {"priority::high", "Done"}
    if setup.fake is not None:
        assert setup.fake.project.issues[issue].state == "closed"
        assert {entry.method for entry in setup.fake.log} <= {"GET", "PUT", "PATCH", "POST"}


@pytest.mark.parametrize("state", ["none", "open", "merged", "two open"])
def test_the_change_gate_costs_what_the_trackers_say(remote: Setup, state: str) -> None:
    setup = remote
    assert setup.fake is not None
    issue = setup.seed("Add login page", ["To Do"])
    opened = {"none": 0, "open": 1, "merged": 0, "two open": 2}[state]
    for n in range(opened):
        setup.fake.add_change(f"Part {n}", state="open", closes=[issue])
    if state == "merged":
        setup.fake.add_change("All of it", state="merged", closes=[issue])
    call(setup.ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="dev")
    before = setup.count()
    with contextlib.suppress(Exception):
        call(setup.ws, "task_complete", projectGroupId=GROUP, role="dev", result="done")
    found = opened + (state == "merged")
    # GitLab: closed_by, related_merge_requests, the approvals of each open MR; GitHub: the timeline, each
    # pull request, the reviews of each open one (both: after the one read of the issue)
    lookup = 2 + opened if setup.kind == "gitlab" else 1 + found + opened
    move = 1 if state == "merged" else 0  # refused: no write at all
    assert setup.spent(before) == 1 + lookup + move
    assert (Label.TO_TEST.value in setup.labels(issue)) is (state == "merged")


def test_queue_status_lists_every_page_of_every_queue(setup: Setup) -> None:
    numbers = [setup.seed(f"Task {n}", ["To Do"]) for n in range(130)]
    setup.seed("Fix", ["To Improve"])
    setup.seed("Check", ["To Test"])
    before = setup.count()
    result = call(setup.ws, "queue_status", projectGroupId=GROUP)
    queue = result["projects"][0]["queue"]
    assert [item["id"] for item in queue["toDo"]] == numbers
    assert len(queue["toImprove"]) == 1 and len(queue["toTest"]) == 1
    assert setup.spent(before) == budget(setup, 4)  # 2 pages of To Do, 1 each for the other queues


def test_a_failed_label_write_changes_nothing_locally(remote: Setup) -> None:
    setup = remote
    assert setup.fake is not None
    issue = setup.seed("Task", ["To Do", "area/ui"])
    state_before = setup.ws.store.path.read_text()
    setup.fake.fail(503, times=10, method="PUT" if setup.kind == "gitlab" else "PATCH")
    with pytest.raises(TrackerError) as caught:
        call(setup.ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="dev")
    assert "HTTP 503" in caught.value.message and f'moving issue #{issue} to "Doing"' in caught.value.message
    assert setup.ws.store.path.read_text() == state_before
    assert setup.labels(issue) == {"To Do", "area/ui"}
    worker = json.loads(state_before)["projects"][GROUP]["workers"]["dev"][0]
    assert worker["active"] is False


def test_a_refused_token_is_reported_and_never_written_anywhere(remote: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    setup = remote
    assert setup.fake is not None
    issue = setup.seed("Task", ["To Do"])
    wrong = "wrong-credential-value-5678"
    monkeypatch.setenv(TOKEN_ENV, wrong)
    state_before = setup.ws.store.path.read_text()
    with pytest.raises(TrackerAuthError, match=f"fix {TOKEN_ENV}"):
        call(setup.ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="dev")
    with pytest.raises(TrackerAuthError):
        call(setup.ws, "queue_status", projectGroupId=GROUP)
    assert setup.ws.store.path.read_text() == state_before
    audit = setup.ws.audit.path.read_text()
    assert TOKEN_ENV in audit  # the failures were logged, naming the variable to fix...
    assert wrong not in audit and setup.fake.token not in audit  # ...and never its value
    assert wrong not in state_before


def test_a_missing_token_variable_is_named_and_costs_nothing(remote: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    setup = remote
    monkeypatch.delenv(TOKEN_ENV)
    before = setup.count()
    with pytest.raises(ConfigError, match=f"set the environment variable {TOKEN_ENV}"):
        call(setup.ws, "task_pickup", projectGroupId=GROUP, issueId=1, role="dev")
    assert setup.spent(before) == 0
