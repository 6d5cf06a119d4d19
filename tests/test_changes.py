"""Finding an issue's change (merge request / pull request) on the three trackers, and the DEV "done" gate.

GitLab and GitHub run the real python-gitlab and PyGithub clients against the stateful fakes; the request
counts asserted here are the costs the trackers' docstrings state.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devclaw.errors import NotFoundError, WorkflowError
from devclaw.state import ChangeSettings, Project, ReviewSettings, TrackerConfig
from devclaw.trackers.base import ChangeRequest
from devclaw.workflow import ROLES, Label
from devclaw.workspace import Workspace
from tests.conftest import GROUP, PYTHON, call, snapshot
from tests.fakes import (
    GITHUB_URL,
    GITLAB_URL,
    KINDS,
    REMOTE_KINDS,
    FakeTracker,
    Harness,
    TrackerKind,
    make_fake,
    mount_responses,
    open_harness,
)

TOKEN_ENV = "ACME_TRACKER_CREDENTIAL"
DEV_SESSION = "agent:main:subagent:dev-1"


@pytest.fixture(params=KINDS)
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    with open_harness(request.param, tmp_path) as harness:
        yield harness


def spent(h: Harness, before: int) -> int:
    return len(h.wire_requests()) - before


# --- the trackers ----------------------------------------------------------------------------------


def test_an_issue_without_a_change_has_none(h: Harness) -> None:
    issue = h.seed("Task", ["Doing"])
    before = len(h.wire_requests())
    assert h.tracker.changes_for(issue) == ()
    # GitLab: closed_by + related_merge_requests; GitHub: the timeline (its "labeled" event is not a change).
    assert spent(h, before) == {"local": 0, "gitlab": 2, "github": 1}[h.kind]


def test_a_merged_change_is_found_with_its_fields_and_cost(h: Harness) -> None:
    issue = h.seed("Task", ["Doing"])
    url = h.add_change(issue, state="merged", source_branch="fix-login", target_branch="develop")
    before = len(h.wire_requests())
    (change,) = h.tracker.changes_for(issue)
    assert (change.url, change.state, change.draft) == (url, "merged", False)
    assert (change.source_branch, change.target_branch) == ("fix-login", "develop")
    assert change.diff_url == {"local": url, "gitlab": f"{url}/diffs", "github": f"{url}/files"}[h.kind]
    # a merged change needs no approvals read: GitLab 2 listings; GitHub timeline + the pull request
    assert spent(h, before) == {"local": 0, "gitlab": 2, "github": 2}[h.kind]


def test_an_open_change_costs_one_more_read_for_its_approvals(h: Harness) -> None:
    if h.kind == "local":
        pytest.skip("the embedded tracker has no approvals")
    issue = h.seed("Task", ["Doing"])
    assert h.fake is not None
    fields: dict[str, Any] = (
        {"approved_by": ["rev1", "rev2"]}
        if h.kind == "gitlab"
        else {
            "reviews": [
                ("rev1", "CHANGES_REQUESTED"),
                ("rev1", "APPROVED"),
                ("rev2", "APPROVED"),
                ("rev3", "COMMENTED"),
            ]
        }
    )
    h.add_change(issue, state="open", draft=True, author="alice", has_conflicts=True, **fields)
    before = len(h.wire_requests())
    (change,) = h.tracker.changes_for(issue)
    assert (change.state, change.draft, change.author, change.approvals) == ("open", True, "alice", 2)
    assert change.mergeable is False
    assert spent(h, before) == {"gitlab": 3, "github": 3}[h.kind]


def test_a_change_that_only_mentions_the_issue_is_found_once(h: Harness) -> None:
    issue = h.seed("Task", ["Doing"])
    other = h.seed("Other", ["To Do"])
    h.add_change(issue, state="merged")
    h.add_change(issue, state="closed", mention=True)
    h.add_change(other, state="merged")
    changes = h.tracker.changes_for(issue)
    assert [change.state for change in changes] == ["merged", "closed"]
    assert len({change.url for change in changes}) == 2


def test_github_ignores_cross_references_from_issues_and_other_repositories(tmp_path: Path) -> None:
    with open_harness("github", tmp_path) as h:
        assert h.fake is not None
        issue = h.seed("Task", ["Doing"])
        h.seed("An issue naming it")  # a plain issue's cross-reference is no pull request
        number = h.fake.add_change("Elsewhere", closes=[issue])
        original = h.fake._timeline  # type: ignore[attr-defined]

        def foreign(project: Any, wanted: int, api: str) -> list[Any]:
            events = original(project, wanted, api)
            for event in events:
                source = (event.get("source") or {}).get("issue")
                if source and source["number"] == number:
                    source["repository_url"] = api.replace("acme/webapp", "acme/other")
            return list(events)

        h.fake._timeline = foreign  # type: ignore[attr-defined]
        assert h.tracker.changes_for(issue) == ()


def test_changes_of_a_missing_issue_name_it(h: Harness) -> None:
    with pytest.raises(NotFoundError, match="#404"):
        h.tracker.changes_for(404)


def test_new_change_url_names_the_base_branch_and_the_host(h: Harness) -> None:
    url = h.tracker.new_change_url("release/2.0")
    if h.kind == "local":
        assert url == ""
    elif h.kind == "gitlab":
        assert url.startswith(f"{GITLAB_URL}/acme/platform/webapp/-/merge_requests/new?")
        assert "merge_request%5Btarget_branch%5D=release%2F2.0" in url
    else:
        assert url == "https://github.com/acme/webapp/compare/release/2.0...YOUR-BRANCH?expand=1"
    assert h.wire_requests() == []


def test_github_enterprise_links_to_its_own_web_host(tmp_path: Path) -> None:
    from devclaw.trackers.github import GitHubTracker
    from devclaw.trackers.remote import Secret

    tracker = GitHubTracker("acme/webapp", token=Secret("x"), base_url="https://ghe.example/api/v3")
    assert tracker.new_change_url("main").startswith("https://ghe.example/acme/webapp/compare/main...")
    assert tracker.change_noun == "pull request"


def test_a_local_link_again_updates_it_and_keeps_its_number(tmp_path: Path) -> None:
    with open_harness("local", tmp_path) as h:
        issue = h.seed("Task", ["Doing"])
        url = h.add_change(issue, state="open", draft=True)
        (first,) = h.tracker.changes_for(issue)
        from devclaw.trackers.local import LocalTracker

        assert isinstance(h.tracker, LocalTracker)
        h.tracker.link_change(issue, ChangeRequest(0, url, "merged", source_branch="b2", target_branch="main"))
        (again,) = h.tracker.changes_for(issue)
        assert (again.number, again.state, again.draft, again.source_branch) == (first.number, "merged", False, "b2")


# --- the gate, through the tools -------------------------------------------------------------------


@contextlib.contextmanager
def workspace(
    kind: TrackerKind,
    ws: Workspace,
    monkeypatch: pytest.MonkeyPatch,
    review: str = "skip",
    review_merge: bool = False,
    **changes: Any,
) -> Iterator[Harness]:
    """One project on a fresh ``kind`` tracker, its ``changes`` settings and review policy as given, with an
    issue on Doing held by an active DEV worker (issue number in ``harness.issue``)."""
    from devclaw.registry import register_project

    settings = ChangeSettings(**changes)
    fake: FakeTracker | None = None
    if kind == "local":
        stack: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        config = TrackerConfig(provider="local", path="webapp")
    else:
        fake = make_fake(kind, "acme/platform/webapp" if kind == "gitlab" else "acme/webapp")
        monkeypatch.setenv(TOKEN_ENV, fake.token)
        base_url = GITLAB_URL if kind == "gitlab" else GITHUB_URL
        stack = mount_responses(fake, base_url)
        config = TrackerConfig(provider=kind, path=fake.path, base_url=base_url, token_env=TOKEN_ENV)
    with stack:
        project = Project(
            name="webapp",
            base_branch="develop",
            tracker=config,
            changes=settings,
            review=ReviewSettings(policy=review, merge=review_merge),
        )
        register_project(ws, GROUP, project)
        tracker = ws.tracker(ws.store.read().project(GROUP))
        harness = Harness(kind, tracker, fake, db=ws.memory / "tracker.sqlite3")
        issue = harness.seed("Add login page", ["To Do"])
        call(ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="dev")
        call(ws, "task_pickup_confirm", projectGroupId=GROUP, role="dev", sessionId=DEV_SESSION)
        harness.issue = issue  # type: ignore[attr-defined]
        yield harness


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_dev_done_without_a_change_is_refused_and_changes_nothing(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch) as h:
        issue: int = h.issue  # type: ignore[attr-defined]
        before = snapshot(ws)
        with pytest.raises(WorkflowError) as caught:
            call(ws, "task_complete", projectGroupId=GROUP, role="dev", result="done")
        message = caught.value.message
        assert caught.value.type == "change_required"  # a workflow refusal the work loop can tell apart
        noun = "merge request" if kind == "gitlab" else "pull request"
        assert f"issue #{issue} on webapp" in message and f"no {noun} closes or mentions it" in message
        assert 'into "develop"' in message and h.tracker.new_change_url("develop") in message
        assert "main" not in message and " gh " not in message
        assert snapshot(ws)[0] == before[0]  # projects.json: the worker is still active
        assert h.labels_of(issue) == ["Doing"] and h.state_of(issue) == "open"
        worker = ws.store.read().project(GROUP).worker("dev")
        assert worker.active and worker.issue_id == issue
        assert [r for r in ws.audit.records() if r["event"] == "task_complete"] == []


@pytest.mark.parametrize("kind", KINDS)
def test_dev_done_with_only_an_open_change_is_refused_when_it_must_be_merged(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch, required=True) as h:
        issue: int = h.issue  # type: ignore[attr-defined]
        url = h.add_change(issue, state="open", target_branch="develop")
        with pytest.raises(WorkflowError) as caught:
            call(ws, "task_complete", projectGroupId=GROUP, role="dev", result="done")
        message = caught.value.message
        assert url in message and "is open, 0 approvals, not merged" in message
        assert 'get it merged into "develop"' in message
        if kind == "local":
            assert f"devclaw issue link-mr {GROUP} {issue} {url} --state merged" in message
        assert h.labels_of(issue) == ["Doing"]


@pytest.mark.parametrize("kind", KINDS)
def test_dev_done_with_a_merged_change_carries_it_in_the_result_and_the_audit(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch, required=True) as h:
        issue: int = h.issue  # type: ignore[attr-defined]
        h.add_change(issue, state="open", draft=True)
        url = h.add_change(issue, state="merged", source_branch="login", target_branch="develop")
        result = call(ws, "task_complete", projectGroupId=GROUP, role="dev", result="done", summary="login page")
        assert (result["changeUrl"], result["changeState"]) == (url, "merged")
        assert h.labels_of(issue) == [Label.TO_TEST.value]
        (line,) = [r for r in ws.audit.records() if r["event"] == "task_complete"]
        assert (line["changeUrl"], line["changeState"]) == (url, "merged")
        qa = call(ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="qa")
        noun = "pull request" if kind == "github" else "merge request"
        diff = {"local": url, "gitlab": f"{url}/diffs", "github": f"{url}/files"}[kind]
        assert f"Change: {noun} {url} (merged), branch login into develop; diff: {diff}" in qa["taskMessage"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_open_change_is_enough_when_merging_is_not_required(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch, required=True, must_be_merged=False) as h:
        issue: int = h.issue  # type: ignore[attr-defined]
        url = h.add_change(issue, state="open")
        result = call(ws, "task_complete", projectGroupId=GROUP, role="dev", result="done")
        assert (result["changeUrl"], result["changeState"]) == (url, "open")


@pytest.mark.parametrize("kind", KINDS)
def test_a_closed_change_is_refused_with_reopen_or_open_a_new_one(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch, required=True) as h:
        issue: int = h.issue  # type: ignore[attr-defined]
        url = h.add_change(issue, state="closed")
        with pytest.raises(WorkflowError, match=f"is closed, not merged. Next: reopen {url}"):
            call(ws, "task_complete", projectGroupId=GROUP, role="dev", result="done")


@pytest.mark.parametrize("kind", KINDS)
def test_not_required_makes_no_lookup_and_names_no_change(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch, required=False) as h:
        issue: int = h.issue  # type: ignore[attr-defined]
        before = len(h.wire_requests())
        result = call(ws, "task_complete", projectGroupId=GROUP, role="dev", result="done")
        assert "changeUrl" not in result and "changeState" not in result
        assert len(h.wire_requests()) - before == {"local": 0, "gitlab": 2, "github": 2}[kind]
        (line,) = [r for r in ws.audit.records() if r["event"] == "task_complete"]
        assert "changeUrl" not in line
        qa = call(ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="qa")
        assert "Change:" not in qa["taskMessage"]


def test_the_defaults_follow_the_tracker(ws: Workspace) -> None:
    assert Project(name="a").changes_required is False
    assert Project(name="a", tracker=TrackerConfig(provider="gitlab")).changes_required is True
    assert Project(name="a", tracker=TrackerConfig(provider="github")).changes_required is True
    explicit = Project(name="a", tracker=TrackerConfig(provider="github"), changes=ChangeSettings(required=False))
    assert explicit.changes_required is False and explicit.must_be_merged(ROLES["dev"]) is True


def test_an_invalid_changes_setting_is_refused_naming_the_field(ws: Workspace) -> None:
    from devclaw.errors import ConfigError

    ws.store.path.write_text(
        json.dumps({"version": 2, "projects": {GROUP: {"name": "a", "changes": {"required": "maybe"}}}})
    )
    with pytest.raises(ConfigError, match=r"projects\..*\.changes\.required"):
        ws.store.read()
    ws.store.path.write_text(
        json.dumps({"version": 2, "projects": {GROUP: {"name": "a", "changes": {"merged": True}}}})
    )
    with pytest.raises(ConfigError, match=r"changes\.merged"):
        ws.store.read()


# --- the CLI -------------------------------------------------------------------------------------


def devclaw(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "devclaw", "--workspace", str(ws.root), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_project_add_and_edit_set_the_changes_settings(ws: Workspace) -> None:
    added = devclaw(ws, "project", "add", GROUP, "--name", "webapp", "--changes-required", "--no-must-be-merged")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["project"]["changes"] == {"required": True, "mustBeMerged": False}
    edited = devclaw(ws, "project", "edit", GROUP, "--must-be-merged")
    assert edited.returncode == 0, edited.stderr
    assert json.loads(edited.stdout)["project"]["changes"] == {"required": True, "mustBeMerged": True}
    edited = devclaw(ws, "project", "edit", GROUP, "--no-changes-required")
    assert json.loads(edited.stdout)["project"]["changes"] == {"required": False, "mustBeMerged": True}


def test_link_mr_links_and_updates_a_change(ws: Workspace) -> None:
    assert devclaw(ws, "project", "add", GROUP, "--name", "webapp", "--base-branch", "develop").returncode == 0
    issue = json.loads(devclaw(ws, "issue", "create", GROUP, "--title", "Task", "--label", "To Do").stdout)["id"]
    url = "https://git.example/webapp/-/merge_requests/5"
    linked = devclaw(
        ws, "issue", "link-mr", GROUP, str(issue), url, "--source-branch", "fix-1", "--draft", "--author", "ann"
    )
    assert linked.returncode == 0, linked.stderr
    change = json.loads(linked.stdout)["change"]
    assert (change["url"], change["state"], change["draft"], change["author"]) == (url, "open", True, "ann")
    assert (change["sourceBranch"], change["targetBranch"]) == ("fix-1", "develop")  # the project's base branch
    again = json.loads(devclaw(ws, "issue", "link-mr", GROUP, str(issue), url, "--state", "merged").stdout)["change"]
    assert (again["number"], again["state"], again["draft"]) == (change["number"], "merged", False)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["1", "not-a-url"], "URL 'not-a-url' is not an http(s) URL"),
        (["1", "https://user:pw@git.example/mr/1"], "is not an http(s) URL without credentials"),
        (["1", "https://git.example/mr/1", "--source-branch", "has space"], "--source-branch 'has space'"),
        (["1", "https://git.example/mr/1", "--target-branch", "a..b"], "--target-branch 'a..b'"),
        (["1", "https://git.example/mr/1", "--state", "approved"], "invalid choice: 'approved'"),
        (["99", "https://git.example/mr/1"], "issue #99 not found"),
        (["x", "https://git.example/mr/1"], "invalid int value"),
    ],
)
def test_link_mr_refuses_bad_input_and_changes_nothing(ws: Workspace, args: list[str], error: str) -> None:
    assert devclaw(ws, "project", "add", GROUP, "--name", "webapp").returncode == 0
    assert devclaw(ws, "issue", "create", GROUP, "--title", "Task").returncode == 0
    db = ws.memory / "tracker.sqlite3"
    before = (snapshot(ws), _changes_rows(db))
    done = devclaw(ws, "issue", "link-mr", GROUP, *args)
    assert done.returncode != 0 and error in done.stdout + done.stderr, done.stdout + done.stderr
    assert (snapshot(ws), _changes_rows(db)) == before


def test_link_mr_is_refused_on_a_hosted_tracker(ws: Workspace, tmp_path: Path) -> None:
    state = {"version": 2, "projects": {GROUP: {"name": "webapp", "tracker": {
        "provider": "gitlab", "path": "acme/webapp", "baseUrl": GITLAB_URL, "tokenEnv": "NO_TOKEN_NEEDED"}}}}  # fmt: skip
    ws.store.path.write_text(json.dumps(state))
    done = subprocess.run(
        [PYTHON, "-m", "devclaw", "--workspace", str(ws.root), "issue", "link-mr", GROUP, "1", "https://x.example/1"],
        capture_output=True, text=True, timeout=60, check=False, env={"PATH": "/usr/bin:/bin", "NO_TOKEN_NEEDED": "t",
                                                                         "HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert done.returncode != 0 and "link-mr is for the embedded tracker" in done.stdout, done.stdout + done.stderr
    assert 'say \\"Closes #1\\"' in done.stdout


def _changes_rows(db: Path) -> list[tuple[Any, ...]]:
    import sqlite3

    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            return conn.execute("SELECT * FROM changes ORDER BY 1, 2, 3").fetchall()
        except sqlite3.OperationalError:
            return []


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_a_dry_run_of_dev_done_is_refused_the_same_way(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch) as h:
        issue: int = h.issue  # type: ignore[attr-defined]
        with pytest.raises(WorkflowError, match=f"issue #{issue}"):
            call(ws, "task_complete", projectGroupId=GROUP, role="dev", result="done", dryRun=True)
        h.add_change(issue, state="merged")
        answer = call(ws, "task_complete", projectGroupId=GROUP, role="dev", result="done", dryRun=True)
        assert answer["dryRun"] is True and answer["changeState"] == "merged"
        assert h.labels_of(issue) == ["Doing"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_retried_done_and_a_repeated_qa_pickup_name_the_same_change(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch, required=True) as h:
        issue: int = h.issue  # type: ignore[attr-defined]
        url = h.add_change(issue, state="merged", source_branch="login")
        first = call(ws, "task_complete", projectGroupId=GROUP, role="dev", result="done")
        again = call(ws, "task_complete", projectGroupId=GROUP, role="dev", result="done")  # its reply was lost
        assert again["repeated"] is True and again["changeUrl"] == first["changeUrl"] == url
        qa = call(ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="qa")
        repeat = call(ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="qa")
        assert repeat["repeated"] is True and repeat["taskMessage"] == qa["taskMessage"]
        assert f"{url} (merged), branch login into main" in qa["taskMessage"]


@pytest.mark.parametrize("kind", KINDS)
def test_qa_pass_is_refused_while_the_change_is_unmerged_so_nothing_reaches_done_unmerged(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch, required=True) as h:
        issue: int = h.issue  # type: ignore[attr-defined]
        url = h.add_change(issue, state="merged")
        call(ws, "task_complete", projectGroupId=GROUP, role="dev", result="done")
        call(ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="qa")
        if h.fake is not None:  # reverted on the host after DEV done: open again
            h.fake.project.changes[int(url.rsplit("/", 1)[1])].state = "open"
        else:
            h.add_change(issue, state="open")  # the embedded tracker: the same URL linked again as open
            subprocess.run([PYTHON, "-m", "devclaw", "--workspace", str(ws.root), "issue", "link-mr", GROUP,
                            str(issue), url, "--state", "open"], check=True, capture_output=True)  # fmt: skip
        before = snapshot(ws)
        with pytest.raises(WorkflowError) as caught:
            call(ws, "task_complete", projectGroupId=GROUP, role="qa", result="pass")
        assert caught.value.type == "change_required"
        assert f'QA "pass" refused for issue #{issue} on webapp' in caught.value.message
        assert "the issue stays on Testing" in caught.value.message
        assert snapshot(ws)[0] == before[0] and h.labels_of(issue) == ["Testing"]
        call(
            ws, "task_complete", projectGroupId=GROUP, role="qa", result="fail", summary="not merged"
        )  # fail is not gated
        assert h.labels_of(issue) == ["To Improve"]
