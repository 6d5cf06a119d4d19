"""Stateful fakes of the GitLab and GitHub REST APIs, for the real python-gitlab and PyGithub clients.

A fake is plain state (projects with issues, labels, comments, merge/pull requests) plus ``handle(method, url, headers, body)
-> Reply``: it checks the token, applies PUT/PATCH/POST bodies, paginates with ``Link`` headers, logs every
request it receives and plays injected faults. The same fake is mounted two ways:

- ``mount_responses(fake)``: on ``responses`` callbacks, for fast tests (responses replays urllib3's
  status retries, but not its retries after a lost connection);
- ``FakeServer(fake, delay=...)``: a threaded ``http.server`` on 127.0.0.1, for the tests of timeouts and
  reset connections (real sockets, real urllib3) and for the benchmark (a fixed delay per request).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import requests
import responses

from devclaw.trackers.base import ChangeRequest, Tracker
from devclaw.trackers.github import GitHubTracker
from devclaw.trackers.gitlab import GitLabTracker
from devclaw.trackers.local import LocalTracker
from devclaw.trackers.remote import HttpPolicy, Secret

JSON = Any
FaultKind = Literal["status", "reset", "stall", "applied_status"]


@dataclass
class FakeIssue:
    number: int
    title: str
    description: str = ""
    state: Literal["open", "closed"] = "open"
    labels: list[str] = field(default_factory=list)
    pull_request: bool = False  # GitHub lists pull requests among issues
    milestone: str | None = None
    comments: list[str] = field(default_factory=list)


@dataclass
class FakeChange:
    """A merge request (GitLab) or pull request (GitHub), with what both hosts answer about it."""

    number: int
    title: str
    state: Literal["open", "merged", "closed"] = "open"
    draft: bool = False
    author: str = "dev-bot"
    source_branch: str = "feature"
    target_branch: str = "main"
    closes: list[int] = field(default_factory=list)  # "Closes #N" in its description
    mentions: list[int] = field(default_factory=list)  # names #N without closing it
    approved_by: list[str] = field(default_factory=list)  # GitLab approvals
    reviews: list[tuple[str, str]] = field(default_factory=list)  # GitHub (login, APPROVED/CHANGES_REQUESTED/...)
    #: What each reviewer wrote (GitLab: their notes on the MR; GitHub: the body of their reviews).
    said: dict[str, str] = field(default_factory=dict)
    requested_changes_by: list[str] = field(default_factory=list)  # GitLab reviewers in "requested_changes"
    has_conflicts: bool = False
    created_at: str = "2026-01-01T00:00:00Z"

    def references(self, issue: int) -> bool:
        return issue in self.closes or issue in self.mentions


@dataclass
class FakeProject:
    issues: dict[int, FakeIssue] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # name -> colour as the server stores it
    changes: dict[int, FakeChange] = field(default_factory=dict)

    def add(self, title: str, labels: list[str] | tuple[str, ...] = (), **fields: Any) -> int:
        number = max(self.issues, default=0) + 1
        self.issues[number] = FakeIssue(number, title, labels=list(labels), **fields)
        return number


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: JSON


@dataclass
class Fault:
    kind: FaultKind
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: JSON = None
    seconds: float = 0.0
    method: str | None = None  # only requests with this method; any when None
    then_gets: int = 0  # applied_status: the next this-many GETs fail with ``status`` too


class _Error(Exception):
    def __init__(self, status: int, payload: JSON) -> None:
        self.status, self.payload = status, payload


class FakeTracker:
    """What both fakes share: projects, the token check, the request log and the faults."""

    token_header: str
    api_prefix: str

    def __init__(self, path: str, token: str = "fake-token-1234567890") -> None:
        self.path = path
        self.token = token
        self.projects: dict[str, FakeProject] = {path: FakeProject()}
        self.log: list[LoggedRequest] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()

    @property
    def project(self) -> FakeProject:
        return self.projects[self.path]

    def add_change(self, title: str = "Change", **fields: Any) -> int:
        """A merge/pull request of the project (``closes=[issue]``, ``state="merged"``, ...); its number."""
        number = max(self.project.changes, default=0) + 1
        self.project.changes[number] = FakeChange(number, title, **fields)
        return number

    # --- faults ----------------------------------------------------------------------------------
    def fail(self, status: int, *, times: int = 1, headers: Mapping[str, str] | None = None,
             body: JSON = None, method: str | None = None) -> None:  # fmt: skip
        """The next ``times`` matching requests get ``status``."""
        for _ in range(times):
            self.faults.append(Fault("status", status, dict(headers or {}), body, method=method))

    def reset(self, *, times: int = 1, method: str | None = None) -> None:
        """The next ``times`` matching requests lose their connection after the server read them."""
        self.faults.extend(Fault("reset", method=method) for _ in range(times))

    def stall(self, seconds: float, *, times: int = 1, method: str | None = None) -> None:
        """The next ``times`` matching requests are answered only after ``seconds``."""
        self.faults.extend(Fault("stall", seconds=seconds, method=method) for _ in range(times))

    # --- lost replies: the request is applied, its answer is an error ------------------------------
    def apply_then_fail(self, status: int = 500, *, method: str, then_gets: int = 0) -> None:
        """The next ``method`` request is applied, then answered with ``status`` (as a proxy in front of a
        server that acted answers 500/502); after it, the next ``then_gets`` GETs are refused with
        ``status`` too, so the client cannot re-read what happened until they are used up."""
        self.faults.append(Fault("applied_status", status, method=method, then_gets=then_gets))

    def _next_fault(self, method: str) -> Fault | None:
        for index, fault in enumerate(self.faults):
            if fault.method in (None, method):
                return self.faults.pop(index)
        return None

    # --- the log -----------------------------------------------------------------------------------
    def requests(self, method: str | None = None) -> list[LoggedRequest]:
        return [entry for entry in self.log if method is None or entry.method == method]

    def count(self) -> int:
        return len(self.log)

    # --- handling ----------------------------------------------------------------------------------
    def handle(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> FakeReply:
        """One request, applied to the state; the reply says how the mount must deliver it."""
        parts = urlsplit(url)
        default_port = {"https": 443, "http": 80}[parts.scheme]
        port = "" if parts.port in (None, default_port) else f":{parts.port}"
        base = f"{parts.scheme}://{parts.hostname}{port}"  # servers link without the default port
        path = parts.path.removeprefix(self.api_prefix)
        query = dict(parse_qsl(parts.query))
        payload = json.loads(body) if body else None
        with self._lock:
            self.log.append(LoggedRequest(method, path, query, payload))
            fault = self._next_fault(method)
            if fault is not None and fault.kind == "status":
                return _reply(fault.status, fault.body or {"message": f"injected {fault.status}"}, fault.headers)
            reply = self._answer(method, path, query, payload, base, headers)
            if fault is not None and fault.kind == "applied_status":
                self.faults[:0] = [Fault("status", fault.status, method="GET") for _ in range(fault.then_gets)]
                return _reply(fault.status, {"message": f"injected {fault.status} after applying"})
        # A reset or a stall hits after the server acted: the worst case for a client that resends.
        if fault is not None:
            reply.reset, reply.stall = fault.kind == "reset", fault.seconds
        return reply

    def _answer(self, method: str, path: str, query: dict[str, str], body: JSON, base: str,
                headers: Mapping[str, str]) -> FakeReply:  # fmt: skip
        credentials = headers.get(self.token_header, "")
        if credentials.removeprefix("token ").removeprefix("Bearer ") != self.token:
            return _reply(401, self.unauthorized())
        try:
            status, result, extra = self.route(method, path, query, body, base)
        except _Error as error:
            return _reply(error.status, error.payload)
        return _reply(status, result, extra)

    def unauthorized(self) -> JSON:
        raise NotImplementedError

    def route(self, method: str, path: str, query: dict[str, str], body: JSON,
              base: str) -> tuple[int, JSON, dict[str, str]]:  # fmt: skip
        raise NotImplementedError


@dataclass
class FakeReply:
    status: int
    headers: dict[str, str]
    body: bytes
    reset: bool = False  # drop the connection instead of answering
    stall: float = 0.0  # answer this many seconds late


def _reply(status: int, payload: JSON, headers: Mapping[str, str] | None = None) -> FakeReply:
    return FakeReply(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(payload).encode())


def _page(items: list[JSON], query: dict[str, str], base: str, path: str,
          prefix: str) -> tuple[list[JSON], dict[str, str]]:  # fmt: skip
    per_page = int(query.get("per_page", 20))
    page = int(query.get("page", 1))
    chunk = items[(page - 1) * per_page : page * per_page]
    headers = {"X-Page": str(page), "X-Per-Page": str(per_page), "X-Total": str(len(items))}
    if page * per_page < len(items):
        following = urlencode({**query, "page": str(page + 1)})
        headers["Link"] = f'<{base}{prefix}{path}?{following}>; rel="next"'
        headers["X-Next-Page"] = str(page + 1)
    return chunk, headers


def _csv(value: str | None) -> list[str]:
    return [item for item in (value or "").split(",") if item]


class FakeGitLab(FakeTracker):
    """GitLab's /api/v4: issues (by iid), notes, labels; add_labels/remove_labels/state_event on PUT."""

    token_header = "PRIVATE-TOKEN"
    api_prefix = "/api/v4"

    def unauthorized(self) -> JSON:
        return {"message": "401 Unauthorized"}

    def route(self, method: str, path: str, query: dict[str, str], body: JSON,
              base: str) -> tuple[int, JSON, dict[str, str]]:  # fmt: skip
        segments = [unquote(part) for part in path.strip("/").split("/")]
        if len(segments) < 3 or segments[0] != "projects":
            raise _Error(404, {"message": "404 Not Found"})
        paths = list(self.projects)  # a project's numeric id is its place here, from 1
        if segments[1].isdigit() and 0 < int(segments[1]) <= len(paths):
            segments[1] = paths[int(segments[1]) - 1]
        project = self.projects.get(segments[1])
        if project is None:
            raise _Error(404, {"message": "404 Project Not Found"})
        rest, web = segments[2:], f"{base}/{segments[1]}"
        project_id = paths.index(segments[1]) + 1
        if rest == ["issues"] and method == "GET":
            issues = [self._json(issue, web) for issue in self._open_with(project, query)]
            chunk, headers = _page(issues, query, base, path, self.api_prefix)
            return 200, chunk, headers
        if rest == ["issues"] and method == "POST":
            number = project.add(body["title"], _csv(body.get("labels")), description=body.get("description", ""))
            return 201, self._json(project.issues[number], web), {}
        if rest == ["labels"] and method == "GET":
            labels = [{"id": i, "name": n, "color": c} for i, (n, c) in enumerate(project.labels.items())]
            chunk, headers = _page(labels, query, base, path, self.api_prefix)
            return 200, chunk, headers
        if rest == ["labels"] and method == "POST":
            if body["name"] in project.labels:
                raise _Error(409, {"message": "Label already exists"})
            project.labels[body["name"]] = body["color"]
            return 201, {"id": len(project.labels), "name": body["name"], "color": body["color"]}, {}
        if len(rest) >= 2 and rest[0] == "issues" and rest[2:] in (["closed_by"], ["related_merge_requests"]):
            if int(rest[1]) not in project.issues:
                raise _Error(404, {"message": "404 Not found"})
            number, closing = int(rest[1]), rest[2] == "closed_by"
            found = [
                c for c in project.changes.values() if number in c.closes or (not closing and c.references(number))
            ]
            chunk, headers = _page(
                [self._mr_json(c, web, project_id) for c in found], query, base, path, self.api_prefix
            )
            return 200, chunk, headers
        if len(rest) >= 2 and rest[0] == "issues":
            issue = project.issues.get(int(rest[1]))
            if issue is None or issue.pull_request:
                raise _Error(404, {"message": "404 Not found"})
            return self._issue_route(method, rest[2:], issue, project, body, web)
        if len(rest) >= 2 and rest[0] == "merge_requests" and method == "GET":
            change = project.changes.get(int(rest[1]))
            if change is None:
                raise _Error(404, {"message": "404 Not found"})
            if rest[2:] == ["approvals"]:
                return 200, self._approvals_json(change), {}
            if rest[2:] in (["reviewers"], ["notes"]):
                found = self._reviewers_json(change) if rest[2] == "reviewers" else self._notes_json(change)
                chunk, headers = _page(found, query, base, path, self.api_prefix)
                return 200, chunk, headers
            if not rest[2:]:
                return 200, self._mr_json(change, web, project_id), {}
        if len(rest) == 3 and rest[0] == "merge_requests" and rest[2] == "merge" and method == "PUT":
            change = project.changes.get(int(rest[1]))
            if change is None:
                raise _Error(404, {"message": "404 Not found"})
            if change.state != "open" or change.draft:
                raise _Error(405, {"message": "405 Method Not Allowed"})
            if change.has_conflicts:
                raise _Error(422, {"message": "Branch cannot be merged"})
            change.state = "merged"
            for number in change.closes:  # "Closes #N" closes the issue when the MR is merged
                project.issues[number].state = "closed"
            return 200, self._mr_json(change, web, project_id), {}
        raise _Error(404, {"message": "404 Not Found"})

    @staticmethod
    def _reviewers_json(change: FakeChange) -> list[JSON]:
        # GET /projects/:id/merge_requests/:iid/reviewers
        names = [*change.approved_by, *(n for n in change.requested_changes_by if n not in change.approved_by)]
        return [
            {"user": {"id": 100 + i, "username": name, "name": name.title()}, "created_at": "2026-01-01T00:00:00Z",
             "state": "requested_changes" if name in change.requested_changes_by else "approved"}
            for i, name in enumerate(names)
        ]  # fmt: skip

    @staticmethod
    def _notes_json(change: FakeChange) -> list[JSON]:
        # GET /projects/:id/merge_requests/:iid/notes, with one system note as GitLab adds them
        notes: list[JSON] = [
            {"id": 1, "body": "requested review", "system": True, "author": {"username": change.author}}
        ]
        notes += [{"id": 2 + i, "body": body, "system": False, "author": {"username": name}}
                  for i, (name, body) in enumerate(change.said.items())]  # fmt: skip
        return notes

    @staticmethod
    def _mr_json(change: FakeChange, web: str, project_id: int) -> JSON:
        # The shape of GET /projects/:id/merge_requests/:iid (closed_by and related_merge_requests list these).
        state = {"open": "opened", "merged": "merged", "closed": "closed"}[change.state]
        can_merge = "cannot_be_merged" if change.has_conflicts else "can_be_merged"
        return {
            "id": 5000 + change.number, "iid": change.number, "project_id": project_id, "title": change.title,
            "description": " ".join([*(f"Closes #{n}" for n in change.closes), *(f"See #{n}" for n in change.mentions)]),
            "state": state, "draft": change.draft, "work_in_progress": change.draft,
            "author": {"id": 7, "username": change.author, "name": change.author.title()},
            "source_branch": change.source_branch, "target_branch": change.target_branch,
            "source_project_id": project_id, "target_project_id": project_id,
            "merge_status": can_merge if change.state == "open" else "can_be_merged",
            "detailed_merge_status": ("conflict" if change.has_conflicts else "mergeable") if change.state == "open"
            else "not_open",
            "has_conflicts": change.has_conflicts, "created_at": change.created_at,
            "merged_at": "2026-01-02T00:00:00Z" if change.state == "merged" else None,
            "web_url": f"{web}/-/merge_requests/{change.number}",
        }  # fmt: skip

    @staticmethod
    def _approvals_json(change: FakeChange) -> JSON:
        # GET /projects/:id/merge_requests/:iid/approvals
        users = [{"user": {"id": 100 + i, "username": name, "name": name.title()}}
                 for i, name in enumerate(change.approved_by)]  # fmt: skip
        return {
            "id": 5000 + change.number, "iid": change.number, "state": change.state, "approved": bool(users),
            "approvals_required": 1, "approvals_left": 0 if users else 1, "approved_by": users,
        }  # fmt: skip

    def _issue_route(self, method: str, rest: list[str], issue: FakeIssue, project: FakeProject,
                     body: JSON, web: str) -> tuple[int, JSON, dict[str, str]]:  # fmt: skip
        if not rest and method == "GET":
            return 200, self._json(issue, web), {}
        if not rest and method == "PUT":
            self._apply(issue, project, body)
            return 200, self._json(issue, web), {}
        if rest == ["notes"] and method == "POST":
            issue.comments.append(body["body"])
            return 201, {"id": len(issue.comments), "body": body["body"]}, {}
        raise _Error(404, {"message": "404 Not Found"})

    @staticmethod
    def _open_with(project: FakeProject, query: dict[str, str]) -> list[FakeIssue]:
        wanted = set(_csv(query.get("labels")))
        state = {"opened": "open", "closed": "closed"}.get(query.get("state", ""))
        issues = [
            issue for issue in project.issues.values()
            if not issue.pull_request and (state is None or issue.state == state) and wanted <= set(issue.labels)
        ]  # fmt: skip
        return sorted(issues, key=lambda issue: issue.number, reverse=query.get("sort") == "desc")

    @staticmethod
    def _apply(issue: FakeIssue, project: FakeProject, body: JSON) -> None:
        if "labels" in body:
            issue.labels = _csv(body["labels"])
        removed = set(_csv(body.get("remove_labels")))
        issue.labels = [name for name in issue.labels if name not in removed]
        issue.labels += [name for name in _csv(body.get("add_labels")) if name not in issue.labels]
        for name in issue.labels:  # GitLab creates a label it does not know
            project.labels.setdefault(name, "#6699cc")
        event = body.get("state_event")
        if event is not None:
            issue.state = "closed" if event == "close" else "open"
        for key in set(body) - {"labels", "add_labels", "remove_labels", "state_event"}:
            setattr(issue, key, body[key])

    def _json(self, issue: FakeIssue, web: str) -> JSON:
        return {
            "id": 1000 + issue.number, "iid": issue.number, "project_id": 1, "title": issue.title,
            "description": issue.description, "state": "opened" if issue.state == "open" else "closed",
            "labels": list(issue.labels), "milestone": issue.milestone, "web_url": f"{web}/-/issues/{issue.number}",
        }  # fmt: skip


