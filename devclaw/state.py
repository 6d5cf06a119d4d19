"""projects.json: the schema, the migration from DevClaw's shape, and ``ProjectStore``.

Every write happens under an exclusive lock on ``projects.json.lock`` (a separate file: ``os.replace``
swaps the state file's inode, so a lock on it would lock nothing) and is atomic: a unique temp file in
the same folder, fsync, ``os.replace``, fsync of the folder. Before the replace, the previous file is
hard-linked to ``projects.json.bak``: the last good version costs no copy. A file that does not parse
or validate is reported and never overwritten.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import shutil
import stat
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import filelock
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from devclaw.errors import ConfigError, NotFoundError, StateError, WorkflowError
from devclaw.workflow import DEFAULT, ReviewPolicy, Role, RoleSpec, Workflow, customised, with_review

SCHEMA_VERSION: Literal[2] = 2
DEFAULT_LOCK_TIMEOUT = 30.0
#: Far above any real registry (a project is under 1 KB); a bigger file is refused unread.
MAX_STATE_BYTES = 32 * 1024 * 1024


class CamelModel(BaseModel):
    """Our schema: camelCase on disk and on the wire, unknown keys refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def parse_issue_id(value: object) -> int | None:
    """The one parser for an issue id as stored: an integer, or DevClaw's digit string (" 7" included).
    Anything else is no issue (health reports an active worker without one)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value < 2**31 else None
    if isinstance(value, str) and value.strip().isdigit():
        return parse_issue_id(int(value.strip()))
    return None


def normalize_time(value: object) -> str | None:
    """ISO 8601 in UTC with milliseconds and a Z, the one format devclaw writes. A naive time is UTC;
    text that is not a time is no time (health then reports the worker as it would one without)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str | None) -> datetime | None:
    normalized = normalize_time(value)
    return datetime.fromisoformat(normalized.replace("Z", "+00:00")) if normalized else None


class TokenUsage(CamelModel):
    """What a worker run spent, summed over its assistant messages (cost in USD when the provider prices it)."""

    input: int = Field(default=0, ge=0)
    output: int = Field(default=0, ge=0)
    cache_read: int = Field(default=0, ge=0)
    cache_write: int = Field(default=0, ge=0)
    cost: float | None = Field(default=None, ge=0)
    #: The full model id the run used, when the gateway said.
    model: str | None = None


class Completion(CamelModel):
    """The last task a worker slot completed: a retried task_complete answers with it, changing nothing."""

    issue_id: int
    result: str
    response: dict[str, Any]


class Worker(CamelModel):
    active: bool = False
    session_id: str | None = None
    issue_id: int | None = None
    start_time: str | None = None
    model: str | None = None
    #: The state the worker's issue was picked up from: health sends lost work back to that queue.
    picked_from: str | None = None
    usage: TokenUsage | None = None
    last_completion: Completion | None = None

    @field_validator("issue_id", mode="before")
    @classmethod
    def _issue_id(cls, value: object) -> int | None:
        return parse_issue_id(value)

    @field_validator("start_time", mode="before")
    @classmethod
    def _start_time(cls, value: object) -> str | None:
        return normalize_time(value)


class TrackerConfig(CamelModel):
    provider: Literal["local", "gitlab", "github"] = "local"
    path: str | None = None
    base_url: str | None = None
    token_env: str | None = None

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        if value and "@" in urlsplit(value.strip()).netloc:
            raise ValueError(
                "the base URL must not contain credentials: put the token in an environment variable and "
                "name it with --token-env (tracker.tokenEnv)"
            )
        return value

    def identity(self) -> tuple[str, str, str]:
        """Which tracker project this is: two devclaw projects on one would undo each other's work."""
        return (self.provider, (self.base_url or "").rstrip("/").lower(), (self.path or "").strip("/").lower())


class ChangeSettings(CamelModel):
    """What DEV "done" needs: a merge/pull request for the issue (``required``), and a merged one
    (``must_be_merged``). ``required`` unset means the tracker's default: true on GitLab and GitHub, false on
    the embedded tracker (whose changes are linked by hand)."""

    required: bool | None = None
    #: Unset: true, except for DEV done in a project with a review stage (the review comes before the
    #: merge); QA pass needs a merged change either way (``Project.must_be_merged``).
    must_be_merged: bool | None = None


