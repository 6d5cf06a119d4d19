"""A project's own workflow, loaded from projects.json: a renamed label and an extra state drive pickup,
complete, health, the board and a person's move; an invalid one is refused with the setting named and
nothing written. Real subprocesses for the CLI, the embedded tracker in a tmp workspace."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from devclaw.workspace import Workspace
from tests.conftest import GROUP, call, snapshot
from tests.test_changes import devclaw

CUSTOM = {
    "states": {"To Do": {"label": "Backlog"}, "Blocked": {"colour": "#000000"}},
    "transitions": {"Testing": {"qa_refine": "Blocked"}, "Blocked": {"human": "To Do"}},
}


def error_of(done: subprocess.CompletedProcess[str]) -> str:
    """The message of a refused command: in its JSON on stdout (commands that print JSON), else on stderr."""
    assert done.returncode != 0 and "Traceback" not in done.stderr
    message: str = json.loads(done.stdout)["error"]["message"] if done.stdout.strip() else done.stderr
    return message


def labels_created(ws: Workspace, tmp_path: Path, workflow: Mapping[str, object]) -> list[str]:
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(workflow))
    added = devclaw(ws, "project", "add", GROUP, "--name", "webapp", "--workflow", str(path))
    assert added.returncode == 0, added.stderr
    created: list[str] = json.loads(added.stdout)["labelsCreated"]
    return created


def test_a_renamed_label_and_an_extra_state_drive_the_tools_health_and_the_board(ws: Workspace, tmp_path: Path) -> None:
    created = labels_created(ws, tmp_path, CUSTOM)
    assert "Backlog" in created and "Blocked" in created and "To Do" not in created

    made = devclaw(ws, "issue", "create", GROUP, "--title", "Add login page", "--label", "backlog")
    assert made.returncode == 0, made.stderr
    issue = json.loads(made.stdout)["id"]
    assert json.loads(made.stdout)["labels"] == ["Backlog"]
    assert call(ws, "queue_status", projectGroupId=GROUP)["projects"][0]["queue"]["toDo"][0]["id"] == issue

    picked = call(ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="dev")
    assert picked["labelTransition"] == "To Do → Doing"  # states keep their built-in names in results
    call(ws, "task_complete", projectGroupId=GROUP, role="dev", result="done")
    call(ws, "task_pickup", projectGroupId=GROUP, issueId=issue, role="qa")
    refined = call(ws, "task_complete", projectGroupId=GROUP, role="qa", result="refine", summary="which login?")
    assert refined["labelTransition"] == "Testing → Blocked"
    shown = json.loads(devclaw(ws, "issue", "show", GROUP, str(issue)).stdout)
    assert shown["labels"] == ["Blocked"]

    # Health: an issue on the extra state is a person's to move; nothing to report, twice.
    for _ in range(2):
        assert call(ws, "session_health", autoFix=True, activeSessions=[])["issues"] == []

    board = devclaw(ws, "status", GROUP)
    assert board.returncode == 0, board.stderr
    assert "Backlog:" in board.stdout and "To Do:" not in board.stdout
    (blocked,) = [line for line in board.stdout.splitlines() if line.strip().startswith("Blocked:")]
    assert f"#{issue} Add login page" in blocked and "devclaw issue label ... 'Backlog'" in blocked

    moved = devclaw(ws, "issue", "label", GROUP, str(issue), "Backlog")
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["labels"] == ["Backlog"]
    refused = devclaw(ws, "issue", "label", GROUP, str(issue), "Doing")
    assert "people move Planning -> Backlog; Refining -> Backlog; Blocked -> Backlog" in error_of(refused)


@pytest.mark.parametrize(
    ("workflow", "message"),
    [
        ({"transitions": {"Testing": {"qa_refine": "Limbo"}}}, 'workflow.transitions.Testing.qa_refine: no state "Limbo"'),
        ({"states": {"To Do": {"colour": "blue"}}}, 'workflow.states.To Do.colour: "blue" is not a colour'),
        ({"states": {"To Do": {"name": "Backlog"}}}, "workflow.states.To Do.name: Extra inputs are not permitted"),
        ({"transitions": {"Doing": {"dev_done": 7}}}, "workflow.transitions.Doing.dev_done: Input should be a valid string"),
    ],
)  # fmt: skip
def test_an_invalid_workflow_is_refused_naming_the_setting_and_nothing_is_written(
    ws: Workspace, tmp_path: Path, workflow: dict[str, object], message: str
) -> None:
    assert devclaw(ws, "project", "add", GROUP, "--name", "webapp").returncode == 0
    before = snapshot(ws)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(workflow))
    refused = devclaw(ws, "project", "edit", GROUP, "--workflow", str(path))
    assert message in error_of(refused)
    assert snapshot(ws) == before


def test_an_invalid_workflow_written_into_projects_json_by_hand_is_named_on_read(ws: Workspace) -> None:
    assert devclaw(ws, "project", "add", GROUP, "--name", "webapp").returncode == 0
    data = json.loads(ws.store.path.read_text())
    data["projects"][GROUP]["workflow"] = {"transitions": {"Blocked": {"human": "To Do"}}}
    ws.store.path.write_text(json.dumps(data))
    listed = devclaw(ws, "project", "list")
    assert f'projects.{GROUP}: workflow.transitions.Blocked: no state "Blocked"' in error_of(listed)


@pytest.mark.parametrize(
    ("first", "then", "label"),
    [
        (["--review", "human"], ["--review", "skip"], "To Review"),
        ([], ["--workflow", "RENAME"], "To Do"),
    ],
)
def test_a_change_that_would_strand_issues_on_a_dropped_label_is_refused(
    ws: Workspace, tmp_path: Path, first: list[str], then: list[str], label: str
) -> None:
    rename = tmp_path / "rename.json"
    rename.write_text(json.dumps({"states": {"To Do": {"label": "Backlog"}}}))
    assert devclaw(ws, "project", "add", GROUP, "--name", "webapp", *first).returncode == 0
    made = devclaw(ws, "issue", "create", GROUP, "--title", "Held", "--label", label)
    issue = json.loads(made.stdout)["id"]
    before = snapshot(ws)
    refused = devclaw(ws, "project", "edit", GROUP, *[str(rename) if arg == "RENAME" else arg for arg in then])
    message = error_of(refused)
    assert f'Issue #{issue} is on "{label}" in webapp, which this change takes out of the workflow' in message
    assert f"devclaw issue label {GROUP} ISSUE Planning --force" in message
    assert snapshot(ws) == before
