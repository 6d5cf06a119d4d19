"""What GitLab and GitHub share: lost connections and timeouts on real sockets, the retry policy, and
the project path read from a real git checkout's origin remote."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest
from urllib3.response import HTTPResponse

from devclaw.errors import ConfigError, TrackerError
from devclaw.state import Project, TrackerConfig
from devclaw.trackers.github import GitHubTracker
from devclaw.trackers.gitlab import GitLabTracker
from devclaw.trackers.remote import HttpPolicy, path_from_remote, seconds_to_wait
from devclaw.workflow import Label
from tests.fakes import REMOTE_KINDS, FakeGitLab, FakeServer, Harness, TrackerKind, open_harness

# Real sockets: a short timeout, one retry, no backoff. PyGithub rounds the timeout up to 1 s.
SOCKET_POLICY = HttpPolicy(timeout=0.3, retries=1, backoff=0.0, backoff_max=0.0, retry_after_max=5)


@pytest.fixture(params=REMOTE_KINDS)
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    with open_harness(request.param, tmp_path, policy=SOCKET_POLICY, served=True) as harness:
        yield harness


def stall_seconds(h: Harness) -> float:
    return 0.6 if h.kind == "gitlab" else 1.4  # beyond the client's timeout


# --- lost connections and timeouts ----------------------------------------------------------------


def test_a_reset_read_is_retried(served: Harness) -> None:
    assert served.fake is not None
    number = served.seed("Task", ["To Do"])
    served.fake.reset(method="GET")
    assert served.tracker.get_issue(number).id == number
    assert len(served.fake.requests("GET")) == 2


def test_a_reset_label_write_is_retried_and_lands_once(served: Harness) -> None:
    assert served.fake is not None
    number = served.seed("Task", ["To Do", "bug"])
    issue = served.tracker.get_issue(number)
    served.fake.reset(method="PUT" if served.kind == "gitlab" else "PATCH")
    served.tracker.move_issue(issue, Label.DOING)
    assert set(served.labels_of(number)) == {"bug", "Doing"}


def test_a_reset_create_is_not_resent(served: Harness) -> None:
    assert served.fake is not None
    served.fake.reset(method="POST")
    with pytest.raises(TrackerError, match=r"dropped the connection while creating an issue .* was not resent"):
        served.tracker.create_issue("Only once", "", ("To Do",))
    assert [issue.title for issue in served.fake.project.issues.values()] == ["Only once"]
    assert len(served.fake.requests("POST")) == 1


def test_a_timed_out_read_is_retried(served: Harness) -> None:
    assert served.fake is not None
    number = served.seed("Task", ["To Do"])
    served.fake.stall(stall_seconds(served), method="GET")
    assert served.tracker.get_issue(number).id == number
    assert len(served.fake.requests("GET")) == 2


def test_a_timed_out_comment_is_not_resent(served: Harness) -> None:
    assert served.fake is not None
    number = served.seed("Task", ["Doing"])
    served.fake.stall(stall_seconds(served), method="POST")
    with pytest.raises(TrackerError, match=r"timed out while commenting on issue #1 .* was not resent"):
        served.tracker.add_comment(number, "only once")
    assert len(served.fake.requests("POST")) == 1 and served.comments_of(number) == ["only once"]


def test_persistent_timeouts_end_with_an_error_naming_the_operation(served: Harness) -> None:
    assert served.fake is not None
    served.fake.stall(stall_seconds(served), times=2, method="GET")
    with pytest.raises(TrackerError, match=rf'timed out while listing open "To Do" issues in {served.path}$'):
        served.tracker.list_issues(Label.TO_DO)
    assert len(served.fake.requests("GET")) == SOCKET_POLICY.retries + 1


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_a_server_that_is_down_is_reported_with_its_url(kind: TrackerKind, slept: list[float]) -> None:
    fake = FakeGitLab("acme/webapp")
    with FakeServer(fake) as server:
        url = server.url  # the port is free again once the server is gone
    cls = GitLabTracker if kind == "gitlab" else GitHubTracker
    from devclaw.trackers.remote import Secret

    tracker = cls("acme/webapp", token=Secret(fake.token), base_url=url, policy=SOCKET_POLICY)
    with pytest.raises(TrackerError, match=f"^Cannot connect to .* at {url} while reading issue #3 in acme/webapp$"):
        tracker.get_issue(3)
    assert sum(slept) == 0  # refused at once: nothing waited for


@pytest.mark.parametrize("no_proxy", ["", "127.0.0.1"])
def test_the_environment_s_proxy_is_used_unless_no_proxy_names_the_host(
    monkeypatch: pytest.MonkeyPatch, no_proxy: str
) -> None:
    from devclaw.trackers.remote import Secret

    fake = FakeGitLab("acme/webapp")
    issue = fake.projects["acme/webapp"].add("Behind the proxy", [Label.TO_DO.value])
    with FakeServer(fake) as gone:
        nobody = gone.url  # a port nothing listens on: only the proxy can answer for it
    with FakeServer(fake) as proxy:  # the fake answers a proxy's request (the whole URL) as the host would
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", no_proxy)
        tracker = GitLabTracker("acme/webapp", token=Secret(fake.token), base_url=nobody, policy=SOCKET_POLICY)
        if no_proxy:
            with pytest.raises(TrackerError, match=f"^Cannot connect to GitLab at {nobody} "):
                tracker.get_issue(issue)
        else:
            assert tracker.get_issue(issue).title == "Behind the proxy"


def test_retry_after_is_honoured(served: Harness, slept: list[float]) -> None:
    assert served.fake is not None
    number = served.seed("Task", ["To Do"])
    served.fake.fail(429, headers={"Retry-After": "1"})
    served.tracker.get_issue(number)
    assert 0.9 <= sum(slept) <= 1.1  # the server's second, neither cut short nor added to
    assert len(served.fake.requests("GET")) == 2


# --- the policy ------------------------------------------------------------------------------------


def reply(status: int, **headers: str) -> HTTPResponse:
    return HTTPResponse(body=b"", headers=headers, status=status)


def test_backoff_doubles_and_is_capped() -> None:
    retry = HttpPolicy(retries=8, backoff=0.25, backoff_max=2.0).retry()
    waits = []
    for _ in range(6):
        retry = retry.increment("GET", "/x", response=reply(503))
        waits.append(retry.get_backoff_time())
    assert waits == [0, 0.5, 1.0, 2.0, 2.0, 2.0]


def test_only_idempotent_methods_are_retried_after_a_server_error() -> None:
    retry = HttpPolicy().retry()
    assert all(retry.is_retry(method, 503) for method in ("GET", "PUT", "PATCH", "DELETE"))
    assert not retry.is_retry("POST", 503) and not retry.is_retry("POST", 502)
    assert retry.is_retry("POST", 429)  # refused unprocessed: nothing to duplicate
    assert retry.is_retry("POST", 403, has_retry_after=True) and not retry.is_retry("GET", 403)


def test_a_wait_beyond_the_cap_stops_retrying_at_once() -> None:
    from urllib3.exceptions import MaxRetryError

    retry = HttpPolicy(retry_after_max=10).retry()
    with pytest.raises(MaxRetryError):
        retry.increment("GET", "/x", response=reply(429, **{"Retry-After": "11"}))
    assert retry.increment("GET", "/x", response=reply(429, **{"Retry-After": "10"})).get_retry_after(
        reply(429, **{"Retry-After": "10"})
    ) == pytest.approx(10)


def test_seconds_to_wait_reads_every_form_the_servers_use() -> None:
    now = 1_000_000.0
    assert seconds_to_wait({"Retry-After": "7"}, now) == 7
    assert seconds_to_wait({"Retry-After": formatdate(now + 30, usegmt=True)}, now) == pytest.approx(30)
    assert seconds_to_wait({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(now) + 60)}, now) == 60
    assert seconds_to_wait({"RateLimit-Remaining": "0", "RateLimit-Reset": str(int(now) + 5)}, now) == 5
    assert seconds_to_wait({"X-RateLimit-Remaining": "12", "X-RateLimit-Reset": str(int(now) + 60)}, now) is None
    assert seconds_to_wait({}, now) is None


# --- the path from the origin remote --------------------------------------------------------------


@pytest.mark.parametrize(
    ("remote", "prefix", "expected"),
    [
        ("git@gitlab.com:group/sub/project.git", "", "group/sub/project"),
        ("ssh://git@gitlab.example:2222/group/project.git", "", "group/project"),
        ("https://gitlab.com/group/sub/project.git", "", "group/sub/project"),
        ("https://oauth2:glpat-secret@gitlab.example/group/project", "", "group/project"),
        ("http://git.local:8080/gitlab/team/app.git/", "/gitlab", "team/app"),
        ("git@github.com:owner/name.git", "", "owner/name"),
        ("https://github.com/owner/name", "", "owner/name"),
        ("gitlab.example:group/project", "", "group/project"),
    ],
)
def test_path_from_every_remote_form(remote: str, prefix: str, expected: str) -> None:
    assert path_from_remote(remote, url_prefix=prefix) == expected


def git_repo(tmp_path: Path, origin: str | None) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    if origin is not None:
        subprocess.run(["git", "-C", str(repo), "remote", "add", "origin", origin], check=True)
    return repo


def project_for(kind: str, repo: Path | str, **tracker: str) -> Project:
    config = TrackerConfig.model_validate({"provider": kind, **tracker})
    return Project(name="webapp", repo=str(repo), tracker=config)


ENV = {"GITLAB_TOKEN": "glpat-abcdefghijkl", "GITHUB_TOKEN": "ghp_abcdefghijkl"}


def test_gitlab_path_comes_from_the_origin_remote(tmp_path: Path) -> None:
    repo = git_repo(tmp_path, "git@gitlab.example:platform/backend/api.git")
    tracker = GitLabTracker.from_project(project_for("gitlab", repo, baseUrl="http://gitlab.example/"), environ=ENV)
    assert tracker.path == "platform/backend/api" and tracker.base_url == "http://gitlab.example"


def test_github_path_comes_from_the_origin_remote(tmp_path: Path) -> None:
    repo = git_repo(tmp_path, "https://x-access-token:ghs_secret@github.com/acme/webapp.git")
    tracker = GitHubTracker.from_project(project_for("github", repo), environ=ENV)
    assert tracker.path == "acme/webapp" and tracker.base_url == "https://api.github.com"


def test_an_explicit_path_wins_and_needs_no_git(tmp_path: Path) -> None:
    project = project_for("gitlab", tmp_path / "nowhere", path="a/b/c", tokenEnv="MY_TOKEN")
    tracker = GitLabTracker.from_project(project, environ={"MY_TOKEN": "secret-value-123"})
    assert tracker.path == "a/b/c" and tracker.endpoint.token_env == "MY_TOKEN"


def test_no_origin_remote_says_to_set_the_path(tmp_path: Path) -> None:
    repo = git_repo(tmp_path, None)
    with pytest.raises(ConfigError, match=r"Cannot read the origin remote of .*; set tracker.path in projects.json"):
        GitLabTracker.from_project(project_for("gitlab", repo), environ=ENV)


def test_a_github_remote_deeper_than_owner_name_is_refused_without_leaking_credentials(tmp_path: Path) -> None:
    repo = git_repo(tmp_path, "https://user:hunter2secret@gitlab.example/group/sub/project.git")
    with pytest.raises(ConfigError, match="owner/name path") as caught:
        GitHubTracker.from_project(project_for("github", repo), environ=ENV)
    assert "hunter2secret" not in caught.value.message


def test_no_repo_and_no_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"needs tracker\.path"):
        GitHubTracker.from_project(project_for("github", ""), environ=ENV)
