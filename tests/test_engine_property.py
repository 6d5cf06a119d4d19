"""A property of the engine: random interleavings of every tool and health over three projects with two
DEV and two QA slots each never leave work that nobody tracks, or that two workers track.

After every step, and after a last ``session_health`` with autoFix: every active worker's issue is on its role's
active label, and every open issue on an active label has exactly one active worker of that role.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devclaw.errors import DevclawError
from devclaw.workflow import DEFAULT
from devclaw.workspace import Workspace
from tests.conftest import add_local_project, call, local_tracker, new_issue

GROUPS = ["-1001", "-1002", "-1003"]
ISSUES = 4
RESULTS = {"dev": ["done"], "qa": ["pass", "fail", "refine"]}

project_index = st.integers(0, len(GROUPS) - 1)
issue_number = st.integers(1, ISSUES)
role = st.sampled_from(["dev", "qa"])
actions = st.one_of(
    st.tuples(st.just("pickup"), project_index, role, issue_number),
    st.tuples(st.just("confirm"), project_index, role, issue_number),
    st.tuples(st.just("complete"), project_index, role, st.integers(0, 2), st.none() | issue_number),
    st.tuples(st.just("health"), st.booleans(), st.booleans()),
)


def fresh_workspace(root: Path) -> Workspace:
    ws = Workspace(root / "ws")
    ws.memory.mkdir(parents=True)
    for n, group in enumerate(GROUPS):
        add_local_project(ws, group, name=f"p{n}")
        tracker = local_tracker(ws, f"p{n}")
        for i in range(ISSUES):
            new_issue(tracker, f"Task {i}")
    data = json.loads(ws.store.path.read_text())
    for group in GROUPS:
        data["projects"][group]["maxWorkers"] = {"dev": 2, "qa": 2}
    ws.store.path.write_text(json.dumps(data))
    return ws


def session(group: str, role_name: str, issue: int) -> str:
    return f"agent:main:subagent:{group}-{role_name}-{issue}"


def perform(ws: Workspace, action: tuple[Any, ...], sessions: set[str]) -> None:
    kind = action[0]
    try:
        if kind == "pickup":
            _, p, role_name, issue = action
            call(ws, "task_pickup", projectGroupId=GROUPS[p], issueId=issue, role=role_name)
        elif kind == "confirm":
            _, p, role_name, issue = action
            name = session(GROUPS[p], role_name, issue)
            call(ws, "task_pickup_confirm", projectGroupId=GROUPS[p], role=role_name, issueId=issue, sessionId=name)
            sessions.add(name)
        elif kind == "complete":
            _, p, role_name, result, issue = action
            results = RESULTS[role_name]
            where: dict[str, Any] = {} if issue is None else {"issueId": issue}
            call(
                ws,
                "task_complete",
                projectGroupId=GROUPS[p],
                role=role_name,
                result=results[result % len(results)],
                **where,
            )
        else:
            _, late, alive = action
            seen = replace(ws, clock=lambda: ws.clock() + timedelta(minutes=10)) if late else ws
            call(seen, "session_health", autoFix=True, activeSessions=sorted(sessions) if alive else [])
    except DevclawError:
        pass  # a refusal is a valid answer; the invariant is about what the accepted calls left


def violations(ws: Workspace) -> list[str]:
    state = ws.store.read()
    found = []
    for n, group in enumerate(GROUPS):
        project = state.project(group)
        tracker = local_tracker(ws, f"p{n}")
        for role_name in DEFAULT.roles:
            label = DEFAULT.roles[role_name].active_label
            on_label = {i.id for i in tracker.list_issues(label) if i.state == "open"}
            workers = Counter(int(w.issue_id) for _, w in project.active_slots(role_name) if w.issue_id is not None)
            for issue, count in workers.items():
                if count > 1:
                    found.append(f"{group} {role_name}: {count} workers on #{issue}")
                if issue not in on_label:
                    found.append(f"{group} {role_name}: worker on #{issue}, which is not on {label}")
            for issue in on_label - set(workers):
                found.append(f"{group} {role_name}: #{issue} on {label} with no worker")
    return found


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(actions, min_size=1, max_size=25))
def test_no_interleaving_leaves_untracked_or_doubly_tracked_work(steps: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as root:
        ws = fresh_workspace(Path(root))
        sessions: set[str] = set()
        for n, step in enumerate(steps):
            perform(ws, step, sessions)
            # No fault is injected and the embedded tracker's moves are transactions: it holds throughout.
            assert violations(ws) == [], steps[: n + 1]
        call(ws, "session_health", autoFix=True, activeSessions=sorted(sessions))
        assert violations(ws) == [], steps


CRASH_AT = ["after_tracker_write", "after_state_commit", "during_audit_append"]
crash = st.tuples(st.just("crash"), project_index, role, issue_number, st.sampled_from(CRASH_AT), st.booleans())


def crash_step(ws: Workspace, action: tuple[Any, ...]) -> None:
    """A pickup or completion in a real child process, SIGKILLed at a step boundary of its apply."""
    import os
    import subprocess
    import sys

    _, p, role_name, issue, point, completing = action
    if completing:
        tool, params = (
            "task_complete",
            {"projectGroupId": GROUPS[p], "role": role_name, "issueId": issue, "result": RESULTS[role_name][0]},
        )
    else:
        tool, params = "task_pickup", {"projectGroupId": GROUPS[p], "role": role_name, "issueId": issue}
    argv = [sys.executable, "-m", "devclaw.cli", "--workspace", str(ws.root), "call", tool, json.dumps(params)]
    subprocess.run(argv, env={**os.environ, "DEVCLAW_CRASH_AT": point}, capture_output=True, timeout=120, check=False)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(actions, crash), min_size=1, max_size=12))
def test_after_crashes_one_health_run_restores_the_invariant(steps: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as root:
        ws = fresh_workspace(Path(root))
        sessions: set[str] = set()
        crashed = False
        for step in steps:
            if step[0] == "crash":
                crash_step(ws, step)
                crashed = True
                continue
            perform(ws, step, sessions)
            if step[0] == "health":
                crashed = False  # autoFix ran: what any crash left is repaired
            if not crashed:
                assert violations(ws) == [], steps
        call(ws, "session_health", autoFix=True, activeSessions=sorted(sessions))
        assert violations(ws) == [], steps
        assert call(ws, "session_health", autoFix=True, activeSessions=sorted(sessions))["fixesApplied"] == 0, steps