#: ``changes.required`` when a project does not say.
CHANGES_REQUIRED_BY_DEFAULT: dict[str, bool] = {"local": False, "gitlab": True, "github": True}


class ReviewSettings(CamelModel):
    """The review stage between DEV done and QA (docs/WORKFLOW.md): ``skip`` (none, the default), ``human``
    (the tick watches the change's approvals) or ``agent`` (a reviewer worker is picked up like dev and QA)."""

    policy: ReviewPolicy = "skip"
    #: devclaw merges the change once it is approved, through the host's API: with ``human`` one a person
    #: other than its author approved, with ``agent`` on the reviewer's approve. Otherwise a person merges it.
    merge: bool = False


class StateSettings(CamelModel):
    label: str | None = None
    colour: str | None = None


class WorkflowSettings(CamelModel):
    """A project's changes to its workflow (devclaw/workflow.py ``customised``; docs/WORKFLOW.md)."""

    #: State -> its label and colour: a built-in state renamed or recoloured, or an extra state.
    states: dict[str, StateSettings] = Field(default_factory=dict)
    #: State -> event -> the state it moves to: moves added or redirected.
    transitions: dict[str, dict[str, str]] = Field(default_factory=dict)

    def is_default(self) -> bool:
        return not self.states and not self.transitions


@functools.lru_cache(maxsize=256)
def _effective_workflow(policy: str, settings: str) -> Workflow:
    custom = WorkflowSettings.model_validate_json(settings)
    base = with_review(DEFAULT, policy)
    if custom.is_default():
        return base
    states = {name: (spec.label, spec.colour) for name, spec in custom.states.items()}
    return customised(base, states, custom.transitions)


class SlotChange(CamelModel):
    """A worker slot's new value, as one plan commits it."""

    role: str
    slot: int = Field(ge=0)
    worker: Worker


class Intent(CamelModel):
    """A tracker move apply is about to make, recorded before it: if its reply is lost, the next call on
    the project (or session_health) re-reads the issue and finishes (landed) or drops (not landed) it."""

    id: str
    created_at: str
    tool: str
    issue_id: int
    from_label: str | None
    to_label: str
    slots: list[SlotChange] = Field(default_factory=list)
    qa_fails: dict[str, int] = Field(default_factory=dict)
    records: list[dict[str, Any]] = Field(default_factory=list)


