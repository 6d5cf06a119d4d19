"""GitHub issues through PyGithub (https://docs.github.com/en/rest/issues).

Cost of each method, in requests: ``get_issue`` 1 GET; ``move_issue`` 1 PATCH carrying the whole label
set and the state (GitHub has no add/remove in one request: the set is the issue's labels as just read,
workflow labels swapped, everything else kept); ``list_issues`` 1 GET per 100 issues and pull requests;
``create_issue`` and ``add_comment`` 1 POST; ``ensure_labels`` 1 GET + 1 POST per missing label;
``changes_for`` 1 GET (the issue's timeline, per 100 events) + 1 GET per pull request found + 1 GET per
open one (its reviews); ``new_change_url`` none. The client is lazy: resolving the repository costs nothing.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import github
import requests
from github.GithubObject import GithubObject
from github.Issue import Issue as GithubIssue

from devclaw.errors import DevclawError, TrackerError
from devclaw.trackers import DEFAULT_TOKEN_ENV as TOKEN_ENVS
from devclaw.trackers.base import ChangeRequest, ChangeReview, ChangeState, Issue
from devclaw.trackers.remote import (
    HttpPolicy,
    RemoteTracker,
    derive_path,
    short_detail,
)
from devclaw.workflow import IssueState, State, Workflow

if TYPE_CHECKING:
    pass

# GitHub records why an issue was closed or reopened; a state change by devclaw is always one of these.
_STATE_REASON: dict[IssueState, str] = {"open": "reopened", "closed": "completed"}


class GitHubTracker(RemoteTracker):
    """The issues of one GitHub repository (``owner/name``)."""

    PROVIDER = "GitHub"
    change_noun = "pull request"
    DEFAULT_URL = "https://api.github.com"
    DEFAULT_TOKEN_ENV = TOKEN_ENVS["github"]
    SCOPES = 'the repo scope (classic token) or "Issues: read and write" on the repository (fine-grained)'

    def _connect(self, policy: HttpPolicy) -> None:
        self._gh = github.Github(
            auth=github.Auth.Token(self._token.reveal()),
            base_url=self.base_url,
            timeout=max(1, math.ceil(policy.timeout)),  # PyGithub takes whole seconds only
            retry=policy.retry(),
            per_page=100,
            # PyGithub waits 0.25 s before every request and 1 s before every write by default, to stay
            # clear of GitHub's secondary limits (80 writes a minute). A devclaw call makes one read and
            # one write, and `project add` at most 8 label writes, so the waits would only slow a pickup
            # down; when GitHub does throttle, it says so (403/429 with Retry-After) and TransientRetry
            # waits as told.
            seconds_between_requests=None,
            seconds_between_writes=None,
            lazy=True,
        )
        self._repo = self._gh.get_repo(self.path)

    @classmethod
    def _path_from_repo(cls, repo: str, base_url: str) -> str:
        return derive_path(repo, provider=cls.PROVIDER, segments=2)

    def get_issue(self, issue_id: int) -> Issue:
        """``GET /repos/{owner}/{repo}/issues/{number}``"""
        with self._request(f"reading issue #{issue_id}", issue_id=issue_id):
            found = self._repo.get_issue(issue_id).complete()
        if _is_pull_request(found):
            raise self.endpoint.issue_not_found(issue_id)
        return _issue(found, self.workflow)

    def list_issues(self, label: State | None = None, *, closed_too: bool = False) -> list[Issue]:
        """``GET /repos/{owner}/{repo}/issues?state=open&labels=...`` (``state=all`` with ``closed_too``), every
        page, pull requests dropped."""
        labels = [self.workflow.label(label)] if label is not None else github.GithubObject.NotSet
        operation = f'listing open "{self.workflow.label(label)}" issues' if label else "listing open issues"
        with self._request(operation):
            state = "all" if closed_too else "open"
            pages = self._repo.get_issues(state=state, labels=labels, sort="created", direction="asc")
            return [_issue(found, self.workflow) for found in pages if not _is_pull_request(found)]

    def move_issue(self, issue: Issue, target: State, state: IssueState | None = None) -> Issue:
        """``PATCH /repos/{owner}/{repo}/issues/{number}`` with ``labels`` (and ``state``)."""
        change: dict[str, Any] = {"labels": list(self.workflow.relabel(issue.labels, target))}
        if state is not None:
            change.update(state=state, state_reason=_STATE_REASON[state])
        lazy_issue = self._repo.get_issue(issue.id)
        with self._request(f'moving issue #{issue.id} to "{self.workflow.label(target)}"', issue_id=issue.id):
            lazy_issue.edit(**change)
        return _issue(lazy_issue, self.workflow)

    def create_issue(self, title: str, description: str, labels: tuple[str, ...]) -> Issue:
        """``POST /repos/{owner}/{repo}/issues``"""
        with self._request("creating an issue", resent=False):
            created = self._repo.create_issue(title=title, body=description, labels=list(labels))
        return _issue(created, self.workflow)

    def add_comment(self, issue_id: int, body: str) -> None:
        """``POST /repos/{owner}/{repo}/issues/{number}/comments``"""
        lazy_issue = self._repo.get_issue(issue_id)
        with self._request(f"commenting on issue #{issue_id}", issue_id=issue_id, resent=False):
            lazy_issue.create_comment(body)

    def ensure_labels(self) -> list[str]:
        """``GET /repos/{owner}/{repo}/labels``, then ``POST`` each missing one."""
        with self._request("listing labels"):
            existing = {found.name for found in self._repo.get_labels()}
        created = []
        for spec in self.workflow.states.values():
            if spec.label not in existing and self._create_label(spec.label, spec.colour):
                created.append(spec.label)
        return created

    def changes_for(self, issue_id: int) -> tuple[ChangeRequest, ...]:
        """``GET /repos/{owner}/{repo}/issues/{number}/timeline``: its "cross-referenced" events whose source
        is a pull request of this repository; then ``GET /repos/{owner}/{repo}/pulls/{number}`` for each,
        and ``GET …/pulls/{number}/reviews`` for each open one
        (https://docs.github.com/en/rest/issues/timeline): 1 + (PRs) + (open PRs) requests."""
        lazy_issue = self._repo.get_issue(issue_id)
        numbers: list[int] = []
        with self._request(f"reading the timeline of issue #{issue_id}", issue_id=issue_id):
            for event in lazy_issue.get_timeline():
                number = self._referencing_pull(event.raw_data)
                if number is not None and number not in numbers:
                    numbers.append(number)
        return tuple(self._change(number) for number in sorted(numbers))

    def new_change_url(self, target_branch: str) -> str:
        """GitHub's compare page with ``target_branch`` as the base; the head branch (``YOUR-BRANCH`` in the
        URL) is the person's to fill in: GitHub's URL has no form without one. No request."""
        return f"{self._web_url()}/{self.path}/compare/{quote(target_branch)}...YOUR-BRANCH?expand=1"

    def _web_url(self) -> str:
        # https://api.github.com -> https://github.com; GitHub Enterprise serves its API under /api/v3.
        parts = urlsplit(self.base_url)
        if parts.hostname == "api.github.com":
            return "https://github.com"
        return f"{parts.scheme}://{parts.netloc}{parts.path.removesuffix('/api/v3')}".rstrip("/")

    def _referencing_pull(self, event: dict[str, Any]) -> int | None:
        """The number of the pull request of this repository a timeline event says references the issue."""
        if event.get("event") != "cross-referenced":
            return None
        source = (event.get("source") or {}).get("issue") or {}
        repository = str(source.get("repository_url") or "")
        if not source.get("pull_request") or not repository.lower().endswith(f"/repos/{self.path.lower()}"):
            return None
        return int(source["number"])

    def _change(self, number: int) -> ChangeRequest:
        with self._request(f"reading pull request #{number}"):
            pull = self._repo.get_pull(number).complete()
        state: ChangeState = "merged" if pull.merged else "open" if pull.state == "open" else "closed"
        return ChangeRequest(
            number=pull.number,
            url=pull.html_url,
            state=state,
            draft=bool(pull.draft),
            author=pull.user.login if pull.user else "",
            **(self._reviews(pull.number) if state == "open" else {}),
            mergeable=pull.mergeable if state == "open" else None,
            source_branch=pull.head.ref,
            target_branch=pull.base.ref,
            diff_url=f"{pull.html_url}/files",
        )

    def _reviews(self, number: int) -> dict[str, Any]:
        """``GET /repos/{owner}/{repo}/pulls/{number}/reviews``, once: who approved, and what was asked."""
        verdicts = self._verdicts(number)
        approved = tuple(login for login, (verdict, _) in verdicts.items() if verdict == "APPROVED")
        return {"approved_by": approved, "review": _asked(verdicts)}

    def _verdicts(self, number: int) -> dict[str, tuple[str, str]]:
        """Each reviewer's latest verdict on pull request ``number``, with what they wrote with it."""
        latest: dict[str, tuple[str, str]] = {}
        pull = self._repo.get_pull(number)
        with self._request(f"reading the reviews of pull request #{number}"):
            for review in pull.get_reviews():
                if review.user is not None and review.state in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED"):
                    latest[review.user.login] = (review.state, (review.body or "").strip())
        return latest

    def review_of(self, change: ChangeRequest) -> ChangeReview:
        """Reviewers whose latest verdict is CHANGES_REQUESTED, and what they wrote with it: read with the
        change by ``changes_for`` (no request), else ``GET /repos/{owner}/{repo}/pulls/{number}/reviews``.
        https://docs.github.com/en/rest/pulls/reviews#list-reviews-for-a-pull-request"""
        return change.review if change.review is not None else _asked(self._verdicts(change.number))

    def merge_change(self, change: ChangeRequest) -> ChangeRequest:
        """``PUT /repos/{owner}/{repo}/pulls/{number}/merge``; GitHub refuses with 405 when it cannot merge.
        https://docs.github.com/en/rest/pulls/pulls#merge-a-pull-request"""
        pull = self._repo.get_pull(change.number)
        with self._request(f"merging pull request #{change.number}", resent=False):
            pull.merge()
        return replace(change, state="merged", mergeable=None)

    def _create_label(self, label: str, colour: str) -> bool:
        """Create ``label``; False when someone else created it since we listed (422 already_exists)."""
        try:
            with self._request(f'creating label "{label}"', resent=False):
                self._repo.create_label(label, colour.lstrip("#"))
        except TrackerError as exc:
            if exc.status == 422 and "already_exists" in str(exc):
                return False
            raise
        return True

    @contextlib.contextmanager
    def _request(self, operation: str, *, issue_id: int | None = None, resent: bool = True) -> Iterator[None]:
        """Convert PyGithub's and requests' errors for ``operation``.

        A 404 means the issue ``issue_id`` when given, else the repository (GitHub's 404 does not say
        which). ``resent`` says whether a lost request is retried (False for a POST).
        """
        try:
            yield
        except github.GithubException as exc:
            raise self._http_error(exc, operation, issue_id) from exc
        except requests.RequestException as exc:
            raise self.endpoint.unreachable(operation, exc, resent=resent) from exc

    def _http_error(self, exc: github.GithubException, operation: str, issue_id: int | None) -> DevclawError:
        if exc.status == 404:
            return self.endpoint.project_not_found() if issue_id is None else self.endpoint.issue_not_found(issue_id)
        detail = self._token.scrub(short_detail(_detail(exc)))
        return self.endpoint.http_error(operation, exc.status, exc.headers or {}, detail)


def _asked(verdicts: dict[str, tuple[str, str]]) -> ChangeReview:
    wanting = {login: body for login, (verdict, body) in verdicts.items() if verdict == "CHANGES_REQUESTED"}
    return ChangeReview(tuple(wanting), tuple(body for body in wanting.values() if body))


def _issue(found: GithubIssue, workflow: Workflow) -> Issue:
    # Every attribute read here is in the JSON of a listing, so none triggers PyGithub's lazy completion.
    labels = tuple(label.name for label in found.labels)
    return Issue(
        id=found.number,
        title=found.title or "",
        description=found.body or "",
        state="closed" if found.state == "closed" else "open",
        labels=labels,
        url=found.html_url,
        label=workflow.state_of(labels),
    )


def _is_pull_request(found: GithubObject) -> bool:
    # The issues endpoint lists pull requests too, marked by a "pull_request" key. PyGithub's public
    # ``pull_request`` and ``raw_data`` would each re-fetch an item of a listing (PyGithub marks those
    # incomplete): one GET per issue. The JSON the listing returned is all we need.
    raw: dict[str, Any] = found._rawData
    return raw.get("pull_request") is not None


def _detail(exc: github.GithubException) -> str:
    data = exc.data if isinstance(exc.data, dict) else {}
    message = str(data.get("message") or exc.message or "")
    codes = [str(error.get("code")) for error in data.get("errors") or [] if isinstance(error, dict)]
    return f"{message} ({', '.join(codes)})" if codes else message