class FakeGitHub(FakeTracker):
    """GitHub's REST API: issues (pull requests among them), comments, labels; PATCH replaces labels."""

    token_header = "Authorization"

    def __init__(self, path: str, token: str = "fake-token-1234567890", api_prefix: str = "") -> None:
        super().__init__(path, token)
        self.api_prefix = api_prefix  # "" for api.github.com, "/api/v3" for GitHub Enterprise

    def unauthorized(self) -> JSON:
        return {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}

    def route(self, method: str, path: str, query: dict[str, str], body: JSON,
              base: str) -> tuple[int, JSON, dict[str, str]]:  # fmt: skip
        match = re.fullmatch(r"/repos/([^/]+/[^/]+)(/.*)?", path)
        project = self.projects.get(match.group(1)) if match else None
        if match is None or project is None:
            raise _Error(404, {"message": "Not Found"})
        rest, api = (match.group(2) or "").strip("/").split("/"), f"{base}{self.api_prefix}/repos/{match.group(1)}"
        if rest == ["issues"] and method == "GET":
            issues = [self._json(issue, api) for issue in self._open_with(project, query)]
            chunk, headers = _page(issues, query, base, path, self.api_prefix)
            return 200, chunk, headers
        if rest == ["issues"] and method == "POST":
            number = project.add(body["title"], body.get("labels", []), description=body.get("body") or "")
            return 201, self._json(project.issues[number], api), {}
        if rest == ["labels"] and method == "GET":
            labels = [{"name": n, "color": c, "url": f"{api}/labels/{quote(n)}"} for n, c in project.labels.items()]
            chunk, headers = _page(labels, query, base, path, self.api_prefix)
            return 200, chunk, headers
        if rest == ["labels"] and method == "POST":
            if body["name"].lower() in {name.lower() for name in project.labels}:
                error = {"resource": "Label", "code": "already_exists", "field": "name"}
                raise _Error(422, {"message": "Validation Failed", "errors": [error]})
            project.labels[body["name"]] = body["color"]
            return 201, {"name": body["name"], "color": body["color"], "url": f"{api}/labels/{quote(body['name'])}"}, {}
        if len(rest) >= 2 and rest[0] == "issues" and rest[1].isdigit() and int(rest[1]) in project.issues:
            if rest[2:] == ["timeline"] and method == "GET":
                events = self._timeline(project, int(rest[1]), api)
                chunk, headers = _page(events, query, base, path, self.api_prefix)
                return 200, chunk, headers
            return self._issue_route(method, rest[2:], project.issues[int(rest[1])], project, body, api)
        if len(rest) >= 2 and rest[0] == "pulls" and rest[1].isdigit() and method == "GET":
            change = project.changes.get(int(rest[1]))
            if change is None:
                raise _Error(404, {"message": "Not Found"})
            if rest[2:] == ["reviews"]:
                reviews = [
                    self._review_json(change, i, login, verdict) for i, (login, verdict) in enumerate(change.reviews)
                ]
                chunk, headers = _page(reviews, query, base, path, self.api_prefix)
                return 200, chunk, headers
            if not rest[2:]:
                return 200, self._pull_json(change, api), {}
        if len(rest) == 3 and rest[0] == "pulls" and rest[1].isdigit() and rest[2] == "merge" and method == "PUT":
            change = project.changes.get(int(rest[1]))
            if change is None:
                raise _Error(404, {"message": "Not Found"})
            if change.state != "open" or change.draft or change.has_conflicts:
                raise _Error(405, {"message": "Pull Request is not mergeable"})
            change.state = "merged"
            project.issues[change.number].state = "closed"
            for number in change.closes:
                project.issues[number].state = "closed"
            return 200, {"sha": "c" * 40, "merged": True, "message": "Pull Request successfully merged"}, {}
        raise _Error(404, {"message": "Not Found"})

    def add_change(self, title: str = "Change", **fields: Any) -> int:
        """A pull request: GitHub numbers pull requests and issues in one sequence (and lists both)."""
        number = self.project.add(title, pull_request=True)
        self.project.changes[number] = FakeChange(number, title, **fields)
        self.project.issues[number].state = "open" if self.project.changes[number].state == "open" else "closed"
        return number

    def _timeline(self, project: FakeProject, number: int, api: str) -> list[JSON]:
        """GET /repos/{o}/{r}/issues/{n}/timeline: a "labeled" event, then one "cross-referenced" event per
        pull request naming the issue (its source is the pull request as an issue, with ``pull_request``)."""
        events: list[JSON] = [{"event": "labeled", "label": {"name": "To Do"}, "created_at": "2026-01-01T00:00:00Z",
                               "actor": {"login": "octocat"}}]  # fmt: skip
        for change in project.changes.values():
            if change.references(number):
                source = {**self._json(project.issues[change.number], api), "repository_url": api}
                events.append({
                    "event": "cross-referenced", "created_at": change.created_at, "updated_at": change.created_at,
                    "actor": {"login": change.author}, "source": {"type": "issue", "issue": source},
                })  # fmt: skip
        return events

    def _pull_json(self, change: FakeChange, api: str) -> JSON:
        # The shape of GET /repos/{o}/{r}/pulls/{n} (the fields devclaw reads, and their neighbours).
        html = f"https://github.example/{self.path}/pull/{change.number}"
        mergeable = None if change.state != "open" else not change.has_conflicts
        return {
            "url": f"{api}/pulls/{change.number}", "id": 9000 + change.number, "number": change.number,
            "html_url": html, "diff_url": f"{html}.diff", "title": change.title,
            "body": " ".join([*(f"Closes #{n}" for n in change.closes), *(f"See #{n}" for n in change.mentions)]),
            "state": "open" if change.state == "open" else "closed", "draft": change.draft,
            "merged": change.state == "merged", "mergeable": mergeable,
            "mergeable_state": "dirty" if change.has_conflicts else "clean",
            "merged_at": "2026-01-02T00:00:00Z" if change.state == "merged" else None,
            "user": {"login": change.author, "id": 7, "type": "User"},
            "head": {"ref": change.source_branch, "label": f"acme:{change.source_branch}", "sha": "a" * 40},
            "base": {"ref": change.target_branch, "label": f"acme:{change.target_branch}", "sha": "b" * 40},
            "created_at": change.created_at,
        }  # fmt: skip

    @staticmethod
    def _review_json(change: FakeChange, index: int, login: str, verdict: str) -> JSON:
        # GET /repos/{o}/{r}/pulls/{n}/reviews, oldest first
        return {
            "id": 80000 + change.number * 100 + index, "user": {"login": login, "id": 200 + index},
            "body": change.said.get(login, ""), "state": verdict, "submitted_at": f"2026-01-01T00:{index:02d}:00Z",
            "commit_id": "a" * 40,
        }  # fmt: skip

    def _issue_route(self, method: str, rest: list[str], issue: FakeIssue, project: FakeProject,
                     body: JSON, api: str) -> tuple[int, JSON, dict[str, str]]:  # fmt: skip
        if not rest and method == "GET":
            return 200, self._json(issue, api), {}
        if not rest and method == "PATCH":
            self._apply(issue, project, body)
            return 200, self._json(issue, api), {}
        if rest == ["comments"] and method == "POST":
            issue.comments.append(body["body"])
            return 201, {"id": len(issue.comments), "body": body["body"], "url": f"{api}/issues/comments/1"}, {}
        raise _Error(404, {"message": "Not Found"})

    @staticmethod
    def _open_with(project: FakeProject, query: dict[str, str]) -> list[FakeIssue]:
        wanted = set(_csv(query.get("labels")))
        state = query.get("state", "open")
        issues = [
            issue for issue in project.issues.values()
            if (state == "all" or issue.state == state) and wanted <= set(issue.labels)
        ]  # fmt: skip
        return sorted(issues, key=lambda issue: issue.number, reverse=query.get("direction", "desc") == "desc")

    @staticmethod
    def _apply(issue: FakeIssue, project: FakeProject, body: JSON) -> None:
        if "labels" in body:
            issue.labels = list(body["labels"])
            for name in issue.labels:
                project.labels.setdefault(name, "ededed")
        if "state" in body:
            issue.state = "closed" if body["state"] == "closed" else "open"
        for key in set(body) - {"labels", "state", "state_reason"}:
            setattr(issue, {"body": "description"}.get(key, key), body[key])

    def _json(self, issue: FakeIssue, api: str) -> JSON:
        kind = "pull" if issue.pull_request else "issues"
        data = {
            "url": f"{api}/issues/{issue.number}", "number": issue.number, "title": issue.title,
            "body": issue.description or None, "state": issue.state,
            "labels": [{"name": name, "color": "ededed"} for name in issue.labels],
            "milestone": None if issue.milestone is None else {"title": issue.milestone, "number": 1},
            "html_url": f"https://github.example/{self.path}/{kind}/{issue.number}",
            "repository_url": api,
        }  # fmt: skip
        if issue.pull_request:
            data["pull_request"] = {"url": f"{api}/pulls/{issue.number}"}
        return data


