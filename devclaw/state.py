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
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import filelock
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from devclaw.errors import ConfigError, NotFoundError, StateError
from devclaw.workflow import Role

SCHEMA_VERSION: Literal[1] = 1
DEFAULT_LOCK_TIMEOUT = 30.0
#: Far above any real registry (a project is under 1 KB); a bigger file is refused unread.
MAX_STATE_BYTES = 32 * 1024 * 1024


class CamelModel(BaseModel):
    """Our schema: camelCase on disk and on the wire, unknown keys refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Worker(CamelModel):
    active: bool = False
    session_id: str | None = None
    issue_id: str | None = None  # a string in this file, as in DevClaw's own files
    start_time: str | None = None
    model: str | None = None

    def deactivate(self) -> None:
        """Done with the issue; session, model and start time are kept so the session is reused."""
        self.active = False
        self.issue_id = None


class TrackerConfig(CamelModel):
    provider: Literal["local", "gitlab", "github"] = "local"
    path: str | None = None
    base_url: str | None = None
    token_env: str | None = None


class Project(CamelModel):
    name: str
    group_name: str = ""
    repo: str = ""
    base_branch: str = "main"
    deploy_branch: str = "main"
    deploy_url: str = ""
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    dev: Worker = Field(default_factory=Worker)
    qa: Worker = Field(default_factory=Worker)

    def worker(self, role: Role) -> Worker:
        return self.dev if role == "dev" else self.qa


class HealthSettings(CamelModel):
    #: A worker picked up this recently is not judged by its session yet (the spawn may be under way).
    grace_minutes: float = Field(default=5, ge=0)
    #: A worker active for longer than this is reported as stale.
    stale_hours: float = Field(default=2, gt=0)
    #: The loop brake: the QA fail that makes this many for one issue sends it to Refining, not To Improve.
    qa_fail_limit: int = Field(default=3, ge=1)


class ProjectsFile(CamelModel):
    version: Literal[1] = SCHEMA_VERSION
    health: HealthSettings = Field(default_factory=HealthSettings)
    #: Model alias -> full model id, overriding devclaw's defaults (see docs/CONFIGURATION.md).
    models: dict[str, str] = Field(default_factory=dict)
    projects: dict[str, Project] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _migrate_devclaw_shape(cls, data: Any) -> Any:
        # DevClaw's file has no version and no tracker; its issues lived on GitLab (it drove glab).
        # The new shape is written only on the next real change, by whichever tool makes it.
        if not isinstance(data, dict) or "version" in data:
            return data
        projects = data.get("projects")
        if not isinstance(projects, dict):
            return data
        migrated = {}
        for group_id, project in projects.items():
            if isinstance(project, dict) and "tracker" not in project:
                project = {**project, "tracker": {"provider": "gitlab"}}
            migrated[group_id] = project
        return {**data, "version": SCHEMA_VERSION, "projects": migrated}

    def project(self, group_id: str) -> Project:
        try:
            return self.projects[group_id]
        except KeyError:
            available = ", ".join(self.projects) or "none (register one with `devclaw project add`)"
            raise NotFoundError(f"Project not found for groupId: {group_id}. Available: {available}") from None


class ProjectStore:
    """Reads and atomically rewrites ``memory/projects.json``."""

    def __init__(self, path: Path, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self.path = path
        self.backup_path = path.with_name(path.name + ".bak")
        self._lock = filelock.FileLock(str(path.with_name(path.name + ".lock")), timeout=lock_timeout)

    def read(self) -> ProjectsFile:
        """The current file, validated. A missing file is an empty registry."""
        try:
            raw = _read_regular_file(self.path, MAX_STATE_BYTES)
        except FileNotFoundError:
            return ProjectsFile()
        except OSError as exc:
            raise ConfigError(f"Cannot read {self.path}: {exc.strerror}") from exc
        try:
            return ProjectsFile.model_validate_json(raw)
        except ValidationError as exc:
            raise ConfigError(f"{self.path} is not a valid devclaw projects file: {_describe(exc)}") from exc

    @contextlib.contextmanager
    def locked(self) -> Iterator[ProjectsFile]:
        """Hold the lock for a whole read-check-write; yields the file as read under the lock."""
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise StateError(
                f"{self.path} is locked by another devclaw call (waited {self._lock.timeout:g} s); "
                "try again, or raise DEVCLAW_LOCK_TIMEOUT if calls are slow"
            ) from None
        try:
            yield self.read()
        finally:
            self._lock.release()

    def write(self, state: ProjectsFile) -> None:
        """Atomically replace the file. Call only inside ``locked()``."""
        assert self._lock.is_locked, "ProjectStore.write outside locked()"
        text = state.model_dump_json(by_alias=True, indent=2) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.path, text.encode(), self.backup_path)
        except OSError as exc:
            raise StateError(f"Cannot write {self.path}: {exc.strerror or exc}") from exc


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


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error["loc"]) or "file"
        problems.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")
