"""devclaw's errors: one root, a few kinds, one mapping to what users see.

    DevclawError                  every error a user can act on; ``type`` names its kind
     +-- InputError               a call's arguments: bad JSON, unknown tool, a missing or wrong field
     +-- NotFoundError            a project or issue that does not exist
     +-- WorkflowError            a move the workflow forbids, a worker busy or idle, a label that moved
          +-- ChangeRequiredError DEV "done" without the merged merge/pull request the project requires
     +-- ConfigError              projects.json unreadable or invalid, a token variable missing
     +-- StateError               projects.json could not be locked or written
     +-- TrackerError             the issue tracker failed, refused or could not be reached
          +-- TrackerAuthError    the token was refused (401/403)
     +-- InternalError            a bug: its traceback and the version are in memory/crash.log

Library errors are converted where the library is called, with the original kept as ``__cause__``.
``error_payload`` is the one place an exception becomes the ``{"type", "message"}`` users see.
"""

from __future__ import annotations

import importlib.metadata
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar


class DevclawError(Exception):
    type: ClassVar[str] = "error"
    exit_code: ClassVar[int] = 1

    @property
    def message(self) -> str:
        return str(self)


class InputError(DevclawError):
    type = "invalid_input"
    exit_code = 2


class NotFoundError(DevclawError):
    type = "not_found"


class WorkflowError(DevclawError):
    type = "workflow"


class ChangeRequiredError(WorkflowError):
    """Its own type, so the work loop can hand the refusal's next step back to the worker."""

    type = "change_required"


class ConfigError(DevclawError):
    type = "config"


class StateError(DevclawError):
    type = "state"


class TrackerError(DevclawError):
    type = "tracker"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TrackerAuthError(TrackerError):
    type = "tracker_auth"


INTERNAL_EXIT_CODE = 3
CRASH_LOG = "crash.log"


class InternalError(DevclawError):
    """A bug, with the evidence kept: the message names the file holding the traceback."""

    type = "internal"
    exit_code = INTERNAL_EXIT_CODE


def record_crash(exc: BaseException, memory: Path) -> InternalError:
    """Append ``exc``'s traceback and devclaw's version to ``memory/crash.log``; the error to show."""
    from devclaw.redact import redact

    summary = f"internal error ({type(exc).__name__}): {exc}"
    path = memory / CRASH_LOG
    text = "".join(traceback.format_exception(exc))
    entry = f"--- {datetime.now(UTC).isoformat(timespec='seconds')} devclaw {_version()}\n{redact(text)}\n"
    try:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(entry)
    except OSError:
        return InternalError(
            f"{summary}. Please report it with the command you ran (the crash log {path} could not be written)"
        )
    return InternalError(f"{summary}. Its traceback and devclaw's version are in {path}: please report it")


def _version() -> str:
    try:
        return importlib.metadata.version("devclaw")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def error_payload(exc: BaseException) -> dict[str, str]:
    """What a user sees of any failure: our own message, or a one-line summary of a bug."""
    from devclaw.redact import redact

    if isinstance(exc, DevclawError):
        return {"type": exc.type, "message": redact(exc.message)}
    return {"type": "internal", "message": redact(f"internal error ({type(exc).__name__}): {exc}")}


def exit_code(exc: BaseException) -> int:
    return exc.exit_code if isinstance(exc, DevclawError) else INTERNAL_EXIT_CODE
