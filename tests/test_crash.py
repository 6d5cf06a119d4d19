"""Crash injection: each mutating tool runs in a real child process that is SIGKILLed at each step
boundary (``DEVCLAW_CRASH_AT``, see devclaw/faults.py). After every crash the files are whole, and ONE
``session_health {autoFix: true}`` brings tracker labels and worker state back into agreement."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from devclaw.faults import CRASH_ENV, CRASH_POINTS
from devclaw.state import ProjectsFile
from devclaw.trackers.local import LocalTracker
from devclaw.workflow import DEFAULT, Label
from devclaw.workspace import Workspace
from tests.conftest import GROUP, NO_CHANGES, PYTHON, call, local_tracker, new_issue

DEV_SESSION = "agent:main:subagent:dev-1"
QA_SESSION = "agent:main:subagent:qa-1"
Setup = Callable[[Workspace, LocalTracker], dict[str, Any]]


def _to_do(ws: Workspace, tracker: LocalTracker) -> dict[str, Any]:
    return {"issueId": new_issue(tracker), "role": "dev", "projectGroupId": GROUP}


def _to_test(ws: Workspace, tracker: LocalTracker) -> dict[str, Any]:
    return {"issueId": new_issue(tracker, label=Label.TO_TEST), "role": "qa", "projectGroupId": GROUP}


def _dev_active(ws: Workspace, tracker: LocalTracker) -> dict[str, Any]:
    call(ws, "task_pickup", **_to_do(ws, tracker))
    return {"projectGroupId": GROUP, "role": "dev", "sessionId": DEV_SESSION}


def _dev_working(ws: Workspace, tracker: LocalTracker) -> dict[str, Any]:
    call(ws, "task_pickup_confirm", **_dev_active(ws, tracker))
    return {"role": "dev", "result": "done", "projectGroupId": GROUP}


def _qa_working(result: str) -> Setup:
    def setup(ws: Workspace, tracker: LocalTracker) -> dict[str, Any]:
        call(ws, "task_pickup", **_to_test(ws, tracker))
        call(ws, "task_pickup_confirm", projectGroupId=GROUP, role="qa", sessionId=QA_SESSION)
        return {"role": "qa", "result": result, "projectGroupId": GROUP}

    return setup


def _drifted(ws: Workspace, tracker: LocalTracker) -> dict[str, Any]:
    # Health has both kinds of fix to make: a tracker write (an orphan) and a state commit (a moved issue).
    call(ws, "task_pickup", **_to_do(ws, tracker))
    moved = tracker.get_issue(1)
    tracker.move_issue(moved, Label.TO_DO)
    new_issue(tracker, "Orphan", label=Label.TESTING)
    return {"autoFix": True}


# The embedded tracker's move is one transaction: it records no intent (the network trackers' case is below).
LOCAL_POINTS = tuple(point for point in CRASH_POINTS if point != "after_intent")


@dataclass(frozen=True)
class Case:
    tool: str
    setup: Setup
    points: tuple[str, ...] = LOCAL_POINTS

    @property
    def id(self) -> str:
        return f"{self.tool}-{self.setup.__name__.strip('_')}"


CASES = [
    Case("task_pickup", _to_do),
    Case("task_pickup", _to_test),
    Case("task_pickup_confirm", _dev_active, ("after_validation", "after_state_commit", "during_audit_append")),
    Case("task_complete", _dev_working),
    *(Case("task_complete", _qa_working(result)) for result in ("pass", "fail", "refine")),
    Case("session_health", _drifted),
]
RUNS = [
    pytest.param(case, point, id=f"{case.tool}-{i}-{point}") for i, case in enumerate(CASES) for point in case.points
]


def run_killed(ws: Workspace, tool: str, params: dict[str, Any], point: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, CRASH_ENV: point}
    argv = [PYTHON, "-m", "devclaw.cli", "--workspace", str(ws.root), "call", tool, json.dumps(params)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def assert_files_whole(ws: Workspace) -> None:
    ProjectsFile.model_validate_json(ws.store.path.read_bytes())
    data = ws.audit.path.read_bytes()
    assert data.endswith(b"\n")
    for line in data.splitlines():
        assert isinstance(json.loads(line), dict)


def disagreements(ws: Workspace, tracker: LocalTracker) -> list[str]:
    """Every way the tracker's Doing/Testing issues and the workers of projects.json disagree."""
    project = ws.store.read().project(GROUP)
    problems = []
    for role in DEFAULT.roles:
        worker = project.worker(role)
        on_label = {issue.id for issue in tracker.list_issues(DEFAULT.roles[role].active_label)}
        tracked = {int(worker.issue_id)} if worker.active and worker.issue_id else set()
        if on_label != tracked:
            problems.append(
                f"{role}: on {DEFAULT.roles[role].active_label} {sorted(on_label)}, worker tracks {sorted(tracked)}"
            )
    return problems