class Project(CamelModel):
    name: str
    group_name: str = ""
    repo: str = ""
    base_branch: str = "main"
    deploy_branch: str = "main"
    deploy_url: str = ""
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    #: What DEV "done" needs (see ``ChangeSettings``).
    changes: ChangeSettings = Field(default_factory=ChangeSettings)
    #: The review stage (see ``ReviewSettings``).
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    #: The project's own states and moves over the built-in workflow (see ``WorkflowSettings``).
    workflow: WorkflowSettings = Field(default_factory=WorkflowSettings)
    #: Role -> how many workers of that role may work at once (default 1).
    max_workers: dict[str, int] = Field(default_factory=dict)
    #: Role -> its worker slots; slot 0 always exists.
    workers: dict[str, list[Worker]] = Field(default_factory=dict)
    #: Issue id -> how many times it failed QA (the loop brake's count), changed in the same commit.
    qa_fails: dict[str, int] = Field(default_factory=dict)
    #: Tracker moves whose outcome is not known yet (see ``Intent``).
    intents: list[Intent] = Field(default_factory=list)
    #: Audit lines a committed change could not append (the disk was full, the log unwritable).
    audit_gaps: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _v1_workers(cls, data: Any) -> Any:
        # Version 1 and DevClaw's shape hold one worker per role under "dev" and "qa".
        if isinstance(data, dict) and any(role in data for role in ("dev", "qa")):
            data = dict(data)
            workers = dict(data.get("workers") or {})
            for role in ("dev", "qa"):
                if role in data:
                    workers.setdefault(role, [data.pop(role)])
            data["workers"] = workers
        return data

    @model_validator(mode="after")
    def _every_role_has_a_slot(self) -> Project:
        try:
            self.effective_workflow()
        except WorkflowError as exc:
            raise ValueError(str(exc)) from None
        if self.review.merge and self.review.policy == "skip":
            raise ValueError("review.merge: there is no review stage to merge after; set review.policy too")
        if self.review.merge and self.tracker.provider == "local":
            raise ValueError(
                "review.merge: the embedded tracker cannot merge (its changes are links): merge where the code "
                "lives and record it with `devclaw issue link-mr ... --state merged`"
            )
        for role in self.roles:
            if not self.workers.get(role):
                self.workers[role] = [Worker()]
        return self

    @property
    def roles(self) -> tuple[Role, ...]:
        """The roles that work in this project's workflow."""
        return tuple(self.effective_workflow().roles)

    def slots(self, role: Role) -> list[Worker]:
        return self.workers.get(role) or [Worker()]

    def worker(self, role: Role, slot: int = 0) -> Worker:
        slots = self.slots(role)
        return slots[slot] if slot < len(slots) else Worker()

    def max_slots(self, role: Role) -> int:
        return max(1, self.max_workers.get(role, 1))

    def active_slots(self, role: Role) -> list[tuple[int, Worker]]:
        return [(slot, worker) for slot, worker in enumerate(self.slots(role)) if worker.active]

    def every_worker(self) -> list[tuple[Role, int, Worker]]:
        return [(role, slot, worker) for role in self.roles for slot, worker in enumerate(self.slots(role))]

    def effective_workflow(self) -> Workflow:
        """The built-in workflow with this project's review stage and its own settings over it."""
        return _effective_workflow(self.review.policy, self.workflow.model_dump_json())

    def must_be_merged(self, spec: RoleSpec) -> bool:
        """Whether ``spec``'s gated results need a merged change: ``changes.mustBeMerged``, or by default yes,
        unless a review stage comes after the role (DEV done: the review comes before the merge)."""
        if self.changes.must_be_merged is not None:
            return self.changes.must_be_merged
        return not (spec.review_defers_merge and self.review.policy != "skip")

    @property
    def changes_required(self) -> bool:
        """``changes.required``, or its default for the project's tracker."""
        if self.changes.required is not None:
            return self.changes.required
        return CHANGES_REQUIRED_BY_DEFAULT[self.tracker.provider]

    def qa_fail_count(self, issue_id: int) -> int:
        return self.qa_fails.get(str(issue_id), 0)

    def config_json(self) -> dict[str, Any]:
        """The configuration alone (what ``project_register`` logs and rebuild restores): no work state."""
        return self.model_dump(mode="json", by_alias=True, include=CONFIG_FIELDS)


CONFIG_FIELDS = {
    "name", "group_name", "repo", "base_branch", "deploy_branch", "deploy_url", "tracker", "changes", "max_workers",
    "review", "workflow",
}  # fmt: skip


class HealthSettings(CamelModel):
    #: A worker picked up this recently is not judged by its session yet (the spawn may be under way).
    grace_minutes: float = Field(default=5, ge=0)
    #: A worker active for longer than this is reported as stale.
    stale_hours: float = Field(default=2, gt=0)
    #: The loop brake: the QA fail that makes this many for one issue sends it to Refining, not To Improve.
    qa_fail_limit: int = Field(default=3, ge=1)


class ProjectsFile(CamelModel):
    version: Literal[2] = SCHEMA_VERSION
    health: HealthSettings = Field(default_factory=HealthSettings)
    #: Model alias -> full model id, overriding devclaw's defaults (see docs/CONFIGURATION.md).
    models: dict[str, str] = Field(default_factory=dict)
    #: At most this many workers active at once over every project (unset: no cap).
    max_active_workers: int | None = Field(default=None, ge=1)
    #: Role -> at most this many of its workers active at once over every project.
    max_active_workers_per_role: dict[str, int] = Field(default_factory=dict)
    projects: dict[str, Project] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        # DevClaw's file has no version and no tracker; its issues lived on GitLab (it drove glab).
        # Version 1 keeps one worker per role (``Project`` moves it into ``workers``). Either is written
        # in the new shape only on the next real change, by whichever call makes it.
        if not isinstance(data, dict):
            return data
        if "version" not in data and isinstance(data.get("projects"), dict):
            projects = {
                gid: {**p, "tracker": {"provider": "gitlab"}} if isinstance(p, dict) and "tracker" not in p else p
                for gid, p in data["projects"].items()
            }
            data = {**data, "version": 1, "projects": projects}
        if data.get("version") == 1:
            data = {**data, "version": SCHEMA_VERSION}
        return data

    def project(self, group_id: str) -> Project:
        try:
            return self.projects[group_id]
        except KeyError:
            available = ", ".join(self.projects) or "none (register one with `devclaw project add`)"
            raise NotFoundError(f"Project not found for groupId: {group_id}. Available: {available}") from None

    def active_count(self, role: Role | None = None) -> int:
        return sum(
            1
            for project in self.projects.values()
            for name, _, worker in project.every_worker()
            if worker.active and (role is None or name == role)
        )