# --- mounts ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def mount_responses(fake: FakeTracker, base_url: str) -> Iterator[responses.RequestsMock]:
    """Serve ``fake`` for every request to ``base_url``'s host (any port: PyGithub adds ``:443``)."""
    parts = urlsplit(base_url)
    pattern = re.compile(rf"^{re.escape(parts.scheme)}://{re.escape(parts.hostname or '')}(:\d+)?/")

    def callback(request: requests.PreparedRequest) -> tuple[int, dict[str, str], bytes]:
        body = request.body.encode() if isinstance(request.body, str) else request.body
        assert body is None or isinstance(body, bytes)
        headers = {name: str(value) for name, value in request.headers.items()}
        reply = fake.handle(request.method or "GET", request.url or "", headers, body)
        if reply.reset:
            raise requests.ConnectionError("Connection reset by peer (injected)")
        if reply.stall:
            raise requests.ReadTimeout("Read timed out (injected)")
        return reply.status, reply.headers, reply.body

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            mock.add_callback(method, pattern, callback=callback)
        yield mock


class FakeServer:
    """``fake`` on a real socket at 127.0.0.1, each reply ``delay`` seconds late. Use as a context."""

    def __init__(self, fake: FakeTracker, *, delay: float = 0.0) -> None:
        self.fake, self.delay = fake, delay
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
            # Headers and body go out in two writes; with Nagle on, the body waits for the client's
            # delayed ACK (40 ms), which real servers do not add.
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                # A proxy is sent the whole URL ("GET http://host/path"), a server only the path.
                url = self.path if self.path.startswith("http") else f"{server.url}{self.path}"
                reply = server.fake.handle(self.command, url, dict(self.headers.items()), body)
                if reply.reset:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                time.sleep(server.delay + reply.stall)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


