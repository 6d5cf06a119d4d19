"""The embedded tracker: issues in SQLite (``memory/tracker.sqlite3``), no server.

It has no merge requests of its own: a person links one (hosted anywhere) to an issue with ``devclaw
issue link-mr``, which writes a row of ``changes``; linking the same URL again updates that row (to record
that it was merged, say).

One database holds every local project; rows are keyed by the project's ``path``. WAL mode and
``BEGIN IMMEDIATE`` make it safe under concurrent processes. A label move is a compare-and-set: it
fails if the issue's workflow label is no longer the one the caller read.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from devclaw.audit import utc_now
from devclaw.errors import NotFoundError, TrackerError, WorkflowError
from devclaw.trackers.base import ChangeRequest, ChangeReview, ChangeState, Issue
from devclaw.workflow import DEFAULT, IssueState, State, Workflow

_SCHEMA = """
CREATE TABLE IF NOT EXISTS issues (
    project TEXT NOT NULL,
    number INTEGER NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed')),
    labels TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (project, number)
);
CREATE TABLE IF NOT EXISTS comments (
    project TEXT NOT NULL,
    number INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS labels (
    project TEXT NOT NULL,
    name TEXT NOT NULL,
    color TEXT NOT NULL,
    PRIMARY KEY (project, name)
);
CREATE TABLE IF NOT EXISTS changes (
    project TEXT NOT NULL,
    issue INTEGER NOT NULL,
    number INTEGER NOT NULL,
    url TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'merged', 'closed')),
    draft INTEGER NOT NULL DEFAULT 0,
    author TEXT NOT NULL DEFAULT '',
    source_branch TEXT NOT NULL DEFAULT '',
    target_branch TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (project, issue, url)
);
"""

_COLUMNS = "number, title, description, state, labels"


_CHANGE_COLUMNS = "number, url, state, draft, author, source_branch, target_branch"


class LocalTracker:
    replies_can_be_lost = False
    change_noun = "merge request"

    def __init__(self, db_path: Path, path: str, workflow: Workflow = DEFAULT) -> None:
        self.db_path = db_path
        self.path = path
        self.workflow = workflow

    @contextlib.contextmanager
    def _connect(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        try:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise TrackerError(f"Cannot open the embedded tracker {self.db_path}: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise TrackerError(f"Embedded tracker {self.db_path} failed: {exc}") from exc
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()

    def url(self, number: int) -> str:
        return f"devclaw://{self.path}/issues/{number}"

    def _issue(self, row: tuple[int, str, str, IssueState, str]) -> Issue:
        number, title, description, state, labels = row
        names = tuple(json.loads(labels))
        return Issue(number, title, description, state, names, self.url(number), self.workflow.state_of(names))

    def _fetch(self, conn: sqlite3.Connection, issue_id: int) -> Issue:
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM issues WHERE project = ? AND number = ?",  # noqa: S608 (constant)
            (self.path, issue_id),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"issue #{issue_id} not found in {self.path}")
        return self._issue(row)

    def get_issue(self, issue_id: int) -> Issue:
        with self._connect() as conn:
            return self._fetch(conn, issue_id)

    def list_issues(self, label: State | None = None, *, closed_too: bool = False) -> list[Issue]:
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM issues WHERE project = ? AND (state = 'open' OR ?) "  # noqa: S608
                "ORDER BY number",
                (self.path, closed_too),
            ).fetchall()
        issues = [self._issue(row) for row in rows]
        return [issue for issue in issues if label is None or self.workflow.label(label) in issue.labels]

    def move_issue(self, issue: Issue, target: State, state: IssueState | None = None) -> Issue:
        with self._connect(write=True) as conn:
            now = self._fetch(conn, issue.id)
            if now.label != issue.label:
                raise WorkflowError(
                    f'Issue #{issue.id} moved from "{issue.label}" to "{now.label}" while devclaw was '
                    "working on it; nothing was changed"
                )
            labels = self.workflow.relabel(now.labels, target)
            conn.execute(
                "UPDATE issues SET labels = ?, state = ?, updated_at = ? WHERE project = ? AND number = ?",
                (json.dumps(labels), state or now.state, utc_now(), self.path, issue.id),
            )
            return self._fetch(conn, issue.id)

    def create_issue(self, title: str, description: str, labels: tuple[str, ...]) -> Issue:
        with self._connect(write=True) as conn:
            (number,) = conn.execute(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM issues WHERE project = ?", (self.path,)
            ).fetchone()
            now = utc_now()
            conn.execute(
                "INSERT INTO issues (project, number, title, description, labels, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (self.path, number, title, description, json.dumps(list(labels)), now, now),
            )
            return self._fetch(conn, number)

    def add_comment(self, issue_id: int, body: str) -> None:
        with self._connect(write=True) as conn:
            self._fetch(conn, issue_id)
            conn.execute(
                "INSERT INTO comments (project, number, body, created_at) VALUES (?, ?, ?, ?)",
                (self.path, issue_id, body, utc_now()),
            )

    def comments(self, issue_id: int) -> list[str]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT body FROM comments WHERE project = ? AND number = ? ORDER BY rowid",
                (self.path, issue_id),
            ).fetchall()
        return [body for (body,) in rows]

    def ensure_labels(self) -> list[str]:
        with self._connect(write=True) as conn:
            existing = {name for (name,) in conn.execute("SELECT name FROM labels WHERE project = ?", (self.path,))}
            missing = [spec for spec in self.workflow.states.values() if spec.label not in existing]
            conn.executemany(
                "INSERT INTO labels (project, name, color) VALUES (?, ?, ?)",
                [(self.path, spec.label, spec.colour) for spec in missing],
            )
        return [spec.label for spec in missing]

    def changes_for(self, issue_id: int) -> tuple[ChangeRequest, ...]:
        """The changes linked to the issue, in the order they were first linked."""
        with self._connect() as conn:
            self._fetch(conn, issue_id)
            rows = conn.execute(
                f"SELECT {_CHANGE_COLUMNS} FROM changes WHERE project = ? AND issue = ? ORDER BY number",  # noqa: S608
                (self.path, issue_id),
            ).fetchall()
        return tuple(_change(row) for row in rows)

    def new_change_url(self, target_branch: str) -> str:
        return ""  # no host of its own: the change is opened wherever the code lives, then linked

    def review_of(self, change: ChangeRequest) -> ChangeReview:
        return ChangeReview()  # a link records a change's state, not its reviews

    def merge_change(self, change: ChangeRequest) -> ChangeRequest:
        raise TrackerError(
            f"The embedded tracker cannot merge {change.url}: merge it where it lives, then record it with "
            "`devclaw issue link-mr GROUP ISSUE URL --state merged`"
        )

    def link_change(self, issue_id: int, change: ChangeRequest) -> ChangeRequest:
        """Link ``change`` (its url, state, branches, draft, author) to the issue; the same URL again
        updates the link. Its number is given here (the next one of the project) and kept on an update."""
        with self._connect(write=True) as conn:
            self._fetch(conn, issue_id)
            known = conn.execute(
                "SELECT number FROM changes WHERE project = ? AND issue = ? AND url = ?",
                (self.path, issue_id, change.url),
            ).fetchone()
            (number,) = (
                known
                or conn.execute(
                    "SELECT COALESCE(MAX(number), 0) + 1 FROM changes WHERE project = ?", (self.path,)
                ).fetchone()
            )
            now = utc_now()
            conn.execute(
                "INSERT INTO changes (project, issue, number, url, state, draft, author, source_branch,"
                " target_branch, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (project, issue, url) DO UPDATE SET state = excluded.state,"
                " draft = excluded.draft, author = excluded.author, source_branch = excluded.source_branch,"
                " target_branch = excluded.target_branch, updated_at = excluded.updated_at",
                (self.path, issue_id, number, change.url, change.state, int(change.draft), change.author,
                 change.source_branch, change.target_branch, now, now),
            )  # fmt: skip
            row = conn.execute(
                f"SELECT {_CHANGE_COLUMNS} FROM changes WHERE project = ? AND issue = ? AND url = ?",  # noqa: S608
                (self.path, issue_id, change.url),
            ).fetchone()
        return _change(row)


def _change(row: tuple[int, str, ChangeState, int, str, str, str]) -> ChangeRequest:
    number, url, state, draft, author, source_branch, target_branch = row
    return ChangeRequest(
        number=number,
        url=url,
        state=state,
        draft=bool(draft),
        author=author,
        source_branch=source_branch,
        target_branch=target_branch,
        diff_url=url,
    )
