"""projects.json: validation, migration of DevClaw's shape, atomic locked writes, concurrent writers."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import filelock
import pytest

from devclaw.errors import ConfigError, StateError
from devclaw.state import ProjectsFile, ProjectStore
from devclaw.tools import call_tool
from devclaw.trackers.local import LocalTracker
from devclaw.workflow import Label
from devclaw.workspace import Workspace
from tests.conftest import GROUP, PYTHON, add_local_project, local_tracker, new_issue

DEVCLAW_SHAPE = {
    "projects": {
        GROUP: {
            "name": "webapp", "repo": "~/git/webapp", "groupName": "Dev - Webapp", "deployUrl": "",
            "baseBranch": "main", "deployBranch": "main",
            "dev": {"active": True, "sessionId": "agent:main:subagent:abc", "issueId": "42",
                    "startTime": "2026-02-01T10:00:00.000Z", "model": "sonnet"},
            "qa": {"active": False, "sessionId": None, "issueId": None, "startTime": None, "model": None},
        }
    }
}  # fmt: skip


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "Invalid JSON"),
        (
            '{"version": 1, "projects": {"-1": {"name": "x", "dev": {"active": "maybe"}}}}',
            "projects.-1.workers.dev.0.active",
        ),
        ('{"version": 3, "projects": {}}', "version: Input should be 2"),
        ('{"version": 1, "projects": {"-1": {"name": "x", "tracker": {"provider": "jira"}}}}', "tracker.provider"),
        ('{"version": 1, "projects": {"-1": {"name": "x", "colour": "blue"}}}', "colour: Extra inputs"),
    ],
)
def test_bad_file_is_a_clear_error_and_untouched(ws: Workspace, content: str, problem: str) -> None:
    ws.store.path.write_text(content)
    for tool, params in [("queue_status", {}), ("task_pickup", {"issueId": 1, "role": "dev", "projectGroupId": "-1"}),
                         ("session_health", {"autoFix": True})]:  # fmt: skip
        with pytest.raises(ConfigError) as caught:
            call_tool(ws, tool, params)
        assert str(ws.store.path) in caught.value.message and problem in caught.value.message
    assert ws.store.path.read_text() == content
    assert not ws.store.backup_path.exists()


def test_devclaw_shaped_file_loads_and_is_rewritten_only_on_change(ws: Workspace) -> None:
    original = json.dumps(DEVCLAW_SHAPE, indent=2)
    ws.store.path.write_text(original)
    state = ws.store.read()
    project = state.project(GROUP)
    assert project.tracker.provider == "gitlab" and project.worker("dev").issue_id == 42 and state.version == 2
    status = call_tool(ws, "session_health", {})  # read-only: must not rewrite the file
    assert status["issuesFound"] >= 1 and ws.store.path.read_text() == original
    ws.store.update(lambda s: s)  # the next change, whatever it is, writes the new shape
    written = json.loads(ws.store.path.read_text())
    assert written["version"] == 2 and written["projects"][GROUP]["tracker"]["provider"] == "gitlab"
    worker = written["projects"][GROUP]["workers"]["dev"][0]
    assert worker["sessionId"] == "agent:main:subagent:abc" and worker["issueId"] == 42 and worker["active"]
    assert ws.store.backup_path.read_text() == original
    assert ws.store.read().model_dump() == state.model_dump()  # the round trip keeps everything


def test_version_1_file_loads_and_round_trips(ws: Workspace) -> None:
    v1 = {"version": 1, "projects": {GROUP: {**DEVCLAW_SHAPE["projects"][GROUP], "tracker": {"provider": "local"}}}}
    ws.store.path.write_text(json.dumps(v1))
    state = ws.store.read()
    assert state.project(GROUP).worker("dev").issue_id == 42 and state.project(GROUP).worker("qa").active is False
    ws.store.update(lambda s: s)
    assert ws.store.read().model_dump() == state.model_dump()


def test_lock_timeout_is_a_clear_error(ws: Workspace, tracker: LocalTracker) -> None:
    store = ProjectStore(ws.store.path, lock_timeout=0.2)
    holder = filelock.FileLock(str(ws.store.path) + ".lock")
    with holder, pytest.raises(StateError, match=r"locked by another devclaw call \(waited 0.2 s\)"), store.locked():
        pass


def test_lock_timeout_from_environment(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVCLAW_LOCK_TIMEOUT", "soon")
    with pytest.raises(
        ConfigError, match=r"DEVCLAW_LOCK_TIMEOUT must be a number of seconds \(0 or more\), got 'soon'"
    ):
        Workspace(ws.root).store  # noqa: B018 (the property raises)


RACE = """
import json, sys
from pathlib import Path
from devclaw.errors import DevclawError
from devclaw.tools import call_tool
from devclaw.workspace import Workspace
ws = Workspace(Path(sys.argv[1]))
try:
    result = call_tool(ws, "task_pickup", {"issueId": int(sys.argv[2]), "role": "dev", "projectGroupId": sys.argv[3]})
    print(json.dumps({"won": result["issueId"]}))
except DevclawError as exc:
    print(json.dumps({"lost": exc.message}))