# --- one handle on any of the three trackers -------------------------------------------------------

TrackerKind = Literal["local", "gitlab", "github"]
KINDS: tuple[TrackerKind, ...] = ("local", "gitlab", "github")
REMOTE_KINDS: tuple[TrackerKind, ...] = ("gitlab", "github")
GITLAB_URL = "https://gitlab.example"
GITHUB_URL = "https://api.github.com"
# Small and fast: the retry tests must not sleep for real.
TEST_POLICY = HttpPolicy(timeout=5.0, retries=2, backoff=0.0, backoff_max=0.0, retry_after_max=5)


@dataclass
class Harness:
    """A tracker of ``kind`` and a way to see and seed its issues without going through it."""

    kind: TrackerKind
    tracker: Tracker
    fake: FakeTracker | None = None
    db: Path | None = None
    mock: responses.RequestsMock | None = None

    @property
    def path(self) -> str:
        return self.tracker.path

    def seed(self, title: str, labels: tuple[str, ...] | list[str] = (), *, state: str = "open",
             description: str = "", pull_request: bool = False) -> int:  # fmt: skip
        if self.fake is not None:
            number = self.fake.project.add(title, list(labels), description=description, pull_request=pull_request)
            self.fake.project.issues[number].state = "closed" if state == "closed" else "open"
            return number
        assert isinstance(self.tracker, LocalTracker) and not pull_request
        number = self.tracker.create_issue(title, description, tuple(labels)).id
        if state == "closed":
            with sqlite3.connect(str(self.db)) as conn:
                conn.execute("UPDATE issues SET state = 'closed' WHERE number = ?", (number,))
        return number

    def add_change(self, issue: int, *, state: str = "merged", draft: bool = False, mention: bool = False,
                   source_branch: str = "feature", target_branch: str = "main", **fields: Any) -> str:  # fmt: skip
        """A merge/pull request closing (``mention``: naming) ``issue``; its URL. On the embedded tracker,
        a link as ``devclaw issue link-mr`` makes it."""
        if self.fake is not None:
            refs = {"mentions": [issue]} if mention else {"closes": [issue]}
            number = self.fake.add_change(f"Fix #{issue}", state=state, draft=draft, source_branch=source_branch,
                                          target_branch=target_branch, **refs, **fields)  # fmt: skip
            if self.kind == "gitlab":
                return f"{GITLAB_URL}/{self.fake.path}/-/merge_requests/{number}"
            return f"https://github.example/{self.fake.path}/pull/{number}"
        assert isinstance(self.tracker, LocalTracker)
        url = f"https://git.example/webapp/-/merge_requests/{len(self.tracker.changes_for(issue)) + 1}"
        change = ChangeRequest(0, url, state, draft, source_branch=source_branch, target_branch=target_branch)  # type: ignore[arg-type]
        return self.tracker.link_change(issue, change).url

    def labels_of(self, number: int) -> list[str]:
        if self.fake is not None:
            return list(self.fake.project.issues[number].labels)
        return list(self.tracker.get_issue(number).labels)

    def state_of(self, number: int) -> str:
        if self.fake is not None:
            return self.fake.project.issues[number].state
        return self.tracker.get_issue(number).state

    def comments_of(self, number: int) -> list[str]:
        if self.fake is not None:
            return list(self.fake.project.issues[number].comments)
        assert isinstance(self.tracker, LocalTracker)
        return self.tracker.comments(number)

    def label_colours(self) -> dict[str, str]:
        if self.fake is not None:
            return dict(self.fake.project.labels)
        with sqlite3.connect(str(self.db)) as conn:
            return dict(conn.execute("SELECT name, color FROM labels"))

    def wire_requests(self) -> list[LoggedRequest]:
        """Every HTTP request the tracker made (none for the embedded tracker)."""
        return list(self.fake.log) if self.fake is not None else []

    def forget_requests(self) -> None:
        if self.fake is not None:
            self.fake.log.clear()


