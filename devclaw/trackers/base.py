"""The tracker interface: our own types, one Protocol every provider implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from devclaw.workflow import IssueState, State, Workflow


@dataclass(frozen=True)
class Issue:
    id: int
    title: str
    description: str
    state: IssueState
    labels: tuple[str, ...]
    url: str
    #: The issue's workflow state, as the tracker's workflow reads its labels (None: no workflow label).
    label: State | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "state": self.state,
            "labels": list(self.labels),
            "url": self.url,
        }


ChangeState = Literal["open", "merged", "closed"]
CHANGE_STATES: tuple[ChangeState, ...] = ("open", "merged", "closed")


@dataclass(frozen=True)
class ChangeReview:
    """What the reviewers of an open change asked for: who wants changes, and what they wrote."""

    changes_requested_by: tuple[str, ...] = ()
    comments: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChangeRequest:
    """A merge request (GitLab, the embedded tracker) or pull request (GitHub) that closes or names an issue."""

    number: int
    url: str
    state: ChangeState
    draft: bool = False
    author: str = ""
    #: Who approved it (GitLab approvals, GitHub reviewers whose latest word is APPROVED); read for open ones.
    approved_by: tuple[str, ...] = ()
    #: What its reviewers asked for, where the host answers that with the change (GitHub: the same reviews
    #: that say who approved); None: ``Tracker.review_of`` asks.
    review: ChangeReview | None = None
    #: Whether the host says it merges cleanly; None while it has not computed that (or cannot say).
    mergeable: bool | None = None
    source_branch: str = ""
    target_branch: str = ""
    #: Where its changes can be read (GitLab ``…/diffs``, GitHub ``…/files``).
    diff_url: str = ""

    @property
    def approvals(self) -> int:
        return len(self.approved_by)

    def approved_by_another(self) -> bool:
        """Approved by someone other than its author: what devclaw needs before it merges a change."""
        return any(name != self.author for name in self.approved_by)

    def as_json(self) -> dict[str, object]:
        return {
            "number": self.number,
            "url": self.url,
            "state": self.state,
            "draft": self.draft,
            "author": self.author,
            "approvals": self.approvals,
            "approvedBy": list(self.approved_by),
            "mergeable": self.mergeable,
            "sourceBranch": self.source_branch,
            "targetBranch": self.target_branch,
            "diffUrl": self.diff_url,
        }


class Tracker(Protocol):
    """An issue tracker for one project. Every method is one small, bounded number of requests.

    Implementations raise ``NotFoundError`` for a missing issue or project, ``TrackerAuthError`` for a
    refused token and ``TrackerError`` for anything else that failed; they never return partial data.
    """

    #: Where the project lives, as users name it ("group/project", "owner/name", or a local path).
    path: str
    #: Whether a write can take effect while its reply is lost (a network tracker). ``engine.apply``
    #: records an intent before such a write; a local transaction either commits or raises.
    replies_can_be_lost: bool
    #: What the host calls a change: "merge request" (GitLab, the embedded tracker) or "pull request".
    change_noun: str
    #: The project's workflow: which labels mean which state (``Issue.label``), and their colours.
    workflow: Workflow

    def get_issue(self, issue_id: int) -> Issue:
        """One issue, open or closed."""
        ...

    def list_issues(self, label: State | None = None, *, closed_too: bool = False) -> list[Issue]:
        """Every open issue (all pages), in state ``label`` when given, oldest first; ``closed_too``: the
        closed ones as well (a host closes an issue when the change that closes it merges)."""
        ...

    def move_issue(self, issue: Issue, target: State, state: IssueState | None = None) -> Issue:
        """Swap ``issue``'s workflow label for ``target``'s (and open/close it) in ONE write.

        ``issue`` is the issue as just read; labels that are not workflow labels are kept.
        """
        ...

    def create_issue(self, title: str, description: str, labels: tuple[str, ...]) -> Issue:
        """A new open issue. Never retried once the request may have reached the server."""
        ...

    def add_comment(self, issue_id: int, body: str) -> None:
        """A comment on an issue. Never retried once the request may have reached the server."""
        ...

    def ensure_labels(self) -> list[str]:
        """Create the workflow's labels that are missing, with their colours; return the created names."""
        ...

    def changes_for(self, issue_id: int) -> tuple[ChangeRequest, ...]:
        """The merge/pull requests that close or reference the issue, oldest first (each once)."""
        ...

    def review_of(self, change: ChangeRequest) -> ChangeReview:
        """Whether the reviewers of the open ``change`` requested changes, and their words."""
        ...

    def merge_change(self, change: ChangeRequest) -> ChangeRequest:
        """Merge the open ``change`` into its target branch (one write); the change as the host now has it.
        Raises ``TrackerError`` when the host refuses (a conflict, a draft, missing approvals, no right)."""
        ...

    def new_change_url(self, target_branch: str) -> str:
        """Where a person opens a new merge/pull request into ``target_branch``; "" when the tracker has
        no such page (the embedded tracker: changes are linked with ``devclaw issue link-mr``). Makes no
        request."""
        ...