"""


def test_eight_processes_race_for_one_worker(ws: Workspace, tracker: LocalTracker) -> None:
    issues = [new_issue(tracker, f"issue {n}") for n in range(8)]
    procs = [subprocess.Popen([PYTHON, "-c", RACE, str(ws.root), str(i), GROUP], stdout=subprocess.PIPE, text=True)
             for i in issues]  # fmt: skip
    outcomes = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    winners = [o["won"] for o in outcomes if "won" in o]
    assert len(winners) == 1, outcomes
    assert all("DEV worker already active on webapp" in o["lost"] for o in outcomes if "lost" in o)
    state = ws.store.read()
    assert state.project(GROUP).worker("dev").issue_id == winners[0]
    assert [i for i in issues if tracker.get_issue(i).label is Label.DOING] == winners
    records = [json.loads(line) for line in ws.audit.path.read_text().splitlines()]
    assert sum(r["event"] == "task_pickup" for r in records) == 1
    assert sum(r["event"] == "error" for r in records) == 7


def test_concurrent_updates_to_different_projects_are_all_kept(ws: Workspace) -> None:
    groups = [f"-100{n}" for n in range(8)]
    for n, group in enumerate(groups):
        add_local_project(ws, group, f"p{n}")
        new_issue(local_tracker(ws, f"p{n}"))
    procs = [subprocess.Popen([PYTHON, "-c", RACE, str(ws.root), "1", g], stdout=subprocess.PIPE, text=True)
             for g in groups]  # fmt: skip
    outcomes = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all("won" in o for o in outcomes), outcomes
    state = ws.store.read()
    assert all(state.project(g).worker("dev").active for g in groups)


def test_calls_queued_behind_a_commit_are_written_together_each_with_its_own_outcome(ws: Workspace) -> None:
    add_local_project(ws, "-1001", "first")
    add_local_project(ws, "-1002", "second")
    writing, go_on = threading.Event(), threading.Event()

    def renamed(group: str, name: str) -> Callable[[ProjectsFile], ProjectsFile]:
        def change(state: ProjectsFile) -> ProjectsFile:
            if group == "-1001":  # the first call holds the lock until the others are queued behind it
                writing.set()
                assert go_on.wait(timeout=60)
            project = state.projects[group].model_copy(update={"name": name})
            return state.model_copy(update={"projects": {**state.projects, group: project}})

        return change

    def refused(state: ProjectsFile) -> ProjectsFile:
        raise ConfigError("this change is refused")

    # Counting the store's writes: the file alone cannot tell one write of two changes from two writes.
    writes: list[ProjectsFile] = []
    real_write = ws.store.write

    def counted_write(state: ProjectsFile) -> None:
        writes.append(state)
        real_write(state)

    ws.store.write = counted_write  # type: ignore[method-assign]
    with ThreadPoolExecutor(max_workers=3) as pool:
        first = pool.submit(ws.store.update, renamed("-1001", "one"))
        assert writing.wait(timeout=60)
        bad = pool.submit(ws.store.update, refused)
        second = pool.submit(ws.store.update, renamed("-1002", "two"))
        while len(ws.store._pending) < 2:  # both queued (the store's own queue: nothing else tells)
            time.sleep(0.01)
        go_on.set()
        assert first.result(timeout=60).projects["-1001"].name == "one"
        with pytest.raises(ConfigError, match="this change is refused"):
            bad.result(timeout=60)
        after = second.result(timeout=60)
    assert (after.projects["-1001"].name, after.projects["-1002"].name) == ("one", "two")  # in order
    assert len(writes) == 2  # the first alone, then the two queued behind it in one write
    on_disk = ProjectStore(ws.store.path).read()
    assert (on_disk.projects["-1001"].name, on_disk.projects["-1002"].name) == ("one", "two")


def test_a_call_queued_past_the_lock_timeout_is_refused_and_never_applied(ws: Workspace) -> None:
    add_local_project(ws, "-1001", "first")
    store = ProjectStore(ws.store.path, lock_timeout=0.3)
    writing, go_on = threading.Event(), threading.Event()

    def held(state: ProjectsFile) -> ProjectsFile:
        writing.set()
        assert go_on.wait(timeout=60)
        return state

    def rename(state: ProjectsFile) -> ProjectsFile:
        project = state.projects["-1001"].model_copy(update={"name": "late"})
        return state.model_copy(update={"projects": {"-1001": project}})

    with ThreadPoolExecutor(max_workers=1) as pool:
        holder = pool.submit(store.update, held)
        assert writing.wait(timeout=60)
        with pytest.raises(StateError, match=r"is locked by another devclaw call \(waited 0.3 s\)"):
            store.update(rename)
        go_on.set()
        holder.result(timeout=60)
    assert store.read().projects["-1001"].name == "first"


def test_no_temp_files_left_behind(ws: Workspace, tracker: LocalTracker) -> None:
    call_tool(ws, "task_pickup", {"issueId": new_issue(tracker), "role": "dev", "projectGroupId": GROUP})
    leftovers = [p.name for p in Path(ws.memory).iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_a_file_another_store_wrote_is_read_validating_only_the_projects_it_changed(tmp_path: Path) -> None:
    from devclaw.state import Project, TrackerConfig, Worker

    path = tmp_path / "projects.json"
    mine, theirs = ProjectStore(path), ProjectStore(path)  # two processes sharing the file
    state = ProjectsFile(
        projects={f"-100{n}": Project(name=f"p-{n}", tracker=TrackerConfig(provider="local")) for n in range(5)}
    )
    mine.update(lambda _: state)
    before = mine.read()

    def activate(current: ProjectsFile) -> ProjectsFile:
        project = current.project("-1002")
        worker = Worker(active=True, issue_id=7, session_id='s\n"ü')
        changed = project.model_copy(update={"workers": {**project.workers, "dev": [worker]}})
        return current.model_copy(update={"projects": {**current.projects, "-1002": changed}})

    theirs.update(activate)
    after = mine.read()
    assert after == ProjectsFile.model_validate_json(path.read_bytes())
    assert [after.projects[g] is before.projects[g] for g in after.projects] == [True, True, False, True, True]
    assert after.project("-1002").worker("dev").session_id == 's\n"ü'
    # A file written by hand (another layout) is parsed whole, as before.
    path.write_text(json.dumps(json.loads(path.read_bytes()), indent=4))
    assert ProjectStore(path).read() == after
