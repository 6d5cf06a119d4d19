"""A workspace: the folder whose ``memory/`` holds projects.json, audit.log and the embedded tracker."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from devclaw.audit import AuditLog
from devclaw.errors import ConfigError, StateError
from devclaw.state import DEFAULT_LOCK_TIMEOUT, Project, ProjectStore
from devclaw.trackers import Tracker, client_key, open_tracker

WORKSPACE_ENV = "DEVCLAW_WORKSPACE"
LOCK_TIMEOUT_ENV = "DEVCLAW_LOCK_TIMEOUT"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Workspace:
    root: Path
    clock: Callable[[], datetime] = field(default=_utc_now, compare=False)
    #: One client per project configuration, reused by every call through this workspace (serve keeps
    #: one Workspace per root, so a project's HTTP connection is kept open between calls).
    _trackers: dict[str, Tracker] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def resolve(cls, option: str | None = None) -> Workspace:
        """``--workspace``, else ``$DEVCLAW_WORKSPACE``, else the current directory."""
        chosen = option or os.environ.get(WORKSPACE_ENV) or Path.cwd()
        return cls(Path(chosen).expanduser().resolve())

    @property
    def memory(self) -> Path:
        return self.root / "memory"

    @cached_property
    def store(self) -> ProjectStore:
        return ProjectStore(self.memory / "projects.json", lock_timeout=_lock_timeout())

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog(self.memory / "audit.log")

    def exists(self) -> bool:
        return self.memory.is_dir()

    def require_existing(self) -> Workspace:
        """Refuse a folder that is not a workspace, instead of reading nothing or creating ``memory/`` there."""
        if not self.exists():
            where = "does not exist" if not self.root.exists() else "has no memory/ folder"
            raise ConfigError(
                f"{self.root} is not a devclaw workspace ({where}). Create one with `devclaw init {self.root}`, "
                f"or point to yours with --workspace DIR or ${WORKSPACE_ENV}"
            )
        return self

    def require_writable(self) -> Workspace:
        """Refuse a read-only workspace before a mutating command changes anything (a tracker included)."""
        self.require_existing()
        for path in (self.memory, self.store.path, self.audit.path):
            # one access() per path: a missing file is not read-only (it is created on the first write)
            if not os.access(path, os.W_OK) and (path == self.memory or path.exists()):
                raise StateError(f"{path} is read-only: devclaw cannot record changes in this workspace")
        return self

    def create(self) -> Workspace:
        try:
            self.memory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"Cannot create the workspace {self.memory}: {exc.strerror or exc}") from exc
        return self

    def now_iso(self) -> str:
        return self.clock().astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def tracker(self, project: Project) -> Tracker:
        key = client_key(project)
        found = self._trackers.get(key)
        if found is None:
            found = self._trackers.setdefault(key, open_tracker(project, self.memory))
        return found


def _lock_timeout() -> float:
    raw = os.environ.get(LOCK_TIMEOUT_ENV)
    if not raw:
        return DEFAULT_LOCK_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    # filelock waits forever on a negative timeout, and a NaN or infinite one would too.
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{LOCK_TIMEOUT_ENV} must be a number of seconds (0 or more), got {raw!r}")
    return seconds
