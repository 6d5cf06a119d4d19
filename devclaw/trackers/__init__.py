"""Tracker providers: one typed registry from provider name to a factory.

A provider's module imports its HTTP library at module level, so it is imported only when a project
uses that provider: python-gitlab and PyGithub cost 0.1-0.2 s each to import.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from devclaw.trackers.base import Issue, Tracker

if TYPE_CHECKING:
    from devclaw.state import Project

TrackerFactory = Callable[["Project", Path], Tracker]


def _local(project: Project, memory_dir: Path) -> Tracker:
    from devclaw.trackers.local import LocalTracker

    return LocalTracker(memory_dir / "tracker.sqlite3", project.tracker.path or project.name)


def _gitlab(project: Project, memory_dir: Path) -> Tracker:
    from devclaw.trackers.gitlab import GitLabTracker

    return GitLabTracker.from_project(project)


def _github(project: Project, memory_dir: Path) -> Tracker:
    from devclaw.trackers.github import GitHubTracker

    return GitHubTracker.from_project(project)


PROVIDERS: dict[str, TrackerFactory] = {"local": _local, "gitlab": _gitlab, "github": _github}


def open_tracker(project: Project, memory_dir: Path) -> Tracker:
    """The tracker of ``project``; makes no request."""
    return PROVIDERS[project.tracker.provider](project, memory_dir)


__all__ = ["PROVIDERS", "Issue", "Tracker", "open_tracker"]
