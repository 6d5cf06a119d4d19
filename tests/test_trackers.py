"""The Tracker contract, the same tests on the embedded, GitLab and GitHub trackers.

GitLab and GitHub run the real python-gitlab and PyGithub clients against the stateful fakes in
``tests/fakes.py``; every count of requests below is a budget from the tracker issue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devclaw.errors import ConfigError, DevclawError, NotFoundError, TrackerAuthError, TrackerError
from devclaw.trackers.base import Issue
from devclaw.workflow import DEFAULT, Label, customised
from tests.fakes import (
    GITHUB_URL,
    GITLAB_URL,
    KINDS,
    REMOTE_KINDS,
    TEST_POLICY,
    FakeGitHub,
    Harness,
    TrackerKind,
    make_fake,
    mount_responses,
    open_harness,
    remote_tracker,
)

FOREIGN = ("priority::high", "area/ui")


@pytest.fixture(params=KINDS)
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    with open_harness(request.param, tmp_path) as harness:
        yield harness


@pytest.fixture(params=REMOTE_KINDS)
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    with open_harness(request.param, tmp_path) as harness:
        yield harness


def writes(h: Harness) -> list[str]:
    return [entry.method for entry in h.wire_requests() if entry.method != "GET"]


def budget(h: Harness, remote_count: int) -> int:
    """The number of HTTP requests an operation may make: none at all on the embedded tracker."""
    return 0 if h.kind == "local" else remote_count


def error_chain(exc: BaseException) -> str:
    """Everything an exception shows, its causes included."""
    parts = []
    current: BaseException | None = exc
    while current is not None:
        parts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


# --- reading -------------------------------------------------------------------------------------


def test_get_issue_converts_to_our_issue_in_one_request(h: Harness) -> None:
    number = h.seed("Add login page", ["To Do", *FOREIGN], description="A form.")
    issue = h.tracker.get_issue(number)
    assert issue == Issue(number, "Add login page", "A form.", "open", issue.labels, issue.url, Label.TO_DO)
    assert set(issue.labels) == {"To Do", *FOREIGN} and issue.label is Label.TO_DO
    assert issue.url.endswith(f"/{number}")
    assert len(h.wire_requests()) == budget(h, 1)


def test_get_issue_reads_closed_issues(h: Harness) -> None:
    number = h.seed("Old", ["Done"], state="closed")
    assert h.tracker.get_issue(number).state == "closed"


def test_get_missing_issue_names_issue_and_path(h: Harness) -> None:
    h.seed("Only one")
    with pytest.raises(NotFoundError, match=rf"^issue #42 not found in {h.path}$"):
        h.tracker.get_issue(42)
    assert len(h.wire_requests()) == budget(h, 1)


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_missing_project_is_reported_as_such(kind: TrackerKind) -> None:
    fake = make_fake(kind, "acme/exists")
    base_url = GITLAB_URL if kind == "gitlab" else GITHUB_URL
    with mount_responses(fake, base_url):
        fake.path = "acme/gone"  # the tracker asks for a project the server does not have
        tracker = remote_tracker(kind, fake, base_url)
        with pytest.raises(NotFoundError, match=r"^project acme/gone not found on "):
            tracker.list_issues(Label.TO_DO)
        with pytest.raises(NotFoundError, match=r"^project acme/gone not found on "):
            tracker.ensure_labels()
    if kind == "gitlab":  # GitLab says which of the two is missing; GitHub's 404 does not
        with mount_responses(fake, base_url), pytest.raises(NotFoundError, match=r"^project acme/gone"):
            tracker.get_issue(1)


def test_list_follows_every_page_oldest_first(h: Harness) -> None:
    queued = [h.seed(f"Task {n}", ["To Do", "backend"] if n % 2 else ["To Do"]) for n in range(260)]
    h.seed("Closed", ["To Do"], state="closed")
    h.seed("Elsewhere", ["To Test"])
    h.forget_requests()
    listed = h.tracker.list_issues(Label.TO_DO)
    assert [issue.id for issue in listed] == queued
    assert all(issue.state == "open" and "To Do" in issue.labels for issue in listed)
    assert len(h.wire_requests()) == budget(h, 3)  # 100 + 100 + 60
    assert {entry.query.get("per_page") for entry in h.wire_requests()} <= {"100"}


def test_list_without_label_returns_every_open_issue(h: Harness) -> None:
    numbers = [h.seed("A", ["To Do"]), h.seed("B", []), h.seed("C", ["Testing"])]
    h.seed("D", ["Done"], state="closed")
    assert [issue.id for issue in h.tracker.list_issues()] == numbers


def test_github_queue_never_contains_pull_requests(tmp_path: Path) -> None:
    with open_harness("github", tmp_path) as h:
        issues = []
        for n in range(150):
            is_pr = n % 3 == 0
            number = h.seed(f"Item {n}", ["To Do"], pull_request=is_pr)
            if not is_pr:
                issues.append(number)
        h.forget_requests()
        listed = h.tracker.list_issues(Label.TO_DO)
        assert [issue.id for issue in listed] == issues
        assert len(h.wire_requests()) == 2  # 150 items, pull requests included, in pages of 100
        pr = next(n for n in range(1, 151) if n not in issues)
        with pytest.raises(NotFoundError, match=f"issue #{pr} not found"):
            h.tracker.get_issue(pr)


# --- writing -------------------------------------------------------------------------------------


def test_move_swaps_only_the_workflow_label_in_one_write(h: Harness) -> None:
    number = h.seed("Task", [FOREIGN[0], "To Do", FOREIGN[1]])
    issue = h.tracker.get_issue(number)
    h.forget_requests()
    moved = h.tracker.move_issue(issue, Label.DOING)
    assert moved.label is Label.DOING and moved.state == "open"
    assert set(h.labels_of(number)) == {*FOREIGN, "Doing"}
    assert set(moved.labels) == {*FOREIGN, "Doing"}
    assert writes(h) == budget(h, 1) * ["PUT" if h.kind == "gitlab" else "PATCH"]
    assert len(h.wire_requests()) == budget(h, 1)  # no read before the write


def test_move_removes_every_stray_workflow_label(h: Harness) -> None:
    number = h.seed("Task", ["To Do", "Doing", "bug"])  # left half-moved by some other tool
    moved = h.tracker.move_issue(h.tracker.get_issue(number), Label.TO_TEST)
    assert set(h.labels_of(number)) == {"bug", "To Test"} and moved.label is Label.TO_TEST


def test_gitlab_move_is_not_a_read_modify_write(tmp_path: Path) -> None:
    with open_harness("gitlab", tmp_path) as h:
        number = h.seed("Task", ["To Do"])
        issue = h.tracker.get_issue(number)
        assert h.fake is not None
        h.fake.project.issues[number].labels.append("urgent")  # a person labels it meanwhile
        h.forget_requests()
        h.tracker.move_issue(issue, Label.DOING)
        assert set(h.labels_of(number)) == {"urgent", "Doing"}
        (put,) = h.wire_requests()
        assert put.body == {
            "add_labels": "Doing",
            "remove_labels": "Planning,To Do,To Test,Testing,Done,To Improve,Refining",
        }


def test_github_move_sends_only_labels_and_state(tmp_path: Path) -> None:
    with open_harness("github", tmp_path) as h:
        assert h.fake is not None
        number = h.seed("Task", ["To Test", "bug"])
        h.fake.project.issues[number].milestone = "v1"
        issue = h.tracker.get_issue(number)
        h.forget_requests()
        h.tracker.move_issue(issue, Label.DONE, "closed")
        (patch,) = h.wire_requests()
        assert patch.method == "PATCH"
        assert patch.body == {"labels": ["bug", "Done"], "state": "closed", "state_reason": "completed"}
        assert h.fake.project.issues[number].milestone == "v1"


def test_close_and_reopen_go_with_the_label_in_one_write(h: Harness) -> None:
    number = h.seed("Task", ["Testing", "bug"])
    h.forget_requests()
    closed = h.tracker.move_issue(h.tracker.get_issue(number), Label.DONE, "closed")
    assert closed.state == "closed" and closed.label is Label.DONE
    assert h.state_of(number) == "closed" and set(h.labels_of(number)) == {"bug", "Done"}
    assert len(h.wire_requests()) == budget(h, 2)  # the read, then label + state together
    h.forget_requests()
    reopened = h.tracker.move_issue(closed, Label.TO_IMPROVE, "open")
    assert reopened.state == "open" and h.state_of(number) == "open"
    assert set(h.labels_of(number)) == {"bug", "To Improve"}
    assert len(h.wire_requests()) == budget(h, 1)


def test_create_issue_in_one_request(h: Harness) -> None:
    created = h.tracker.create_issue("New thing", "Details.", ("Planning", "area/ui"))
    assert created.title == "New thing" and created.description == "Details."
    assert created.state == "open" and set(created.labels) == {"Planning", "area/ui"}
    assert h.tracker.get_issue(created.id) == created
    assert len(h.wire_requests()) == budget(h, 2)  # the POST, then the read back


def test_add_comment_in_one_request(h: Harness) -> None:
    number = h.seed("Task", ["Doing"])
    h.forget_requests()
    h.tracker.add_comment(number, "QA: the form does not submit.")
    assert h.comments_of(number) == ["QA: the form does not submit."]
    assert len(h.wire_requests()) == budget(h, 1)
    with pytest.raises(NotFoundError, match=f"issue #77 not found in {h.path}"):
        h.tracker.add_comment(77, "lost")


def test_ensure_labels_creates_the_missing_ones_once(h: Harness) -> None:
    created = h.tracker.ensure_labels()
    assert created == [spec.label for spec in DEFAULT.states.values()]
    colours = h.label_colours()
    for spec in DEFAULT.states.values():
        assert colours[spec.label] == (spec.colour if h.kind != "github" else spec.colour.lstrip("#"))
    assert len(h.wire_requests()) == budget(h, 1 + 8)
    h.forget_requests()
    assert h.tracker.ensure_labels() == []
    assert len(h.wire_requests()) == budget(h, 1)


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_ensure_labels_keeps_existing_labels_and_their_colours(kind: TrackerKind, tmp_path: Path) -> None:
    with open_harness(kind, tmp_path) as h:
        assert h.fake is not None
        h.fake.project.labels.update({"To Do": "000000", "Done": "111111", "bug": "222222"})
        assert h.tracker.ensure_labels() == [s for s in DEFAULT.states if s not in ("To Do", "Done")]
        assert h.fake.project.labels["To Do"] == "000000"
        assert len(h.wire_requests()) == 1 + 6


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_ensure_labels_tolerates_a_label_created_concurrently(kind: TrackerKind, tmp_path: Path) -> None:
    with open_harness(kind, tmp_path) as h:
        assert h.fake is not None
        # Someone else creates "Planning" between our listing and our POST: the server says so.
        h.fake.fail(409 if kind == "gitlab" else 422, method="POST", body=conflict(kind))
        created = h.tracker.ensure_labels()
        assert created == [s for s in DEFAULT.states if s != Label.PLANNING]
        assert len(h.fake.requests("POST")) == 8


def conflict(kind: TrackerKind) -> dict[str, object]:
    if kind == "gitlab":
        return {"message": "Label already exists"}
    return {"message": "Validation Failed", "errors": [{"resource": "Label", "code": "already_exists"}]}


# --- tokens --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_missing_token_variable_is_named(kind: TrackerKind) -> None:
    from devclaw.state import Project, TrackerConfig
    from devclaw.trackers import open_tracker

    project = Project(name="webapp", tracker=TrackerConfig(provider=kind, path="acme/webapp", token_env="ACME_TOKEN"))
    with pytest.raises(ConfigError, match=r"token missing: set the environment variable ACME_TOKEN"):
        open_tracker(project, Path("unused"))


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_empty_default_token_variable_is_named(kind: TrackerKind, monkeypatch: pytest.MonkeyPatch) -> None:
    from devclaw.state import Project, TrackerConfig
    from devclaw.trackers import open_tracker

    variable = "GITLAB_TOKEN" if kind == "gitlab" else "GITHUB_TOKEN"
    monkeypatch.setenv(variable, "  ")
    project = Project(name="webapp", tracker=TrackerConfig(provider=kind, path="acme/webapp"))
    with pytest.raises(ConfigError, match=f"set the environment variable {variable} "):
        open_tracker(project, Path("unused"))


@pytest.mark.parametrize("kind", REMOTE_KINDS)
@pytest.mark.parametrize("status", [401, 403])
def test_refused_token_says_which_variable_to_fix(kind: TrackerKind, status: int) -> None:
    fake = make_fake(kind, "acme/webapp")
    fake.project.add("Task", ["To Do"])
    base_url = GITLAB_URL if kind == "gitlab" else GITHUB_URL
    wrong = "wrong-token-0987654321"
    with mount_responses(fake, base_url):
        if status == 401:
            tracker = remote_tracker(kind, fake, base_url, token=wrong)
        else:
            tracker = remote_tracker(kind, fake, base_url)
            fake.fail(403, body={"message": "403 Forbidden - insufficient_scope " + fake.token})
        with pytest.raises(TrackerAuthError) as caught:
            tracker.get_issue(1)
    variable = "GITLAB_TOKEN" if kind == "gitlab" else "GITHUB_TOKEN"
    assert f"refused the token in {variable} (HTTP {status})" in caught.value.message
    assert f"fix {variable}" in caught.value.message
    assert caught.value.status == status
    assert fake.token not in caught.value.message and wrong not in error_chain(caught.value)
    assert len(fake.log) == 1  # a refused token is not retried


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_token_never_shows_in_reprs_errors_or_logs(
    kind: TrackerKind, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for logger in ("", "github", "gitlab", "urllib3", "requests"):
        caplog.set_level(logging.DEBUG, logger=logger)
    with open_harness(kind, tmp_path, served=True) as h:
        assert h.fake is not None
        token = h.fake.token
        number = h.seed("Task", ["To Do"])
        h.tracker.move_issue(h.tracker.get_issue(number), Label.DOING)
        h.tracker.list_issues(Label.TO_DO)
        shown = [repr(h.tracker), repr(vars(h.tracker))]
        for status in (401, 403, 500, 503):
            h.fake.fail(status, times=5)
            with pytest.raises(TrackerError) as caught:
                h.tracker.get_issue(number)
            shown.append(error_chain(caught.value))
    assert any("GET" in record.getMessage() for record in caplog.records), "nothing logged: proves nothing"
    for text in [*shown, caplog.text]:
        assert token not in text


def test_a_server_echoing_the_token_does_not_put_it_in_our_message(remote: Harness) -> None:
    assert remote.fake is not None
    remote.fake.fail(400, body={"message": f"bad header {remote.fake.token}"})
    with pytest.raises(TrackerError) as caught:
        remote.tracker.get_issue(1)
    assert "bad header ***" in caught.value.message and remote.fake.token not in caught.value.message


# --- transient and persistent failures ------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_transient_failures_of_reads_are_retried(remote: Harness, status: int) -> None:
    assert remote.fake is not None
    number = remote.seed("Task", ["To Do"])
    remote.fake.fail(status, times=2, headers={"Retry-After": "0"} if status == 429 else {})
    assert remote.tracker.get_issue(number).title == "Task"
    assert len(remote.wire_requests()) == 3


def test_transient_failure_of_a_label_write_is_retried_without_half_moves(remote: Harness) -> None:
    assert remote.fake is not None
    number = remote.seed("Task", ["To Do", "bug"])
    issue = remote.tracker.get_issue(number)
    remote.forget_requests()
    remote.fake.fail(503, times=2)
    remote.tracker.move_issue(issue, Label.DOING)
    assert set(remote.labels_of(number)) == {"bug", "Doing"}
    assert len(remote.wire_requests()) == 3 and len(set(writes(remote))) == 1


def test_persistent_failure_names_operation_project_and_status(remote: Harness) -> None:
    assert remote.fake is not None
    number = remote.seed("Task", ["To Do", "bug"])
    issue = remote.tracker.get_issue(number)
    remote.forget_requests()
    remote.fake.fail(503, times=10)
    with pytest.raises(TrackerError) as caught:
        remote.tracker.move_issue(issue, Label.DOING)
    message = caught.value.message
    assert f'moving issue #{number} to "Doing" in {remote.path}' in message and "HTTP 503" in message
    assert caught.value.status == 503 and not isinstance(caught.value, TrackerAuthError)
    assert len(remote.wire_requests()) == TEST_POLICY.retries + 1  # bounded
    assert remote.labels_of(number) == ["To Do", "bug"]  # nothing half-moved


def test_create_is_not_resent_after_a_server_error(remote: Harness) -> None:
    assert remote.fake is not None
    remote.fake.fail(502, method="POST")
    with pytest.raises(TrackerError, match=r"creating an issue in .*HTTP 502"):
        remote.tracker.create_issue("Once", "", ())
    assert len(remote.fake.requests("POST")) == 1
    assert remote.fake.project.issues == {}


def test_comment_is_not_resent_after_a_lost_reply(remote: Harness) -> None:
    assert remote.fake is not None
    number = remote.seed("Task", ["Doing"])
    remote.fake.stall(60, method="POST")  # the server stores the comment, the reply never arrives
    with pytest.raises(TrackerError, match="was not resent, to avoid a duplicate"):
        remote.tracker.add_comment(number, "only once")
    assert remote.comments_of(number) == ["only once"]
    assert len(remote.fake.requests("POST")) == 1


def test_a_refused_create_is_resent_because_nothing_was_created(remote: Harness) -> None:
    assert remote.fake is not None
    remote.fake.fail(429, method="POST", headers={"Retry-After": "0"})
    created = remote.tracker.create_issue("Once", "", ("To Do",))
    assert [issue.title for issue in remote.fake.project.issues.values()] == ["Once"]
    assert created.label is Label.TO_DO and len(remote.fake.requests("POST")) == 2


def test_rate_limit_with_a_long_wait_fails_at_once_with_the_reset_time(remote: Harness, slept: list[float]) -> None:
    assert remote.fake is not None
    reset = int(time.time()) + 1800
    if remote.kind == "github":  # primary limit: 403, remaining 0, reset as epoch seconds
        headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}
        remote.fake.fail(403, headers=headers, body={"message": "API rate limit exceeded for user ID 1."})
    else:
        headers = {"Retry-After": "1800", "RateLimit-Remaining": "0", "RateLimit-Reset": str(reset)}
        remote.fake.fail(429, headers=headers, body={"message": "Retry later"})
    with pytest.raises(TrackerError) as caught:
        remote.tracker.list_issues(Label.TO_DO)
    at = datetime.fromtimestamp(reset, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert caught.value.message.endswith(f"rate limit exhausted while listing open \"To Do\" issues in "
                                         f"{remote.path}; it resets at {at}")  # fmt: skip
    assert not isinstance(caught.value, TrackerAuthError)
    assert sum(slept) == 0 and len(remote.wire_requests()) == 1


def test_github_secondary_rate_limit_is_waited_out_when_short(tmp_path: Path) -> None:
    with open_harness("github", tmp_path) as h:
        assert h.fake is not None
        number = h.seed("Task", ["To Do"])
        h.fake.fail(403, headers={"Retry-After": "1"}, body={"message": "You have exceeded a secondary rate limit"})
        assert h.tracker.get_issue(number).id == number
        assert len(h.wire_requests()) == 2


def test_every_request_carries_a_timeout(remote: Harness) -> None:
    number = remote.seed("Task", ["To Do"])
    remote.tracker.move_issue(remote.tracker.get_issue(number), Label.DOING)
    remote.tracker.ensure_labels()
    remote.tracker.add_comment(number, "hi")
    assert remote.mock is not None and len(remote.mock.calls) == 11  # "Doing" exists once the move used it
    for call in remote.mock.calls:
        sent_with: dict[str, object] = call.request.req_kwargs  # type: ignore[attr-defined]  # set by responses
        assert sent_with["timeout"] in (TEST_POLICY.timeout, int(TEST_POLICY.timeout))


def test_errors_are_devclaw_errors_with_the_library_error_as_cause(remote: Harness) -> None:
    assert remote.fake is not None
    remote.fake.fail(500)
    with pytest.raises(DevclawError) as caught:
        remote.tracker.get_issue(1)
    assert caught.value.__cause__ is not None
    assert type(caught.value.__cause__).__module__.split(".")[0] in {"gitlab", "github"}


def test_trackers_are_lazy_and_cheap_to_open(remote: Harness) -> None:
    assert remote.wire_requests() == []


def test_github_pickup_is_not_slowed_by_pygithub_throttling(tmp_path: Path, slept: list[float]) -> None:
    # PyGithub's defaults wait 0.25 s before a request that follows another, 1 s between writes.
    with open_harness("github", tmp_path) as h:
        number = h.seed("Task", ["To Do"])
        for target in (Label.DOING, Label.TO_TEST, Label.TESTING):
            h.tracker.move_issue(h.tracker.get_issue(number), target)
        assert sum(slept) == 0


def test_github_enterprise_api_root_and_its_pages(tmp_path: Path) -> None:
    from devclaw.trackers.github import GitHubTracker
    from devclaw.trackers.remote import Secret

    fake = FakeGitHub("acme/webapp", api_prefix="/api/v3")
    numbers = [fake.project.add(f"Task {n}", ["To Test"]) for n in range(120)]
    with mount_responses(fake, "https://ghe.example"):
        tracker = GitHubTracker(
            "acme/webapp", token=Secret(fake.token), base_url="https://ghe.example/api/v3", policy=TEST_POLICY
        )
        assert [issue.id for issue in tracker.list_issues(Label.TO_TEST)] == numbers
        moved = tracker.move_issue(tracker.get_issue(1), Label.TESTING)
    assert moved.label is Label.TESTING
    assert {entry.path for entry in fake.log} == {"/repos/acme/webapp/issues", "/repos/acme/webapp/issues/1"}
    assert len(fake.log) == 4


def test_a_projects_own_labels_are_what_the_tracker_reads_and_writes(h: Harness) -> None:
    h.tracker.workflow = customised(
        DEFAULT,
        {Label.TO_DO: ("Backlog", None), "Blocked": (None, "#000000")},
        {Label.TESTING: {"qa_refine": "Blocked"}, "Blocked": {"human": Label.TO_DO}},
    )
    created = h.tracker.ensure_labels()
    assert "Backlog" in created and "Blocked" in created and "To Do" not in created
    issue = h.seed("Add login page", ["bug", "Backlog"])
    h.seed("Not ours", ["To Do"])  # the built-in label means nothing to this project
    (listed,) = h.tracker.list_issues(Label.TO_DO)
    assert (listed.id, listed.label) == (issue, Label.TO_DO)
    moved = h.tracker.move_issue(listed, "Blocked")
    assert moved.label == "Blocked" and sorted(h.labels_of(issue)) == ["Blocked", "bug"]
    h.tracker.move_issue(moved, Label.TO_DO)
    assert sorted(h.labels_of(issue)) == ["Backlog", "bug"]
    assert h.tracker.get_issue(issue).label == Label.TO_DO
