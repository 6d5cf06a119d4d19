"""The audit log is in commit order: racing processes, with a slow ``git pull`` inside DEV done, leave a log
whose replay reproduces projects.json's workers exactly."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from devclaw.state import Project, TrackerConfig
from devclaw.workspace import Workspace
from tests.conftest import PYTHON, local_tracker

GROUPS = ("-1001", "-1002")
ISSUES = 6

RACER = """
import sys
from pathlib import Path
from devclaw.errors import DevclawError
from devclaw.tools import call_tool
from devclaw.workspace import Workspace
ws, racer = Workspace(Path(sys.argv[1])), sys.argv[2]
def call(tool, **params):
    try:
        return call_tool(ws, tool, params)
    except DevclawError:
        return None
for group in sys.argv[4:]:
    for issue in range(1, int(sys.argv[3]) + 1):
        for role, result in (("dev", "done"), ("qa", "pass")):
            picked = call("task_pickup", issueId=issue, role=role, projectGroupId=group)
            if picked is None or picked.get("repeated"):
                continue  # another racer has it
            if picked["sessionAction"] == "spawn":
                call("task_pickup_confirm", projectGroupId=group, role=role, sessionId=f"{racer}-{group}-{role}")
            call("task_complete", role=role, result=result, projectGroupId=group, issueId=issue)
"""


def slow_checkout(tmp_path: Path) -> Path:
    """A checkout whose ``git pull`` takes a while: its origin's upload-pack sleeps first."""
    origin, repo = tmp_path / "origin.git", tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    subprocess.run(["git", "clone", "-q", str(origin), str(repo)], check=True, capture_output=True)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "start"], check=True)
    subprocess.run([*git, "push", "-q", "origin", "HEAD"], check=True, capture_output=True)
    subprocess.run([*git[:3], "branch", "-q", "--set-upstream-to", "origin/master"], check=False, capture_output=True)
    slow = "sh -c 'sleep 0.3; exec git-upload-pack \"$@\"' --"
    subprocess.run(["git", "-C", str(repo), "config", "remote.origin.uploadpack", slow], check=True)
    return repo


def replay(ws: Workspace) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The workers as the audit log tells their story, line by line, in the order written."""
    workers: dict[tuple[str, str, int], dict[str, Any]] = {}
    for record in ws.audit.records():
        event, key = record["event"], (str(record.get("groupId")), str(record.get("role")), record.get("slot", 0))
        worker = workers.setdefault(key, {"active": False, "issueId": None, "sessionId": None})
        if event == "task_pickup":
            worker.update(active=True, issueId=record["issue"], sessionId=record["sessionId"])
        elif event == "task_pickup_confirm":
            worker["sessionId"] = record["sessionId"]
        elif event in ("task_complete", "task_release", "health_fix"):
            worker.update(active=False, issueId=None)
    return workers


def test_racing_processes_with_a_slow_git_pull_leave_a_log_that_replays_to_the_state(
    ws: Workspace, tmp_path: Path
) -> None:
    from devclaw.registry import register_project

    repo = slow_checkout(tmp_path)
    for n, group in enumerate(GROUPS):
        project = Project(name=f"p{n}", repo=str(repo), tracker=TrackerConfig(provider="local", path=f"p{n}"))
        register_project(ws, group, project)
        for issue in range(ISSUES):
            local_tracker(ws, f"p{n}").create_issue(f"task {issue}", "", ("To Do",))
    racers = [
        subprocess.Popen(
            [PYTHON, "-c", RACER, str(ws.root), f"r{k}", str(ISSUES), *GROUPS], stderr=subprocess.PIPE, text=True
        )
        for k in range(4)
    ]
    assert all(racer.wait(timeout=600) == 0 for racer in racers), [r.stderr.read() for r in racers if r.stderr]
    # Which racer wins each step is up to the scheduler: an issue whose every visit found its worker busy is
    # still queued. One more pass, alone, finishes those, so the counts below do not depend on timing.
    subprocess.run([PYTHON, "-c", RACER, str(ws.root), "sweep", str(ISSUES), *GROUPS], check=True, timeout=600)
    completes = [r for r in ws.audit.records(event="task_complete")]
    assert len(completes) == 2 * ISSUES * len(GROUPS)  # every issue went through DEV and QA once
    assert [r["gitPull"] for r in completes if r["role"] == "dev"] == ["success"] * ISSUES * len(GROUPS)
    # In commit order, each worker's story alternates: picked up, (confirmed,) completed; a completion line
    # written after the next pickup's (the old DEV done after its git pull) would show two pickups in a row.
    story: dict[tuple[str, str], list[str]] = {}
    for record in ws.audit.records():
        if record["event"] in ("task_pickup", "task_complete"):
            story.setdefault((record["groupId"], record["role"]), []).append(record["event"])
    for key, events in story.items():
        assert events == ["task_pickup", "task_complete"] * (len(events) // 2), key
    state = ws.store.read()
    replayed = replay(ws)
    for group, project in state.projects.items():
        for role, slot, worker in project.every_worker():
            told = replayed.get((group, role, slot), {"active": False, "issueId": None, "sessionId": None})
            assert (worker.active, worker.issue_id, worker.session_id) == (
                told["active"],
                told["issueId"],
                told["sessionId"],
            ), (group, role, json.dumps(told))