class ProjectStore:
    """Reads and atomically rewrites ``memory/projects.json``.

    ``read`` takes no lock (the file is only ever replaced whole) and returns a parsed file shared with
    other readers of this store: treat it as read-only. ``update`` is the one way to change it: a short
    lock, a fresh read, the change applied to a copy, one atomic write.
    """

    def __init__(self, path: Path, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self.path = path
        self.backup_path = path.with_name(path.name + ".bak")
        self.lock_timeout = lock_timeout
        self._lock = filelock.FileLock(str(path.with_name(path.name + ".lock")), timeout=lock_timeout)
        self._cache: tuple[tuple[int, int, int], ProjectsFile] | None = None
        #: Each project as this store last wrote or read it, with its entry's bytes: a write re-encodes and a
        #: read re-validates only the projects whose entry changed. Replaced whole, never edited in place.
        self._entries: dict[str, tuple[Project, bytes]] = {}
        #: Calls waiting to be committed, and whether one of them is committing (the leader): see update.
        self._pending: list[_Commit] = []
        self._leading = False
        self._guard = threading.Lock()
        #: Threads of this process queue here, not on the file: only one of them polls the file lock, so
        #: many concurrent calls in ``devclaw serve`` do not burn the CPU polling it (reentrant, as the
        #: file lock is for one thread).
        self._threads = threading.RLock()

    def read(self) -> ProjectsFile:
        """The current file, validated. A missing file is an empty registry."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return ProjectsFile()
        except OSError as exc:
            raise ConfigError(f"Cannot read {self.path}: {exc.strerror}") from exc
        key = (info.st_mtime_ns, info.st_size, info.st_ino)
        cached = self._cache
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            raw = _read_regular_file(self.path, MAX_STATE_BYTES)
        except FileNotFoundError:
            return ProjectsFile()
        except OSError as exc:
            raise ConfigError(f"Cannot read {self.path}: {exc.strerror}") from exc
        state = self._parse_changed(raw)
        if state is None:
            try:
                state = ProjectsFile.model_validate_json(raw)
            except ValidationError as exc:
                raise ConfigError(f"{self.path} is not a valid devclaw projects file: {describe_invalid(exc)}") from exc
        self._cache = (key, state)
        return state

    def _parse_changed(self, raw: bytes) -> ProjectsFile | None:
        """The file as written by ``write``, validating only the projects whose entry changed since this
        store last wrote or read it (another process's commit changes a few); None for any other file,
        which is then parsed whole."""
        split = _split_entries(raw)
        if split is None:
            return None
        head, entries = split
        parsed: dict[str, tuple[Project, bytes]] = {}
        try:
            for group_id, entry, value in entries:
                known = self._entries.get(group_id)
                project = known[0] if known and known[1] == entry else Project.model_validate_json(value)
                parsed[group_id] = (project, entry)
            top = ProjectsFile.model_validate_json(head)
        except ValidationError:
            return None  # parsed whole, for the error that names the field
        self._entries = parsed
        return top.model_copy(update={"projects": {group_id: project for group_id, (project, _) in parsed.items()}})

    @contextlib.contextmanager
    def locked(self) -> Iterator[ProjectsFile]:
        """Hold the file lock for a whole read-check-write (rebuild); yields the file as read under it."""
        started = time.monotonic()
        if not self._threads.acquire(timeout=self.lock_timeout):
            raise StateError(self._busy())
        try:
            try:
                # The lock is held for one short write: poll often, a 50 ms default would be most of the wait.
                left = max(0.0, self.lock_timeout - (time.monotonic() - started))
                self._lock.acquire(timeout=left, poll_interval=0.002)
            except filelock.Timeout:
                raise StateError(self._busy()) from None
            except OSError as exc:
                raise StateError(f"Cannot lock {self.path}: {exc.strerror or exc}") from exc
            try:
                yield self.read()
            finally:
                self._lock.release()
        finally:
            self._threads.release()

    def _busy(self) -> str:
        return (
            f"{self.path} is locked by another devclaw call (waited {self.lock_timeout:g} s); "
            "try again, or raise DEVCLAW_LOCK_TIMEOUT if calls are slow"
        )

    def update(self, change: Callable[[ProjectsFile], ProjectsFile]) -> ProjectsFile:
        """Re-read the file under the lock, ``change`` it (a function returning the new file, never
        mutating the one it is given) and write the result. The lock is held for this alone.

        Concurrent calls of this process are committed together (a group commit): one call at a time
        leads, applying every change queued meanwhile, in order, each to the result of the one before,
        and writing the file once; the others wait for their group or their turn to lead. A change that
        raises is left out and its caller gets the error; a failed write fails every change of the group.
        Each caller gets the file as its change made it.
        """
        commit = _Commit(change)
        with self._guard:
            self._pending.append(commit)
            if not self._leading:
                self._leading = commit.leads = True
        if not commit.leads and not commit.woken.wait(timeout=self.lock_timeout):
            with self._guard:
                given_up = commit in self._pending and not commit.leads
                if given_up:
                    self._pending.remove(commit)
            if given_up:
                raise StateError(self._busy())
            commit.woken.wait()  # its group is being written, or it was just made the leader
        if commit.leads:
            try:
                self._commit_group()
            finally:
                self._hand_over()
        return commit.outcome()

    def _commit_group(self) -> None:
        with self._guard:
            group, self._pending = self._pending, []
        try:
            with self.locked() as state:
                changed = False
                for commit in group:
                    try:
                        commit.result = state = commit.change(state)
                        changed = True
                    except Exception as exc:  # noqa: BLE001 - re-raised in its own caller; the others go on
                        commit.error = exc
                if changed:
                    self.write(state)
        except BaseException as exc:
            for commit in group:
                if commit.error is None:
                    commit.error, commit.result = exc, None
            raise
        finally:
            for commit in group:
                commit.woken.set()

    def _hand_over(self) -> None:
        """The next queued call leads the next group; waking it alone (not every waiter in turn, each
        taking the GIL to find its work done) keeps a busy serve from queueing on the handover."""
        with self._guard:
            if not self._pending:
                self._leading = False
                return
            successor = self._pending[0]
            successor.leads = True
        successor.woken.set()

    def write(self, state: ProjectsFile) -> None:
        """Atomically replace the file. Call only inside ``locked()``."""
        assert self._lock.is_locked, "ProjectStore.write outside locked()"
        data = self._serialize(state)
        try:
            try:
                _atomic_write(self.path, data, self.backup_path)
            except FileNotFoundError:  # the first write: make the folder then, not on every write
                self.path.parent.mkdir(parents=True, exist_ok=True)
                _atomic_write(self.path, data, self.backup_path)
            info = self.path.stat()
        except OSError as exc:
            raise StateError(f"Cannot write {self.path}: {exc.strerror or exc}") from exc
        self._cache = ((info.st_mtime_ns, info.st_size, info.st_ino), state)

    def _serialize(self, state: ProjectsFile) -> bytes:
        # Projects that did not change are the same objects as at the last write: reuse their encoded
        # entry, so a commit costs about the same with 1,000 projects as with 10 (formatting them all was
        # most of the time).
        head = state.model_dump_json(by_alias=True, indent=2, exclude={"projects"})
        entries = {gid: self._entry(gid, project) for gid, project in state.projects.items()}
        self._entries = entries
        body = b"{\n" + b",\n".join(entry for _, entry in entries.values()) + b"\n  }" if entries else b"{}"
        return head[:-2].encode() + b',\n  "projects": ' + body + b"\n}\n"

    def _entry(self, group_id: str, project: Project) -> tuple[Project, bytes]:
        known = self._entries.get(group_id)
        # Equal, not only the same object: after a read of a file another process wrote, every project is
        # a new object, and comparing one costs a quarter of encoding it.
        if known is not None and (known[0] is project or known[0] == project):
            return known
        text = textwrap.indent(project.model_dump_json(by_alias=True, indent=2), "    ")[4:]
        return project, f"    {json.dumps(group_id)}: {text}".encode()


_HEAD = b'{\n  "version": 2,\n'  # what write puts first, in this schema version
_PROJECTS_START = b',\n  "projects": {\n'
_PROJECTS_END = b"\n  }\n}\n"
_NEXT_ENTRY = b',\n    "'  # a project's key: JSON strings hold no newline, deeper keys are indented more


def _split_entries(raw: bytes) -> tuple[bytes, list[tuple[str, bytes, bytes]]] | None:
    """The file's head (as a file with no projects) and its projects as (group id, entry, value bytes),
    if ``raw`` is laid out as ``ProjectStore.write`` lays it out; otherwise None."""
    at = raw.find(_PROJECTS_START)
    if not raw.startswith(_HEAD) or at < 0 or not raw.endswith(_PROJECTS_END):
        return None
    head, body = raw[:at] + b"\n}", raw[at + len(_PROJECTS_START) : -len(_PROJECTS_END)]
    entries = []
    for n, piece in enumerate(body.split(_NEXT_ENTRY)):
        entry = piece if n == 0 else b'    "' + piece
        colon = entry.find(b'": ', 4)
        try:
            group_id = json.loads(entry[4 : colon + 1]) if entry.startswith(b'    "') and colon > 0 else None
        except ValueError:
            return None
        if not isinstance(group_id, str):
            return None
        entries.append((group_id, entry, entry[colon + 3 :]))
    return head, entries


@dataclass(eq=False)
class _Commit:
    """One ``ProjectStore.update`` waiting for its group to be written."""

    change: Callable[[ProjectsFile], ProjectsFile]
    result: ProjectsFile | None = None
    error: BaseException | None = None
    leads: bool = False
    #: Set when its group was written (or failed), or when it becomes the leader of the next group.
    woken: threading.Event = field(default_factory=threading.Event)

    def outcome(self) -> ProjectsFile:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def _read_regular_file(path: Path, limit: int) -> bytes:
    # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused right after.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(
                f"{path} is not a regular file (a {_kind(info.st_mode)}); devclaw keeps its state in a plain "
                "file: move it away and restore a copy, or run `devclaw state rebuild`"
            )
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ConfigError(f"{path} is larger than {limit // (1024 * 1024)} MB: not a devclaw projects file")
    return data


def _kind(mode: int) -> str:
    kinds = {stat.S_ISFIFO: "named pipe", stat.S_ISCHR: "character device", stat.S_ISBLK: "block device",
             stat.S_ISDIR: "folder", stat.S_ISSOCK: "socket"}  # fmt: skip
    return next((name for test, name in kinds.items() if test(mode)), "special file")


def _atomic_write(path: Path, data: bytes, backup: Path) -> None:
    # A symlinked projects.json (kept in a dotfiles repo, say) is written through: its target is the file
    # replaced, so the link stays a link and the target never goes stale.
    path = Path(os.path.realpath(path)) if path.is_symlink() else path
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            _link_backup(path, backup)
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _link_backup(path: Path, backup: Path) -> None:
    # The file we are replacing was read and validated under this same lock: it is the last good one.
    tmp = backup.with_name(f".{backup.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(path, tmp)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copy2(path, tmp)  # a symlink's target on another file system: no hard link possible
    try:
        tmp.replace(backup)
    except OSError:
        tmp.unlink()
        raise


def describe_invalid(exc: ValidationError, prefix: str = "") -> str:
    """A validation failure in one line: each problem's place in the file and what is wrong there."""
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in (prefix, *error["loc"]) if part != "")
        message = error["msg"].removeprefix("Value error, ")  # our own checks name their setting already
        problems.append(f"{where}: {message}" if where else message)
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")
