"""dev done pulls the project's checkout: against a real bare repository, no shell, never fatal."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devclaw.git import pull_ff_only
from devclaw.workspace import Workspace
from tests.conftest import GROUP, add_local_project, call, local_tracker, new_issue


def git(cwd: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e",
           "HOME": str(cwd), "PATH": "/usr/bin:/bin"}  # fmt: skip
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def checkout(tmp_path: Path) -> tuple[Path, Path]:
    """A bare 'origin', the project's checkout of it, and a second clone that pushes new work."""
    origin, work, other = tmp_path / "origin.git", tmp_path / "webapp", tmp_path / "other"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    git(tmp_path, "clone", "-q", str(origin), str(work))
    (work / "README").write_text("v1\n")
    git(work, "add", "README")
    git(work, "commit", "-q", "-m", "v1")
    git(work, "push", "-q", "origin", "main")
    git(tmp_path, "clone", "-q", str(origin), str(other))
    (other / "README").write_text("v2\n")
    git(other, "commit", "-q", "-am", "v2")
    git(other, "push", "-q", "origin", "main")
    return work, other


def test_dev_done_pulls_the_merged_work(ws: Workspace, checkout: tuple[Path, Path]) -> None:
    work, _ = checkout
    add_local_project(ws, repo=str(work))
    issue = new_issue(local_tracker(ws))
    call(ws, "task_pickup", issueId=issue, role="dev", projectGroupId=GROUP)
    result = call(ws, "task_complete", role="dev", result="done", projectGroupId=GROUP)
    assert result["gitPull"] == "success"
    assert (work / "README").read_text() == "v2\n"
    assert list(ws.audit.records(event="task_complete"))[-1]["gitPull"] == "success"


def test_diverged_checkout_is_a_warning_not_a_failure(ws: Workspace, checkout: tuple[Path, Path]) -> None:
    work, _ = checkout
    (work / "README").write_text("local change\n")
    git(work, "commit", "-q", "-am", "local")
    add_local_project(ws, repo=str(work))
    issue = new_issue(local_tracker(ws))
    call(ws, "task_pickup", issueId=issue, role="dev", projectGroupId=GROUP)
    result = call(ws, "task_complete", role="dev", result="done", projectGroupId=GROUP)
    assert result["gitPull"].startswith(f"warning: git pull failed in {work}:")
    assert local_tracker(ws).get_issue(issue).labels == ("To Test",)


def test_missing_repo_and_credentials_in_output(tmp_path: Path) -> None:
    assert pull_ff_only(str(tmp_path / "nope")) == f"warning: repo {tmp_path / 'nope'} does not exist; nothing pulled"
    repo = tmp_path / "r"
    git(tmp_path, "init", "-q", str(repo))
    git(repo, "remote", "add", "origin", "http://user:s3cr3t-pass@127.0.0.1:9/x.git")
    (repo / "f").write_text("x")
    git(repo, "add", "f")
    git(repo, "commit", "-q", "-m", "x")
    warning = pull_ff_only(str(repo), timeout=20)
    assert warning.startswith("warning:") and "s3cr3t-pass" not in warning
