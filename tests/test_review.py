"""The review stage with policy "agent": DEV done goes to To Review, a reviewer worker is picked up like dev
and QA, and its verdict moves the issue on (approve -> To Test) or back (reject -> To Improve, with the
reviewer's words in the fix instructions). On the three trackers: the real python-gitlab and PyGithub
clients against the stateful fakes, and the embedded tracker."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from devclaw.errors import WorkflowError
from devclaw.loop import call_loop
from devclaw.review import watch_reviews
from devclaw.workflow import Label
from devclaw.workspace import Workspace
from tests.conftest import GROUP, call
from tests.fakes import KINDS, REMOTE_KINDS, FakeChange, Harness, TrackerKind
from tests.test_changes import DEV_SESSION, devclaw, workspace

REVIEWER_SESSION = "agent:main:subagent:reviewer-1"


def spent(h: object, before: int) -> int:
    return len(h.wire_requests()) - before  # type: ignore[attr-defined]


def tick(ws: Workspace) -> dict[str, Any]:
    return call_loop(ws, "tick", {"activeSessions": [DEV_SESSION]})


def in_review(h: Harness, ws: Workspace, **change: Any) -> tuple[int, str]:
    """DEV done with an open change: the issue waits in To Review. Its number and the change's URL."""
    issue: int = h.issue  # type: ignore[attr-defined]
    url = h.add_change(issue, state="open", target_branch="develop", **change)
    call(ws, "task_complete", projectGroupId=GROUP, role="dev", result="done")
    assert h.labels_of(issue) == ["To Review"]
    return issue, url


def reviewing(h: Harness, ws: Workspace, **change: Any) -> tuple[int, str]:
    """As ``in_review``, then a reviewer worker picked it up: the issue is on Reviewing."""
    issue, url = in_review(h, ws, **change)
    call(ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="reviewer")
    return issue, url


def change_of(h: Harness, url: str) -> FakeChange:
    assert h.fake is not None
    return h.fake.project.changes[int(url.rsplit("/", 1)[1])]


def merge_on_host(h: Harness, url: str) -> None:
    """A person merges the change on the host, which closes the issues it closes, as GitLab and GitHub do."""
    change = change_of(h, url)
    change.state = "merged"
    assert h.fake is not None
    for number in change.closes:
        h.fake.project.issues[number].state = "closed"


