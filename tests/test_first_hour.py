"""What a new user meets in the first hour, through the real ``devclaw`` command: commands that never damage
a workspace, one shape for errors, input that cannot hurt."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import GROUP, OTHER_GROUP, PYTHON
from tests.test_cli import devclaw, failed, ok

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    ok(devclaw(path, "project", "add", GROUP, "--name", "webapp", "--group-name", "Dev - Webapp",
               "--base-branch", "develop", "--deploy-url", "https://webapp.example"))  # fmt: skip
    return path


def projects(root: Path) -> dict[str, dict[str, object]]:
    data: dict[str, dict[str, object]] = json.loads((root / "memory" / "projects.json").read_text())["projects"]
    return data


# 1. demo never plays over a real workspace, and removes its own temporary folder when it fails.


def test_demo_refuses_a_folder_that_holds_anything(root: Path) -> None:
    before = (root / "memory" / "projects.json").read_bytes()
    done = devclaw(root, "demo")
    assert done.returncode == 2 and f"devclaw: {root} is not empty" in done.stderr
    assert "new or empty folder" in done.stderr and done.stdout == ""
    assert (root / "memory" / "projects.json").read_bytes() == before
    assert not (root / "memory" / "tracker.sqlite3").exists() or "demo" not in done.stdout


def test_demo_in_a_new_folder_and_after_the_subcommand(tmp_path: Path) -> None:
    target = tmp_path / "try"
    done = devclaw(None, "demo", "--workspace", str(target))
    assert done.returncode == 0, done.stderr
    assert f"devclaw demo in {target}" in done.stdout and (target / "memory" / "projects.json").exists()


def test_demo_removes_its_temporary_folder_when_it_fails(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # A lock timeout the demo cannot use makes it fail after it made its folder.
    env = {**os.environ, "TMPDIR": str(tmp), "DEVCLAW_LOCK_TIMEOUT": "-1"}
    done = devclaw(None, "demo", env=env)
    assert done.returncode == 1 and "DEVCLAW_LOCK_TIMEOUT" in done.stderr
    assert list(tmp.iterdir()) == []


# 2. project add refuses an existing id; edit changes only what is given; remove refuses active work.


def test_project_add_refuses_an_existing_group_id(root: Path) -> None:
    before = projects(root)
    message = failed(devclaw(root, "project", "add", GROUP, "--name", "other"), 2, "invalid_input")
    assert "already registered" in message and f"devclaw project edit {GROUP}" in message
    assert projects(root) == before


def test_project_edit_changes_only_the_given_fields(root: Path) -> None:
    edited = ok(devclaw(root, "project", "edit", GROUP, "--deploy-branch", "production"))
    assert edited["updated"] is True
    project = projects(root)[GROUP]
    assert project["deployBranch"] == "production" and project["groupName"] == "Dev - Webapp"
    assert project["baseBranch"] == "develop" and project["deployUrl"] == "https://webapp.example"
    assert project["name"] == "webapp"
    assert "Nothing to change" in failed(devclaw(root, "project", "edit", GROUP), 2, "invalid_input")
    assert "not found" in failed(devclaw(root, "project", "edit", OTHER_GROUP, "--name", "x"), 1, "not_found")


def test_project_remove_refuses_an_active_worker_unless_forced(root: Path) -> None:
    ok(devclaw(root, "issue", "create", GROUP, "--title", "Add login", "--label", "To Do"))
    ok(devclaw(root, "call", "task_pickup", json.dumps({"issueId": 1, "role": "dev", "projectGroupId": GROUP})))
    message = failed(devclaw(root, "project", "remove", GROUP), 1, "workflow")
    assert "active DEV worker" in message and "--force" in message and GROUP in projects(root)
    removed = ok(devclaw(root, "project", "remove", GROUP, "--force"))
    assert removed["removed"] == "webapp" and projects(root) == {}
    record = json.loads((root / "memory" / "audit.log").read_text().splitlines()[-1])
    assert record["event"] == "project_remove" and record["groupId"] == GROUP and record["forced"] is True


# 3. Two projects never share one embedded tracker.


def test_a_second_project_may_not_take_the_same_embedded_tracker(root: Path) -> None:
    message = failed(devclaw(root, "project", "add", OTHER_GROUP, "--name", "webapp"), 2, "invalid_input")
    assert "embedded tracker 'webapp' already belongs to project" in message and "--path" in message
    assert list(projects(root)) == [GROUP]
    ok(devclaw(root, "project", "add", OTHER_GROUP, "--name", "webapp", "--path", "webapp-2"))
    ok(devclaw(root, "issue", "create", GROUP, "--title", "Only in the first", "--label", "To Do"))
    assert ok(devclaw(root, "issue", "list", OTHER_GROUP, "--json")) == []


# 4. --repo is stored absolute; a missing or non-git folder is a warning; ~nobody-here is an input error.


def test_repo_is_stored_absolute_with_warnings(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (tmp_path / "plain").mkdir()
    done = devclaw(ws, "project", "add", GROUP, "--name", "a", "--repo", "plain", cwd=tmp_path)
    assert ok(done)["project"]["repo"] == str(tmp_path / "plain")
    assert "is not a git checkout" in done.stderr
    done = devclaw(ws, "project", "add", OTHER_GROUP, "--name", "b", "--repo", "~/git/b")
    assert ok(done)["project"]["repo"] == str(tmp_path / "home" / "git" / "b") and "does not exist" in done.stderr


def test_an_unknown_home_in_repo_is_an_input_error(root: Path) -> None:
    before = projects(root)
    done = devclaw(root, "project", "edit", GROUP, "--repo", "~no-such-user-here/webapp")
    assert "cannot expand ~no-such-user-here" in failed(done, 2, "invalid_input")
    assert projects(root) == before


# 5. A reader that stops early is not an error.


@pytest.mark.parametrize("command", [["tools"], ["audit"], ["audit", "--json"]])
def test_a_closed_pipe_is_not_an_internal_error(root: Path, command: list[str]) -> None:
    with (root / "memory" / "audit.log").open("a") as log:  # more than a pipe holds
        log.write((json.dumps({"event": "x", "ts": "2026-01-01", "pad": "y" * 5000}) + "\n") * 100)
    shell = subprocess.run(
        f"set -o pipefail; {PYTHON} -m devclaw --workspace {root} {' '.join(command)} | head -c 10 >/dev/null",
        shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shell.returncode == 0 and shell.stderr == "", shell.stderr


# 11. The board shows the issues waiting for a person; issue create without --label lands on Planning.


def test_board_shows_refining_and_planning_and_create_defaults_to_planning(root: Path) -> None:
    done = devclaw(root, "issue", "create", GROUP, "--title", "Someday: dark mode")
    assert ok(done)["labels"] == ["Planning"] and "is on Planning" in done.stderr
    board = devclaw(root, "status").stdout
    assert "Planning:   #1 Someday: dark mode" in board and "Refining:   -" in board
    assert "\033[" not in board  # not a terminal: no colour


def test_tables_on_a_terminal_are_coloured_unless_no_color(root: Path) -> None:
    ok(devclaw(root, "issue", "create", GROUP, "--title", "Add login", "--label", "To Do"))
    assert "\033[1m" in _on_a_terminal(root, "issue", "list", GROUP)
    plain = _on_a_terminal(root, "issue", "list", GROUP, env={"NO_COLOR": "1"})
    assert "\033[" not in plain and "#1  To Do  Add login" in plain
    listing = devclaw(root, "project", "list").stdout
    assert listing.splitlines()[0].split() == ["GROUP", "ID", "NAME", "TRACKER", "REPO", "DEV", "QA"]
    assert f"{GROUP}  webapp" in listing


def _on_a_terminal(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    leader, follower = pty.openpty()
    process = subprocess.Popen([PYTHON, "-m", "devclaw", "--workspace", str(root), *args], stdout=follower,
                               stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})  # fmt: skip
    os.close(follower)
    output = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the follower side closed
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert process.wait(timeout=60) == 0
    return output.decode().replace("\r\n", "\n")


# 13. One rule for errors: JSON on stdout for JSON commands (and --json), a devclaw: line otherwise.


def test_errors_follow_one_rule(root: Path) -> None:
    for args in (["project", "add", "", "--name", "x"], ["state", "rebuild"], ["issue", "show", OTHER_GROUP, "1"],
                 ["project", "list", "--json", "--workspace", str(root / "nope")]):  # fmt: skip
        done = devclaw(root, *args)
        assert done.returncode in (1, 2) and json.loads(done.stdout)["success"] is False and done.stderr == "", args
    for args in (
        ["status", OTHER_GROUP],
        ["audit", "--since", "yesterday"],
        ["project", "list", "--workspace", "/nope"],
    ):
        done = devclaw(root, *args)
        assert done.returncode in (1, 2) and done.stdout == "" and done.stderr.startswith("devclaw: "), args


# 14. A mistyped workspace is never silent, and never becomes a workspace.


def test_a_missing_workspace_is_named_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    done = devclaw(missing, "status")
    assert done.returncode == 1 and f"{missing} is not a devclaw workspace" in done.stderr
    assert f"devclaw init {missing}" in done.stderr
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    failed(devclaw(wrong, "call", "queue_status", "{}"), 1, "config")
    assert list(wrong.iterdir()) == []
    init = devclaw(None, "init", str(wrong))
    assert init.returncode == 0 and (wrong / "memory").is_dir()
    assert "No projects yet in" in devclaw(None, "status", "--workspace", str(wrong)).stdout


# 15. --version, help on everything, did-you-mean, empty titles, an idle stdin.


def test_version_and_did_you_mean() -> None:
    version = devclaw(None, "--version")
    assert version.returncode == 0 and version.stdout.startswith("devclaw 0.")
    typo = devclaw(None, "stauts")
    assert typo.returncode == 2 and "did you mean: status?" in typo.stderr


def test_every_option_and_positional_has_help() -> None:
    import argparse

    from devclaw.cli import _parser

    missing = []
    pending = [("devclaw", _parser())]
    while pending:
        name, parser = pending.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending += [(f"{name} {sub}", p) for sub, p in action.choices.items()]
                helped = {choice.dest for choice in action._choices_actions if choice.help}
                missing += [f"{name} {sub}" for sub in action.choices if sub not in helped]
            elif not action.help:
                missing.append(f"{name} {action.dest}")
    assert missing == []


def test_empty_titles_are_refused(root: Path) -> None:
    assert "--title must not be empty" in failed(devclaw(root, "issue", "create", GROUP, "--title", "  "), 2,
                                                  "invalid_input")  # fmt: skip


def test_call_does_not_wait_on_an_idle_stdin(root: Path) -> None:
    # stdin is a pipe that stays open and silent: the call must answer with {} as its parameters.
    process = subprocess.Popen([PYTHON, "-m", "devclaw", "--workspace", str(root), "call", "queue_status"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert process.stdout is not None
        out = process.stdout.read()  # returns at the process's exit; a hang is bounded by the suite's timeout
        assert process.wait(timeout=60) == 0 and json.loads(out)["success"] is True
    finally:
        assert process.stdin is not None and process.stderr is not None
        process.stdin.close()
        process.stderr.close()
        process.stdout.close() if process.stdout else None
        if process.poll() is None:
            process.kill()
    dash = devclaw(root, "call", "queue_status", "-", stdin=json.dumps({"projectGroupId": GROUP}))
    assert [p["groupId"] for p in ok(dash)["projects"]] == [GROUP]


# 16. Input that cannot hurt: lock timeouts, projects.json that is not a plain file, read-only, deep nesting.


@pytest.mark.parametrize("value", ["nan", "-1", "inf"])
def test_lock_timeouts_that_would_wait_forever_are_refused(root: Path, value: str) -> None:
    env = {**os.environ, "DEVCLAW_LOCK_TIMEOUT": value}
    message = failed(devclaw(root, "call", "queue_status", "{}", env=env), 1, "config")
    assert f"DEVCLAW_LOCK_TIMEOUT must be a number of seconds (0 or more), got '{value}'" in message


def test_a_fifo_dev_zero_or_huge_projects_file_is_refused(root: Path) -> None:
    state = root / "memory" / "projects.json"
    state.unlink()
    os.mkfifo(state)
    assert "is not a regular file (a named pipe)" in failed(devclaw(root, "call", "queue_status", "{}"), 1, "config")
    state.unlink()
    state.symlink_to("/dev/zero")
    assert "(a character device)" in failed(devclaw(root, "call", "queue_status", "{}"), 1, "config")
    state.unlink()
    with state.open("wb") as handle:
        handle.truncate(200 * 1024 * 1024)  # sparse: 200 MB that take no disk
    assert "larger than 32 MB" in failed(devclaw(root, "call", "queue_status", "{}"), 1, "config")


@pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("setpriv") is None, reason="root needs setpriv to drop to nobody"
)
def test_a_read_only_workspace_is_refused_before_anything_changes(root: Path) -> None:
    ok(devclaw(root, "issue", "create", GROUP, "--title", "Add login", "--label", "To Do"))
    # pytest's temporary folders are private to their owner: the user "nobody" needs a folder it can reach.
    shared = Path(tempfile.mkdtemp())
    shared.chmod(0o755)
    root = Path(shutil.copytree(root, shared / "ws"))
    before = {p.name: p.read_bytes() for p in (root / "memory").iterdir() if p.is_file()}
    for path in [root / "memory", *(root / "memory").iterdir()]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    prefix = NOBODY if os.geteuid() == 0 else []  # root ignores file modes: run as nobody
    calls = [["call", "task_pickup", json.dumps({"issueId": 1, "role": "dev", "projectGroupId": GROUP})],
             ["issue", "label", GROUP, "1", "Doing", "--force"], ["project", "edit", GROUP, "--name", "x"]]  # fmt: skip
    try:
        for args in calls:
            done = subprocess.run([*prefix, PYTHON, "-m", "devclaw", "--workspace", str(root), *args],
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
            assert done.returncode == 1, done.stdout + done.stderr
            error = json.loads(done.stdout)["error"]
            assert error["type"] == "state" and "is read-only" in error["message"], error
        assert {p.name: p.read_bytes() for p in (root / "memory").iterdir() if p.is_file()} == before
    finally:
        for path in [root / "memory", *(root / "memory").iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(shared)


def test_deeply_nested_params_are_an_input_error(root: Path) -> None:
    deep = '{"projectGroupId": ' + "[" * 5000 + "]" * 5000 + "}"
    assert "nested too deeply" in failed(devclaw(root, "call", "queue_status", deep), 2, "invalid_input")
    medium = '{"summary": ' + "[" * 200 + "]" * 200 + "}"
    assert "nested too deeply" in failed(devclaw(root, "call", "task_complete", medium), 2, "invalid_input")


# 17. Group ids are normalised and checked in one place, for commands and tools alike.


@pytest.mark.parametrize("bad", ["", "   ", "100\n200", "100 200", "x" * 65])
def test_bad_group_ids_are_refused_everywhere(tmp_path: Path, bad: str) -> None:
    ws = tmp_path / "ws"
    assert "Invalid group id" in failed(devclaw(ws, "project", "add", bad, "--name", "x"), 2, "invalid_input")
    assert not (ws / "memory" / "projects.json").exists()


def test_group_ids_are_stripped_for_commands_and_tools(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ok(devclaw(ws, "project", "add", f" {GROUP}\n", "--name", "webapp"))
    assert list(projects(ws)) == [GROUP]
    ok(devclaw(ws, "issue", "create", f"{GROUP} ", "--title", "Add login", "--label", "To Do"))
    picked = ok(devclaw(ws, "call", "task_pickup",
                        json.dumps({"issueId": 1, "role": "dev", "projectGroupId": f"  {GROUP}\n"})))  # fmt: skip
    assert picked["labelTransition"] == "To Do → Doing"
    message = failed(devclaw(ws, "call", "queue_status", json.dumps({"projectGroupId": "-1\n2"})), 2, "invalid_input")
    assert "Invalid group id" in message


# 18. A symlinked projects.json stays a link; its target is what gets written.


def test_a_symlinked_projects_file_is_written_through(root: Path, tmp_path: Path) -> None:
    state = root / "memory" / "projects.json"
    target = tmp_path / "dotfiles" / "projects.json"
    target.parent.mkdir()
    state.rename(target)
    state.symlink_to(target)
    ok(devclaw(root, "project", "edit", GROUP, "--deploy-branch", "production"))
    assert state.is_symlink() and state.resolve() == target
    assert json.loads(target.read_text())["projects"][GROUP]["deployBranch"] == "production"
