"""Tracker providers: one typed registry from provider name to a factory.

A provider's module imports its HTTP library at module level, so it is imported only when a project
uses that provider: python-gitlab and PyGithub cost 0.1-0.2 s each to import.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from devclaw.trackers.base import Issue, Tracker

if TYPE_CHECKING:
    from devclaw.state import Project

TrackerFactory = Callable[["Project", Path], Tracker]


def _local(project: Project, memory_dir: Path) -> Tracker:
    from devclaw.trackers.local import LocalTracker

    return LocalTracker(
        memory_dir / "tracker.sqlite3", project.tracker.path or project.name, project.effective_workflow()
    )


def _gitlab(project: Project, memory_dir: Path) -> Tracker:
    from devclaw.trackers.gitlab import GitLabTracker

    return GitLabTracker.from_project(project)


def _github(project: Project, memory_dir: Path) -> Tracker:
    from devclaw.trackers.github import GitHubTracker

    return GitHubTracker.from_project(project)


PROVIDERS: dict[str, TrackerFactory] = {"local": _local, "gitlab": _gitlab, "github": _github}
#: The environment variable a provider reads its token from when the project names none.
DEFAULT_TOKEN_ENV: dict[str, str] = {"gitlab": "GITLAB_TOKEN", "github": "GITHUB_TOKEN"}


def client_key(project: Project) -> str:
    """What a tracker client depends on: its configuration and (as a digest, never the value) its token,
    so a reused client is never one made with another token (or another workflow)."""
    variable = project.tracker.token_env or DEFAULT_TOKEN_ENV.get(project.tracker.provider)
    token = os.environ.get(variable, "") if variable else ""
    digest = hashlib.sha256(token.encode()).hexdigest()[:16]
    return project.model_dump_json(include={"name", "repo", "tracker", "review", "workflow"}) + digest


def open_tracker(project: Project, memory_dir: Path) -> Tracker:
    """The tracker of ``project``; makes no request."""
    return PROVIDERS[project.tracker.provider](project, memory_dir)


__all__ = ["DEFAULT_TOKEN_ENV", "PROVIDERS", "Issue", "Tracker", "client_key", "open_tracker"]