@pytest.mark.parametrize("kind", KINDS)
def test_a_reviewer_approves_and_the_issue_goes_on_to_qa(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch, review="agent", required=True) as h:
        issue: int = h.issue  # type: ignore[attr-defined]
        url = h.add_change(issue, state="open", source_branch="login", target_branch="develop")
        # With a review stage the change need not be merged yet: the review comes first.
        done = call(ws, "task_complete", projectGroupId=GROUP, role="dev", result="done", summary="login page")
        assert (done["changeUrl"], done["changeState"]) == (url, "open")
        assert done["labelTransition"] == "Doing → To Review"
        assert done["announcement"] == f"✅ DEV done #{issue} — login page. Moved to the review queue."
        assert h.labels_of(issue) == ["To Review"]

        queues = call(ws, "queue_status", projectGroupId=GROUP)["projects"][0]
        assert [item["id"] for item in queues["queue"]["toReview"]] == [issue]
        assert set(queues["workers"]) == {"dev", "qa", "reviewer"}
        assert (
            call(ws, "queue_status", projectGroupId=GROUP, next=True)["projects"][0]["next"]["reviewer"]["id"] == issue
        )

        before = len(h.wire_requests())
        pickup = call(ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="reviewer")
        # get the issue, find its change (GitLab: closed_by, related MRs, the open MR's approvals; GitHub: the
        # timeline, the pull request, its reviews), move the label.
        assert spent(h, before) == {"local": 0, "gitlab": 5, "github": 5}[kind]
        assert pickup["labelTransition"] == "To Review → Reviewing"
        assert pickup["announcement"].startswith("👀 Spawning REVIEWER (") and f"#{issue}" in pickup["announcement"]
        assert "do not change it" in pickup["taskMessage"] and "APPROVE:" in pickup["taskMessage"]
        assert f"{url} (open), branch login into develop" in pickup["taskMessage"]
        assert "devclaw-webapp-reviewer" in pickup["instructions"]  # the reviewer's own session label
        call(ws, "task_pickup_confirm", projectGroupId=GROUP, role="reviewer", sessionId=REVIEWER_SESSION)

        approved = call(ws, "task_complete", projectGroupId=GROUP, role="reviewer", result="approve",
                        summary="clean and tested")  # fmt: skip
        assert approved["labelTransition"] == "Reviewing → To Test"
        assert approved["announcement"] == f"👍 REVIEW APPROVED #{issue} — clean and tested. Moved to QA queue."
        assert h.labels_of(issue) == ["To Test"] and h.state_of(issue) == "open"
        reviewer = ws.store.read().project(GROUP).worker("reviewer")
        assert not reviewer.active and reviewer.session_id == REVIEWER_SESSION
        lines = [
            (r["role"], r.get("result")) for r in ws.audit.records() if r["event"] in ("task_pickup", "task_complete")
        ]
        assert lines[-3:] == [("dev", "done"), ("reviewer", None), ("reviewer", "approve")]
        call(ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="qa")
        assert h.labels_of(issue) == ["Testing"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_reviewers_rejection_sends_the_work_back_with_their_words(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch, review="agent", required=True) as h:
        issue, _ = reviewing(h, ws)
        rejected = call(ws, "task_complete", projectGroupId=GROUP, role="reviewer", result="reject",
                        summary="the form posts the password in the URL")  # fmt: skip
        assert rejected["labelTransition"] == "Reviewing → To Improve"
        assert h.labels_of(issue) == ["To Improve"]
        fix = rejected["devFixInstructions"]
        assert "add this REVIEWER feedback" in fix and "The reviewer's words" in fix
        assert "the form posts the password in the URL" in fix
        assert ws.store.read().project(GROUP).qa_fail_count(issue) == 0  # a rejection is not a QA fail


def test_a_reviewer_cannot_use_qas_results_nor_work_without_a_review_stage(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace("local", ws, monkeypatch) as h:  # review policy skip
        issue: int = h.issue  # type: ignore[attr-defined]
        call(ws, "task_complete", projectGroupId=GROUP, role="dev", result="done")
        assert h.labels_of(issue) == ["To Test"]  # no review stage: straight on to QA
        with pytest.raises(WorkflowError, match='no "reviewer" role'):
            call(ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="reviewer")
    assert "reviewer" not in ws.store.read().project(GROUP).workers


def test_health_sends_reviewing_work_without_its_reviewer_back_to_to_review(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace("local", ws, monkeypatch, review="agent") as h:
        issue, _ = reviewing(h, ws)
        orphan = h.seed("Left on Reviewing by hand", ["Reviewing"])
        first = call(ws, "session_health", autoFix=True, activeSessions=[])
        fixed = {(f["type"], f.get("issueId")) for f in first["issues"]}
        # The reviewer never confirmed a session: in grace, left alone. The issue nobody holds goes back.
        assert ("orphaned_label", orphan) in fixed
        assert h.labels_of(orphan) == [Label.TO_REVIEW.value] and h.labels_of(issue) == ["Reviewing"]
        assert call(ws, "session_health", autoFix=True, activeSessions=[])["issues"] == []


def test_project_add_with_a_review_stage_creates_its_labels(ws: Workspace) -> None:
    added = devclaw(ws, "project", "add", GROUP, "--name", "webapp", "--review", "agent")
    assert added.returncode == 0, added.stderr
    result = json.loads(added.stdout)
    assert result["labelsCreated"][-3:] == ["To Review", "Reviewing", "Rejected"]
    assert result["project"]["review"] == {"policy": "agent", "merge": False}
    refused = devclaw(ws, "project", "edit", GROUP, "--review", "sometimes")
    assert refused.returncode != 0 and "invalid choice: 'sometimes'" in refused.stderr


# --- policy "human": the tick watches the change ------------------------------------------------------


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_an_approved_change_is_merged_by_devclaw_and_the_issue_goes_to_qa(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch, review="human", review_merge=True, required=True) as h:
        approval = {"approved_by": ["alice"]} if kind == "gitlab" else {"reviews": [("alice", "APPROVED")]}
        issue, url = in_review(h, ws, author="bob", **approval)
        result = tick(ws)
        (check,) = result["reviews"]
        assert (check["issueId"], check["event"], check["mergedByDevclaw"]) == (issue, "change_approved", True)
        assert check["labelTransition"] == "To Review → To Test" and check["changeUrl"] == url
        assert change_of(h, url).state == "merged"
        (line,) = [r for r in ws.audit.records() if r["event"] == "review_check"]
        assert (line["reviewEvent"], line["mergedByDevclaw"], line["changeUrl"]) == ("change_approved", True, url)
        assert [r for r in h.wire_requests() if r.method == "PUT" and r.path.endswith("/merge")] != []
        # The same tick hands it to the free QA worker. The host closed the issue when its change merged:
        # the move to To Test reopened it, so QA could take it.
        (dispatch,) = result["dispatches"]
        assert (dispatch["role"], dispatch["issueId"]) == ("qa", issue)
        assert h.labels_of(issue) == ["Testing"] and h.state_of(issue) == "open"


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_a_change_approved_only_by_its_author_is_not_merged(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch, review="human", review_merge=True, required=True) as h:
        approval = {"approved_by": ["bob"]} if kind == "gitlab" else {"reviews": [("bob", "APPROVED")]}
        issue, url = in_review(h, ws, author="bob", **approval)
        (check,) = tick(ws)["reviews"]
        assert check["event"] is None and "approved only by its author (bob)" in check["reason"]
        assert change_of(h, url).state == "open" and h.labels_of(issue) == ["To Review"]
        assert not [r for r in h.wire_requests() if r.method == "PUT" and r.path.endswith("/merge")]


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_without_merge_an_approved_change_waits_for_a_person_to_merge_it(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch, review="human", required=True) as h:
        approval = {"approved_by": ["alice"]} if kind == "gitlab" else {"reviews": [("alice", "APPROVED")]}
        issue, url = in_review(h, ws, **approval)
        (check,) = tick(ws)["reviews"]
        assert check["event"] is None and "waiting for a person to merge it" in check["reason"]
        merge_on_host(h, url)  # which closes the issue: To Review is listed with its closed issues
        (check,) = watch_reviews(ws, ws.store.read())
        assert (check.event, check.merged_by_devclaw) == ("change_approved", False)
        assert h.labels_of(issue) == ["To Test"] and h.state_of(issue) == "open"  # reopened for QA


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_changes_requested_send_the_work_back_with_the_reviewers_words(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch, review="human", required=True) as h:
        wants = (
            {"requested_changes_by": ["carol"]} if kind == "gitlab" else {"reviews": [("carol", "CHANGES_REQUESTED")]}
        )
        issue, _ = in_review(h, ws, said={"carol": "Validate the e-mail field."}, **wants)
        (check,) = watch_reviews(ws, ws.store.read())
        assert (check.event, check.label_transition) == ("changes_requested", "To Review → To Improve")
        assert check.feedback == "Validate the e-mail field." and check.comment == "added"
        assert h.labels_of(issue) == ["To Improve"]
        (comment,) = h.comments_of(issue)
        assert "carol requested changes" in comment and "Validate the e-mail field." in comment


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_a_conflict_sends_the_work_back_and_a_closed_change_rejects_the_issue(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch, review="human", required=True) as h:
        issue, url = in_review(h, ws, has_conflicts=True)
        (check,) = watch_reviews(ws, ws.store.read())
        assert check.event == "change_conflict" and h.labels_of(issue) == ["To Improve"]
        assert "does not merge cleanly into develop" in h.comments_of(issue)[0]

        call(ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="dev")
        call(ws, "task_complete", projectGroupId=GROUP, role="dev", result="done")
        change_of(h, url).has_conflicts = False
        change_of(h, url).state = "closed"
        (check,) = watch_reviews(ws, ws.store.read())
        assert (check.event, check.label_transition) == ("change_closed", "To Review → Rejected")
        assert h.labels_of(issue) == ["Rejected"] and h.state_of(issue) == "closed"
        assert watch_reviews(ws, ws.store.read()) == []  # a rejected issue is not looked at again


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_the_request_budget_of_a_review_check(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch, review="human", review_merge=True, required=True) as h:
        approval = {"approved_by": ["alice"]} if kind == "gitlab" else {"reviews": [("alice", "APPROVED")]}
        issue, _ = in_review(h, ws, author="bob", **approval)
        h.forget_requests()
        (check,) = watch_reviews(ws, ws.store.read())
        assert check.merged_by_devclaw and check.event == "change_approved"
        # the To Review listing 1; the change (GitLab: closed_by, related MRs, approvals; GitHub: timeline,
        # the pull request, its reviews) 3; its reviewers (GitLab 1; GitHub: none, its reviews came with the
        # change); the merge 1; the move's read and write 2.
        assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in h.wire_requests()][-3:] == [
            ("PUT", "merge"), ("GET", str(issue)), ("PUT" if kind == "gitlab" else "PATCH", str(issue))
        ]  # fmt: skip
        assert len(h.wire_requests()) == {"gitlab": 8, "github": 7}[kind]
        assert len([r for r in h.wire_requests() if r.path.endswith("/reviews")]) == (kind == "github")


# --- health knows changes ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", REMOTE_KINDS)
@pytest.mark.parametrize("outcome", ["merged", "closed"])
def test_health_moves_on_a_review_whose_change_a_person_merged_or_closed(
    kind: TrackerKind, outcome: str, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch, review="agent", required=True) as h:
        issue, url = reviewing(h, ws)
        call(ws, "task_pickup_confirm", projectGroupId=GROUP, role="reviewer", sessionId=REVIEWER_SESSION)
        if outcome == "merged":
            merge_on_host(h, url)  # the merge closes the issue: it drops out of the open Reviewing listing
        else:
            change_of(h, url).state = "closed"
        sessions = [DEV_SESSION, REVIEWER_SESSION]
        first = call(ws, "session_health", autoFix=True, activeSessions=sessions)
        (found,) = first["issues"]
        expected = "change_merged_in_review" if outcome == "merged" else "change_closed"
        assert (found["type"], found["role"], found["fixed"]) == (expected, "reviewer", True)
        assert url in found["message"]
        assert h.labels_of(issue) == (["To Test"] if outcome == "merged" else ["Rejected"])
        assert h.state_of(issue) == ("open" if outcome == "merged" else "closed")
        assert not ws.store.read().project(GROUP).worker("reviewer").active
        assert call(ws, "session_health", autoFix=True, activeSessions=sessions)["issues"] == []


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_health_rejects_an_issue_waiting_for_review_whose_change_was_closed(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch, review="agent", required=True) as h:
        issue, url = in_review(h, ws)
        change_of(h, url).state = "closed"
        first = call(ws, "session_health", autoFix=True, activeSessions=[DEV_SESSION])
        assert [(f["type"], f["issueId"], f["fixed"]) for f in first["issues"]] == [("change_closed", issue, True)]
        assert h.labels_of(issue) == ["Rejected"] and h.state_of(issue) == "closed"
        (fix,) = [r for r in ws.audit.records() if r["event"] == "health_fix"]
        assert (fix["type"], fix["changeUrl"], fix["labelTransition"]) == ("change_closed", url, "To Review → Rejected")
        assert call(ws, "session_health", autoFix=True, activeSessions=[DEV_SESSION])["issues"] == []


def test_on_the_embedded_tracker_a_linked_changes_state_moves_the_review(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace("local", ws, monkeypatch, review="human", required=True) as h:
        issue, url = in_review(h, ws)
        (check,) = watch_reviews(ws, ws.store.read())
        assert check.event is None and "once merged, record it with devclaw issue link-mr" in check.reason
        done = devclaw(ws, "issue", "link-mr", GROUP, str(issue), url, "--state", "merged")
        assert done.returncode == 0, done.stderr
        (check,) = watch_reviews(ws, ws.store.read())
        assert (check.event, check.merged_by_devclaw, check.label_transition) == (
            "change_approved",
            False,
            "To Review → To Test",
        )
        assert h.labels_of(issue) == ["To Test"]


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_an_issue_a_person_closed_with_its_change_unmerged_is_left_alone(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch, review="human", review_merge=True, required=True) as h:
        approval = {"approved_by": ["alice"]} if kind == "gitlab" else {"reviews": [("alice", "APPROVED")]}
        issue, url = in_review(h, ws, author="bob", **approval)
        assert h.fake is not None
        h.fake.project.issues[issue].state = "closed"  # "won't do", said by closing the issue
        (check,) = watch_reviews(ws, ws.store.read())
        assert check.event is None and "left as a person set it" in check.reason
        assert change_of(h, url).state == "open" and h.labels_of(issue) == ["To Review"]
        assert h.state_of(issue) == "closed"


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_health_moves_on_a_queued_review_whose_change_a_person_merged(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch, review="agent", required=True) as h:
        issue, url = in_review(h, ws)
        merge_on_host(h, url)
        first = call(ws, "session_health", autoFix=True, activeSessions=[DEV_SESSION])
        assert [(f["type"], f["issueId"], f["fixed"]) for f in first["issues"]] == [
            ("change_merged_in_review", issue, True)
        ]
        assert h.labels_of(issue) == ["To Test"] and h.state_of(issue) == "open"
        assert call(ws, "session_health", autoFix=True, activeSessions=[DEV_SESSION])["issues"] == []


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_a_reviewer_agents_approve_has_devclaw_merge_the_change_with_review_merge(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch, review="agent", review_merge=True, required=True) as h:
        issue, url = reviewing(h, ws)
        approved = call(ws, "task_complete", projectGroupId=GROUP, role="reviewer", result="approve")
        assert (approved["changeMerged"], approved["changeUrl"], approved["changeState"]) == (True, url, "merged")
        assert change_of(h, url).state == "merged"
        assert h.labels_of(issue) == ["To Test"] and h.state_of(issue) == "open"  # the merge closed it; reopened
        (line,) = [r for r in ws.audit.records() if r["event"] == "task_complete" and r["role"] == "reviewer"]
        assert line["changeMerged"] is True
        call(ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="qa")
        assert call(ws, "task_complete", projectGroupId=GROUP, role="qa", result="pass")["issueClosed"] is True


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_without_review_merge_qa_cannot_pass_an_approved_change_until_a_person_merges_it(
    kind: TrackerKind, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace(kind, ws, monkeypatch, review="agent", required=True) as h:
        issue, url = reviewing(h, ws)
        approved = call(ws, "task_complete", projectGroupId=GROUP, role="reviewer", result="approve")
        assert "changeMerged" not in approved and change_of(h, url).state == "open"
        call(ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="qa")
        with pytest.raises(WorkflowError, match=f'QA "pass" refused for issue #{issue}'):
            call(ws, "task_complete", projectGroupId=GROUP, role="qa", result="pass")
        merge_on_host(h, url)
        assert call(ws, "task_complete", projectGroupId=GROUP, role="qa", result="pass")["labelTransition"] == (
            "Testing → Done"
        )


def test_review_merge_needs_a_review_stage_and_a_host_that_can_merge(ws: Workspace) -> None:
    refused = devclaw(ws, "project", "add", GROUP, "--name", "webapp", "--review-merge")
    assert "review.merge: there is no review stage to merge after" in refused.stdout
    refused = devclaw(ws, "project", "add", GROUP, "--name", "webapp", "--review", "human", "--review-merge")
    assert "review.merge: the embedded tracker cannot merge" in refused.stdout
    assert not (ws.memory / "projects.json").exists() or GROUP not in (ws.memory / "projects.json").read_text()


def test_dev_work_sent_back_by_a_review_returns_to_to_improve_when_its_worker_dies(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workspace("local", ws, monkeypatch, review="agent") as h:
        issue, _ = reviewing(h, ws)
        call(ws, "task_complete", projectGroupId=GROUP, role="reviewer", result="reject", summary="no tests")
        call(ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="dev")
        assert ws.store.read().project(GROUP).worker("dev").picked_from == "To Improve"
        call(ws, "task_pickup_confirm", projectGroupId=GROUP, role="dev", sessionId=DEV_SESSION)
        later = replace(ws, clock=lambda: ws.clock() + timedelta(minutes=10))  # past the grace period
        found = call(later, "session_health", autoFix=True, activeSessions=[])["issues"]
        assert [(f["type"], f["labelReverted"]) for f in found] == [("zombie_session", True)]
        # Not To Do: it failed no QA, but a review sent it back, and it keeps its place before new work.
        assert h.labels_of(issue) == ["To Improve"]