def make_fake(kind: TrackerKind, path: str) -> FakeTracker:
    return FakeGitLab(path) if kind == "gitlab" else FakeGitHub(path)


def remote_tracker(kind: TrackerKind, fake: FakeTracker, base_url: str, *, token: str | None = None,
                   policy: HttpPolicy = TEST_POLICY) -> Tracker:  # fmt: skip
    secret = Secret(fake.token if token is None else token)
    cls = GitLabTracker if kind == "gitlab" else GitHubTracker
    return cls(fake.path, token=secret, base_url=base_url, policy=policy)


@contextlib.contextmanager
def open_harness(kind: TrackerKind, tmp_path: Path, *, policy: HttpPolicy = TEST_POLICY,
                 served: bool = False) -> Iterator[Harness]:  # fmt: skip
    """A tracker of ``kind`` on a fresh store: SQLite in ``tmp_path``, or a fake mounted on responses
    (``served``: on a real socket on 127.0.0.1, over plain http)."""
    if kind == "local":
        db = tmp_path / "tracker.sqlite3"
        yield Harness(kind, LocalTracker(db, "webapp"), db=db)
        return
    path = "acme/platform/webapp" if kind == "gitlab" else "acme/webapp"
    fake = make_fake(kind, path)
    if served:
        with FakeServer(fake) as server:
            yield Harness(kind, remote_tracker(kind, fake, server.url, policy=policy), fake)
        return
    base_url = GITLAB_URL if kind == "gitlab" else GITHUB_URL
    with mount_responses(fake, base_url) as mock:
        yield Harness(kind, remote_tracker(kind, fake, base_url, policy=policy), fake, mock=mock)
