"""Shared fixtures. Every test runs with a throw-away HOME and no network beyond loopback, so a test
that would touch the real home directory or reach the internet fails instead of passing by luck."""

from __future__ import annotations

import ipaddress
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devclaw.state import ChangeSettings, Project, TrackerConfig
from devclaw.tools import call_tool
from devclaw.trackers.local import LocalTracker
from devclaw.workflow import Label
from devclaw.workspace import Workspace

GROUP = "-1001234567890"
OTHER_GROUP = "-1009876543210"
#: ``changes`` for a project whose tests are not about merge/pull requests: DEV done is taken at the
#: worker's word, with no lookup, as on the embedded tracker (tests/test_changes.py covers the gate).
NO_CHANGES = ChangeSettings(required=False)
NO_CHANGES_JSON = {"required": False, "mustBeMerged": True}


def _is_loopback(address: Any) -> bool:
    if isinstance(address, tuple) and address:
        host = str(address[0])
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False
    return True  # AF_UNIX and friends


@pytest.fixture(autouse=True)
def _isolated(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.delenv("DEVCLAW_WORKSPACE", raising=False)
    monkeypatch.delenv("DEVCLAW_LOCK_TIMEOUT", raising=False)
    if request.node.get_closest_marker("e2e") is not None:
        yield  # the gateway test installs Node and OpenClaw from the registry into its own cache
        return
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: Any) -> Any:
        if not _is_loopback(address):
            raise AssertionError(f"test tried to reach the network: {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    yield


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every ``time.sleep`` the code asks for: how long it chose to wait, which a loaded machine cannot
    change (wall time can). Real sleeps still happen."""
    asked: list[float] = []
    real = time.sleep

    def sleep(seconds: float) -> None:
        asked.append(seconds)
        real(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    return asked


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    workspace = Workspace(tmp_path / "ws")
    workspace.memory.mkdir(parents=True)
    return workspace


def add_local_project(ws: Workspace, group_id: str = GROUP, name: str = "webapp", **fields: Any) -> Project:
    from devclaw.registry import register_project

    project = Project(name=name, tracker=TrackerConfig(provider="local", path=name), **fields)
    register_project(ws, group_id, project)
    return project


def local_tracker(ws: Workspace, name: str = "webapp") -> LocalTracker:
    return LocalTracker(ws.memory / "tracker.sqlite3", name)


@pytest.fixture
def project(ws: Workspace) -> Project:
    return add_local_project(ws)


@pytest.fixture
def tracker(ws: Workspace, project: Project) -> LocalTracker:
    return local_tracker(ws, project.name)


def new_issue(tracker: LocalTracker, title: str = "Add login page", label: Label | None = Label.TO_DO,
              description: str = "A login form.", extra: tuple[str, ...] = ()) -> int:  # fmt: skip
    labels = (*extra, label.value) if label else extra
    return tracker.create_issue(title, description, labels).id


def call(ws: Workspace, tool: str, **params: Any) -> dict[str, Any]:
    return call_tool(ws, tool, params)


def snapshot(ws: Workspace) -> tuple[bytes, bytes, list[tuple[Any, ...]]]:
    """Everything a call may change: projects.json, audit.log and every tracker row."""
    import sqlite3

    state = ws.store.path.read_bytes() if ws.store.path.exists() else b""
    audit = ws.audit.path.read_bytes() if ws.audit.path.exists() else b""
    db = ws.memory / "tracker.sqlite3"
    rows: list[tuple[Any, ...]] = []
    if db.exists():
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT project, number, state, labels FROM issues ORDER BY 1, 2").fetchall()
    return state, audit, rows


def audit_events(ws: Workspace) -> list[str]:
    return [record["event"] for record in ws.audit.records()]


PYTHON = sys.executable
