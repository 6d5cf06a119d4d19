"""GitLab issues through python-gitlab (https://docs.gitlab.com/api/issues/).

Cost of each method, in requests: ``get_issue`` 1 GET; ``move_issue`` 1 PUT (``add_labels`` +
``remove_labels`` + ``state_event``: no read-modify-write of the label list, so labels set by people or
other tools in the meantime survive); ``list_issues`` 1 GET per 100 issues; ``create_issue`` and
``add_comment`` 1 POST; ``ensure_labels`` 1 GET + 1 POST per missing label; ``changes_for`` 2 GETs
(closed_by, related_merge_requests: 1 per 100 merge requests each) + 1 GET per open merge request (its
approvals); ``new_change_url`` none. The project object is lazy: resolving it costs nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import gitlab
import requests

from devclaw.errors import DevclawError, TrackerError
from devclaw.trackers import DEFAULT_TOKEN_ENV as TOKEN_ENVS
from devclaw.trackers.base import ChangeRequest, ChangeReview, ChangeState, Issue
from devclaw.trackers.remote import (
    HttpPolicy,
    RemoteTracker,
    derive_path,
    http_session,
    short_detail,
)
from devclaw.workflow import IssueState, State

if TYPE_CHECKING:
    pass

# python-gitlab retries a 429 by itself, sleeping for any Retry-After however long, and 5xx when asked.
# TransientRetry, mounted under its session, already retries with our bounds: one layer, not two.
_NO_LIBRARY_RETRIES: dict[str, Any] = {"obey_rate_limit": False, "retry_transient_errors": False}
_STATE_EVENT: dict[IssueState, str] = {"open": "reopen", "closed": "close"}
# GitLab's merge request states; "locked" is an open one while GitLab merges it.
_MR_STATE: dict[str, ChangeState] = {"opened": "open", "locked": "open", "merged": "merged", "closed": "closed"}


class GitLabTracker(RemoteTracker):
    """The issues of one GitLab project (``group/subgroup/project``)."""

    PROVIDER = "GitLab"
    change_noun = "merge request"
    DEFAULT_URL = "https://gitlab.com"
    DEFAULT_TOKEN_ENV = TOKEN_ENVS["gitlab"]
    SCOPES = "the api scope and at least the Reporter role on the project"

    def _connect(self, policy: HttpPolicy) -> None:
        # GitLab's errors carry no headers; the session keeps those of the last refused reply so a
        # rate-limit error can say when the limit resets.
        self._failed_reply: Mapping[str, str] = {}
        session = http_session(self.base_url, policy, on_failure=self._remember_failure)
        self._gl = gitlab.Gitlab(
            self.base_url,
            private_token=self._token.reveal(),
            timeout=policy.timeout,
            per_page=100,
            retry_transient_errors=False,
            session=session,
        )
        self._project = self._gl.projects.get(self.path, lazy=True)

    @classmethod
    def _path_from_repo(cls, repo: str, base_url: str) -> str:
        # A GitLab served under a sub-folder (https://host/gitlab) names projects after that folder.
        return derive_path(repo, provider=cls.PROVIDER, url_prefix=urlsplit(base_url).path)

    def get_issue(self, issue_id: int) -> Issue:
        """``GET /projects/:id/issues/:iid``"""
        with self._request(f"reading issue #{issue_id}", issue_id=issue_id):
            found = self._project.issues.get(issue_id, **_NO_LIBRARY_RETRIES)
        return self._issue(found.attributes)

    def list_issues(self, label: State | None = None, *, closed_too: bool = False) -> list[Issue]:
        """``GET /projects/:id/issues?state=opened&labels=...`` (``state=all`` with ``closed_too``), every page."""
        state = "all" if closed_too else "opened"
        query: dict[str, Any] = {"state": state, "order_by": "created_at", "sort": "asc", "per_page": 100}
        if label is not None:
            query["labels"] = [self.workflow.label(label)]
        operation = f'listing open "{self.workflow.label(label)}" issues' if label else "listing open issues"
        with self._request(operation):
            pages = self._project.issues.list(iterator=True, **query, **_NO_LIBRARY_RETRIES)
            return [self._issue(found.attributes) for found in pages]

    def move_issue(self, issue: Issue, target: State, state: IssueState | None = None) -> Issue:
        """``PUT /projects/:id/issues/:iid`` with ``add_labels``, ``remove_labels``, ``state_event``."""
        label = self.workflow.label(target)
        others = (spec.label for spec in self.workflow.states.values() if spec.label != label)
        change = {"add_labels": label, "remove_labels": ",".join(others)}
        if state is not None:
            change["state_event"] = _STATE_EVENT[state]
        with self._request(f'moving issue #{issue.id} to "{label}"', issue_id=issue.id):
            updated = self._project.issues.update(issue.id, change, **_NO_LIBRARY_RETRIES)
        return self._issue(updated)

    def create_issue(self, title: str, description: str, labels: tuple[str, ...]) -> Issue:
        """``POST /projects/:id/issues``"""
        data = {"title": title, "description": description, "labels": ",".join(labels)}
        with self._request("creating an issue", resent=False):
            created = self._project.issues.create(data, **_NO_LIBRARY_RETRIES)
        return self._issue(created.attributes)

    def add_comment(self, issue_id: int, body: str) -> None:
        """``POST /projects/:id/issues/:iid/notes``"""
        issue = self._project.issues.get(issue_id, lazy=True)
        with self._request(f"commenting on issue #{issue_id}", issue_id=issue_id, resent=False):
            issue.notes.create({"body": body}, **_NO_LIBRARY_RETRIES)

    def ensure_labels(self) -> list[str]:
        """``GET /projects/:id/labels`` (group labels included), then ``POST`` each missing one."""
        with self._request("listing labels"):
            existing = {found.name for found in self._project.labels.list(iterator=True, **_NO_LIBRARY_RETRIES)}
        created = []
        for spec in self.workflow.states.values():
            if spec.label not in existing and self._create_label(spec.label, spec.colour):
                created.append(spec.label)
        return created

    def changes_for(self, issue_id: int) -> tuple[ChangeRequest, ...]:
        """``GET /projects/:id/issues/:iid/closed_by`` and ``GET …/related_merge_requests``
        (https://docs.gitlab.com/api/issues/#list-merge-requests-that-close-a-particular-issue-on-merge),
        then ``GET /projects/:id/merge_requests/:iid/approvals`` for each open one: 2 + (open MRs) requests."""
        issue = self._project.issues.get(issue_id, lazy=True)
        found: dict[tuple[int, int], Mapping[str, Any]] = {}
        with self._request(f"listing the merge requests of issue #{issue_id}", issue_id=issue_id):
            for listing in (issue.closed_by, issue.related_merge_requests):
                for data in listing(get_all=True, **_NO_LIBRARY_RETRIES):
                    found.setdefault((int(data.get("project_id") or 0), int(data["iid"])), data)
        ordered = sorted(found.values(), key=lambda data: (str(data.get("created_at") or ""), int(data["iid"])))
        return tuple(self._change(data) for data in ordered)

    def new_change_url(self, target_branch: str) -> str:
        """GitLab's "New merge request" page with the target branch chosen; no request."""
        query = urlencode({"merge_request[target_branch]": target_branch})
        return f"{self.base_url}/{self.path}/-/merge_requests/new?{query}"

    def _change(self, data: Mapping[str, Any]) -> ChangeRequest:
        state = _MR_STATE.get(str(data.get("state")), "closed")
        web_url = str(data.get("web_url") or f"{self.base_url}/{self.path}/-/merge_requests/{data['iid']}")
        return ChangeRequest(
            number=int(data["iid"]),
            url=web_url,
            state=state,
            draft=bool(data.get("draft") or data.get("work_in_progress")),
            author=str((data.get("author") or {}).get("username") or ""),
            approved_by=self._approvals(data) if state == "open" else (),
            mergeable=_mergeable(data) if state == "open" else None,
            source_branch=str(data.get("source_branch") or ""),
            target_branch=str(data.get("target_branch") or ""),
            diff_url=f"{web_url}/diffs",
        )

    def _approvals(self, data: Mapping[str, Any]) -> tuple[str, ...]:
        """``GET /projects/:id/merge_requests/:iid/approvals``: who approved it (not how many must)."""
        project = data.get("project_id") or self._project.encoded_id
        path = f"/projects/{project}/merge_requests/{int(data['iid'])}/approvals"
        with self._request(f"reading the approvals of merge request !{data['iid']}"):
            reply = self._gl.http_get(path, **_NO_LIBRARY_RETRIES)
        approved_by = reply.get("approved_by") if isinstance(reply, dict) else None
        return tuple(_username(entry) for entry in approved_by or [] if _username(entry))

    def review_of(self, change: ChangeRequest) -> ChangeReview:
        """``GET /projects/:id/merge_requests/:iid/reviewers`` (whose state is ``requested_changes``), then,
        only if someone requested changes, ``GET …/notes`` for what they wrote: 1 or 2 requests.
        https://docs.gitlab.com/api/merge_requests/#get-single-merge-request-reviewers"""
        base = f"/projects/{self._project.encoded_id}/merge_requests/{change.number}"
        with self._request(f"reading the reviewers of merge request !{change.number}"):
            reviewers = self._gl.http_list(f"{base}/reviewers", get_all=True, **_NO_LIBRARY_RETRIES)
            wanting = tuple(
                _username(r) for r in reviewers if isinstance(r, dict) and r.get("state") == "requested_changes"
            )
            if not wanting:
                return ChangeReview()
            notes = self._gl.http_list(f"{base}/notes", get_all=True, sort="asc", **_NO_LIBRARY_RETRIES)
        said = tuple(
            str(note.get("body") or "").strip()
            for note in notes
            if isinstance(note, dict) and not note.get("system") and _username(note, "author") in wanting
        )
        return ChangeReview(changes_requested_by=wanting, comments=tuple(text for text in said if text))

    def merge_change(self, change: ChangeRequest) -> ChangeRequest:
        """``PUT /projects/:id/merge_requests/:iid/merge``; GitLab refuses with 405 or 422 when it cannot.
        https://docs.gitlab.com/api/merge_requests/#merge-a-merge-request"""
        path = f"/projects/{self._project.encoded_id}/merge_requests/{change.number}/merge"
        with self._request(f"merging merge request !{change.number}", resent=False):
            reply = self._gl.http_put(path, **_NO_LIBRARY_RETRIES)
        return self._change(reply) if isinstance(reply, dict) else change

    def _create_label(self, label: str, colour: str) -> bool:
        """Create ``label``; False when someone else created it since we listed (409)."""
        data = {"name": label, "color": colour}
        try:
            with self._request(f'creating label "{label}"', resent=False):
                self._project.labels.create(data, **_NO_LIBRARY_RETRIES)
        except TrackerError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def _issue(self, data: Mapping[str, Any]) -> Issue:
        iid = int(data["iid"])
        return Issue(
            id=iid,
            title=data.get("title") or "",
            description=data.get("description") or "",
            # GitLab says "opened" (and "locked" for a locked open issue).
            state="closed" if data.get("state") == "closed" else "open",
            labels=tuple(data.get("labels") or ()),
            url=data.get("web_url") or f"{self.base_url}/{self.path}/-/issues/{iid}",
            label=self.workflow.state_of(data.get("labels") or ()),
        )

    def _remember_failure(self, reply: requests.Response) -> None:
        self._failed_reply = dict(reply.headers)

    @contextlib.contextmanager
    def _request(self, operation: str, *, issue_id: int | None = None, resent: bool = True) -> Iterator[None]:
        """Convert python-gitlab's and requests' errors for ``operation``.

        A 404 means the issue ``issue_id`` when given (unless GitLab says the project is missing),
        else the project. ``resent`` says whether a lost request is retried (False for a POST).
        """
        self._failed_reply = {}
        try:
            yield
        except gitlab.GitlabError as exc:
            raise self._http_error(exc, operation, issue_id) from exc
        except requests.RequestException as exc:
            raise self.endpoint.unreachable(operation, exc, resent=resent) from exc

    def _http_error(self, exc: gitlab.GitlabError, operation: str, issue_id: int | None) -> DevclawError:
        detail = self._token.scrub(short_detail(str(exc.error_message)))
        if exc.response_code == 404:
            if issue_id is None or "project" in detail.lower():
                return self.endpoint.project_not_found()
            return self.endpoint.issue_not_found(issue_id)
        return self.endpoint.http_error(operation, exc.response_code, self._failed_reply, detail)


def _username(data: Mapping[str, Any], key: str = "user") -> str:
    """``{"user": {"username": ...}}`` (approvals, reviewers) or ``{"author": ...}`` (notes): the name."""
    found = data.get(key)
    return str(found.get("username") or "") if isinstance(found, dict) else ""


def _mergeable(data: Mapping[str, Any]) -> bool | None:
    """GitLab's word on a clean merge: ``has_conflicts``, then (detailed_)merge_status; None while unchecked."""
    if data.get("has_conflicts"):
        return False
    detailed = data.get("detailed_merge_status")
    if detailed == "mergeable":
        return True
    if detailed in ("conflict", "broken_status", "need_rebase"):
        return False
    return {"can_be_merged": True, "cannot_be_merged": False}.get(str(data.get("merge_status")))
