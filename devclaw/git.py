"""The one git operation devclaw runs itself: a fast-forward pull of a project's checkout."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from devclaw.redact import redact

PULL_TIMEOUT_SECONDS = 30
_LOCK_POLL_SECONDS = 0.05


@contextlib.contextmanager
def _one_pull_at_a_time(path: Path, timeout: float) -> Iterator[bool]:
    """Hold an ``flock`` on the checkout's directory for the pull; yields False when ``timeout`` passed first.

    Two projects may share one checkout, and two pulls at once in it fail ("Cannot fast-forward to multiple
    branches": both fetches write FETCH_HEAD). Locking the directory itself leaves no file in the repo; the
    lock belongs to the open descriptor, so it serializes threads of one process as well as processes.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(_LOCK_POLL_SECONDS)
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def pull_ff_only(repo: str, timeout: float = PULL_TIMEOUT_SECONDS) -> str:
    """``git pull --ff-only`` in ``repo`` (no shell): "success", or "warning: <why>" — never raises."""
    if not repo:
        return "warning: no repo configured for this project; nothing pulled"
    path = Path(repo).expanduser()
    if not path.is_dir():
        return f"warning: repo {repo} does not exist; nothing pulled"
    # Never wait for a password prompt: the orchestrator has nobody to type it.
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
    try:
        with _one_pull_at_a_time(path, timeout) as mine:
            if not mine:
                return f"warning: another git pull in {repo} was still running after {timeout:g} s; nothing pulled"
            done = subprocess.run(
                ["git", "-C", str(path), "pull", "--ff-only"],
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                env=env,
                check=False,
            )
    except subprocess.TimeoutExpired:
        return f"warning: git pull timed out after {timeout:g} s in {repo}"
    except OSError as exc:
        return f"warning: could not run git: {exc.strerror or exc}"
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip()).splitlines()
        reason = redact(detail[-1]) if detail else f"exit {done.returncode}"
        return f"warning: git pull failed in {repo}: {reason}"
    return "success"
