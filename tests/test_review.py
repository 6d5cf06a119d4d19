"""The review stage with policy "agent": DEV done goes to To Review, a reviewer worker is picked up like dev
and QA, and its verdict moves the issue on (approve -> To Test) or back (reject -> To Improve, with the
reviewer's words in the fix instructions). On the three trackers: the real python-gitlab and PyGithub
clients against the stateful fakes, and the embedded tracker."""

from __future__ import annotations

import json

import pytest

from devclaw.errors import WorkflowError
from devclaw.workflow import Label
from devclaw.workspace import Workspace
from tests.conftest import GROUP, call
from tests.fakes import KINDS, TrackerKind
from tests.test_changes import devclaw, workspace

REVIEWER_SESSION = "agent:main:subagent:reviewer-1"


def spent(h: object, before: int) -> int:
    return len(h.wire_requests()) - before  # type: ignore[attr-defined]


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
        issue: int = h.issue  # type: ignore[attr-defined]
        h.add_change(issue, state="open")
        call(ws, "task_complete", projectGroupId=GROUP, role="dev", result="done")
        call(ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="reviewer")
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
        issue: int = h.issue  # type: ignore[attr-defined]
        call(ws, "task_complete", projectGroupId=GROUP, role="dev", result="done")
        call(ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="reviewer")
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
