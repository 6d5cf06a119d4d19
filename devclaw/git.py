"""The one git operation devclaw runs itself: a fast-forward pull of a project's checkout."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from devclaw.redact import redact

PULL_TIMEOUT_SECONDS = 30


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