@pytest.mark.parametrize(("case", "point"), RUNS)
def test_one_health_run_repairs_every_crash(ws: Workspace, tracker: LocalTracker, case: Case, point: str) -> None:
    params = case.setup(ws, tracker)
    lines_before = len(ws.audit.path.read_bytes().splitlines())
    done = run_killed(ws, case.tool, params, point)
    assert done.returncode == -signal.SIGKILL, f"never reached {point}: rc={done.returncode} {done.stderr}"
    assert_files_whole(ws)
    assert len(ws.audit.path.read_bytes().splitlines()) in (lines_before, lines_before + 1)
    repaired = call(ws, "session_health", autoFix=True)
    assert disagreements(ws, tracker) == []
    assert call(ws, "session_health", checkTracker=True)["healthy"] is True, repaired


def test_without_the_variable_nothing_crashes(ws: Workspace, tracker: LocalTracker) -> None:
    params = _to_do(ws, tracker)
    argv = [PYTHON, "-m", "devclaw.cli", "--workspace", str(ws.root), "call", "task_pickup", json.dumps(params)]
    env = {key: value for key, value in os.environ.items() if key != CRASH_ENV}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and json.loads(done.stdout)["labelTransition"] == "To Do → Doing"


def test_a_crash_before_any_write_changes_nothing(ws: Workspace, tracker: LocalTracker) -> None:
    params = _to_do(ws, tracker)
    state, audit = ws.store.path.read_bytes(), ws.audit.path.read_bytes()
    assert run_killed(ws, "task_pickup", params, "after_validation").returncode == -signal.SIGKILL
    assert (ws.store.path.read_bytes(), ws.audit.path.read_bytes()) == (state, audit)
    assert local_tracker(ws).get_issue(1).label is Label.TO_DO


@pytest.mark.parametrize("point", ["after_intent", "after_tracker_write", "after_state_commit"])
@pytest.mark.parametrize("tool", ["task_pickup", "task_complete"])
def test_a_crash_on_a_network_tracker_is_settled_by_its_intent(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, tool: str, point: str
) -> None:
    from devclaw.registry import register_project
    from devclaw.state import Project, TrackerConfig
    from tests.fakes import FakeGitLab, FakeServer

    fake = FakeGitLab("acme/webapp")
    monkeypatch.setenv("FAKE_TOKEN", fake.token)
    with FakeServer(fake) as server:
        config = TrackerConfig(provider="gitlab", path="acme/webapp", base_url=server.url, token_env="FAKE_TOKEN")
        register_project(ws, GROUP, Project(name="webapp", tracker=config, changes=NO_CHANGES))
        issue = fake.project.add("Task", labels=["To Do"])
        params: dict[str, Any] = {"issueId": issue, "role": "dev", "projectGroupId": GROUP}
        if tool == "task_complete":
            call(ws, "task_pickup", **params)
            params = {"role": "dev", "result": "done", "projectGroupId": GROUP}
        done = run_killed(ws, tool, params, point)
        assert done.returncode == -signal.SIGKILL, f"never reached {point}: rc={done.returncode} {done.stderr}"
        assert_files_whole(ws)
        pending = ws.store.read().project(GROUP).intents
        assert len(pending) == (0 if point == "after_state_commit" else 1)
        repaired = call(ws, "session_health", autoFix=True)
        project = ws.store.read().project(GROUP)
        label = fake.project.issues[issue].labels
        assert project.intents == []
        if tool == "task_pickup":
            # the move landed (or not), and the worker agrees with it
            assert project.worker("dev").active is (label == ["Doing"]), (label, repaired)
        elif point == "after_intent":  # the move was never made: DEV is still on it
            assert label == ["Doing"] and project.worker("dev").active is True, (label, repaired)
        else:
            assert label == ["To Test"] and project.worker("dev").active is False, (label, repaired)
        assert call(ws, "session_health", checkTracker=True, activeSessions=[])["fixesApplied"] == 0
