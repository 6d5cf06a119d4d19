"""The work loop's Python half: ``tick`` and ``release`` on the embedded, GitLab and GitHub trackers.

Request budget per tick (tracker requests, asserted on the remote fakes' logs):
reconcile 2 listings per project (Doing, Testing), then per project with a free slot one listing per queue
label looked at (To Improve, then To Do only when To Improve is empty, To Test), then 2 per dispatch
(task_pickup's read and write). An idle project with empty queues: 2 + 3 = 5; a busy one: 2.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from devclaw.loop import Caps, call_loop, idle_slots
from devclaw.state import Project
from devclaw.tools.pickup import TaskPickupResult
from devclaw.workspace import Workspace
from tests.conftest import GROUP, NO_CHANGES, OTHER_GROUP, PYTHON, add_local_project, call, local_tracker, snapshot
from tests.fakes import KINDS
from tests.test_tool_budgets import DEV_SESSION, QA_SESSION, Setup, budget, registered

PICKUP_FIELDS = {info.alias or name for name, info in TaskPickupResult.model_fields.items() if info.is_required()}


@pytest.fixture(params=KINDS)
def setup(request: pytest.FixtureRequest, ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> Any:
    with registered(request.param, ws, monkeypatch, changes=NO_CHANGES) as made:
        yield made


def tick(ws: Workspace, **params: Any) -> dict[str, Any]:
    return call_loop(ws, "tick", params)


def no_grace(ws: Workspace) -> None:
    """Judge sessions at once (the default 5 minutes of grace would hide a worker that just died)."""
    with ws.store.locked() as state:
        state.health.grace_minutes = 0
        ws.store.write(state)


def test_a_tick_fills_every_free_slot_in_queue_priority_order(setup: Setup) -> None:
    oldest = setup.seed("Oldest to do", ["To Do"])
    setup.seed("Newer to do", ["To Do"])
    fix = setup.seed("Fix after QA", ["To Improve"])
    check = setup.seed("Ready for QA", ["To Test"])
    before = setup.count()
    result = tick(setup.ws, activeSessions=[])
    # reconcile 2 + To Improve 1 (not empty: To Do is not listed) + To Test 1 + 2 pickups x 2
    assert setup.spent(before) == budget(setup, 8)
    [dev, qa] = result["dispatches"]
    assert (dev["role"], dev["issueId"], dev["labelTransition"]) == ("dev", fix, "To Improve → Doing")
    assert (qa["role"], qa["issueId"], qa["labelTransition"]) == ("qa", check, "To Test → Testing")
    assert set(dev) == PICKUP_FIELDS | {"slot"} and dev["slot"] == 0  # a task_pickup result
    assert result["skipped"] == [] and result["freeSlots"] == 2
    assert setup.labels(oldest) == {"To Do"}
    pickups = [r for r in setup.ws.audit.records(event="task_pickup")]
    assert [r["issue"] for r in pickups] == [fix, check]  # the tools' own audit lines


def test_busy_workers_cost_only_the_reconcile(setup: Setup) -> None:
    setup.seed("Task", ["To Do"])
    setup.seed("Other", ["To Do"])
    tick(setup.ws, activeSessions=[])
    call(setup.ws, "task_pickup_confirm", projectGroupId=GROUP, role="dev", sessionId=DEV_SESSION)
    setup.seed("Check", ["To Test"])
    result = tick(setup.ws, activeSessions=[DEV_SESSION])
    assert [d["role"] for d in result["dispatches"]] == ["qa"]
    call(setup.ws, "task_pickup_confirm", projectGroupId=GROUP, role="qa", sessionId=QA_SESSION)
    before = setup.count()
    again = tick(setup.ws, activeSessions=[DEV_SESSION, QA_SESSION])
    assert again["dispatches"] == [] and again["freeSlots"] == 0
    assert again["health"]["issuesFound"] == 0
    assert setup.spent(before) == budget(setup, 2)


def test_an_idle_project_with_empty_queues_costs_five_requests(setup: Setup) -> None:
    before = setup.count()
    result = tick(setup.ws, activeSessions=[])
    assert result["dispatches"] == [] and result["skipped"] == []
    assert setup.spent(before) == budget(setup, 5)


def test_a_dead_session_is_reconciled_and_its_issue_dispatched_again(setup: Setup) -> None:
    no_grace(setup.ws)
    issue = setup.seed("Task", ["To Do"])
    tick(setup.ws, activeSessions=[])
    call(setup.ws, "task_pickup_confirm", projectGroupId=GROUP, role="dev", sessionId=DEV_SESSION)
    # The worker's session is gone; the main session is live (an empty list would mean "unknown").
    result = tick(setup.ws, activeSessions=["agent:main:main"])
    [fixed] = [i for i in result["health"]["issues"] if i["fixed"]]
    assert (fixed["type"], fixed["issueId"]) == ("zombie_session", issue)
    [again] = result["dispatches"]
    assert (again["issueId"], again["sessionAction"]) == (issue, "spawn")  # the dead session is forgotten
    assert setup.labels(issue) == {"Doing"}


def test_dry_run_decides_and_changes_nothing(setup: Setup) -> None:
    issue = setup.seed("Task", ["To Do"])
    state, _, rows = snapshot(setup.ws)
    labels = setup.labels(issue)
    result = tick(setup.ws, activeSessions=[], dryRun=True)
    [plan] = result["dispatches"]
    assert result["dryRun"] is True and (plan["issueId"], plan["role"], plan["dryRun"]) == (issue, "dev", True)
    assert snapshot(setup.ws)[0] == state and snapshot(setup.ws)[2] == rows
    assert setup.labels(issue) == labels


def test_a_tracker_that_cannot_be_read_skips_its_project_only(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    from devclaw.state import TrackerConfig

    add_local_project(ws)
    issue = local_tracker(ws).create_issue("Task", "", ("To Do",)).id
    # As if registered while its token was set (project add needs it); now the variable is gone.
    with ws.store.locked() as state:
        config = TrackerConfig(
            provider="gitlab", path="acme/api", base_url="http://127.0.0.1:9", token_env="NO_SUCH_TOKEN"
        )
        state.projects[OTHER_GROUP] = Project(name="api", tracker=config)
        ws.store.write(state)
    result = tick(ws, activeSessions=[])
    assert [d["issueId"] for d in result["dispatches"]] == [issue]
    [skip] = result["skipped"]
    assert (skip["groupId"], skip["type"]) == (OTHER_GROUP, "tracker_unreadable")
    assert "NO_SUCH_TOKEN" in skip["reason"] and "not judged empty" in skip["reason"]


def test_idle_slots_follow_max_workers(ws: Workspace) -> None:
    from devclaw.state import ProjectsFile, Worker

    project = Project(name="webapp", max_workers={"dev": 3})
    state = ProjectsFile(projects={GROUP: project})
    assert [(s.role, s.index) for s in idle_slots(state)[GROUP]] == [("dev", 0), ("dev", 1), ("dev", 2), ("qa", 0)]
    project.workers["dev"] = [Worker(), Worker(active=True, issue_id=4)]
    assert [(s.role, s.index) for s in idle_slots(state)[GROUP]] == [("dev", 0), ("dev", 2), ("qa", 0)]
    # The caps are not idle_slots' business: a slot counts against them only once a dispatch fills it.
    capped = state.model_copy(update={"max_active_workers": 2, "max_active_workers_per_role": {"qa": 0}})
    assert idle_slots(capped) == idle_slots(state)
    caps = Caps.left(capped)
    assert (caps.room("dev"), caps.room("qa")) == (1, 0)
    caps.take("dev")
    assert not caps.allows("dev") and caps.room("dev") == 0


def _set_caps(ws: Workspace, total: int | None = None, per_role: dict[str, int] | None = None) -> None:
    with ws.store.locked() as state:
        state.max_active_workers = total
        state.max_active_workers_per_role = per_role or {}
        ws.store.write(state)


@pytest.mark.parametrize(("total", "per_role"), [(1, None), (None, {"dev": 1})])
def test_an_idle_slot_with_an_empty_queue_leaves_the_cap_to_a_project_with_work(
    ws: Workspace, total: int | None, per_role: dict[str, int] | None
) -> None:
    add_local_project(ws)  # first in project order, nothing queued
    add_local_project(ws, OTHER_GROUP, "api")
    issue = local_tracker(ws, "api").create_issue("api task", "", ("To Do",)).id
    _set_caps(ws, total, per_role)
    result = tick(ws, activeSessions=["agent:main:main"])
    assert [(d["groupId"], d["issueId"]) for d in result["dispatches"]] == [(OTHER_GROUP, issue)]
    assert ws.store.read().active_count() == 1
    local_tracker(ws, "api").create_issue("api task 2", "", ("To Do",))
    local_tracker(ws).create_issue("webapp task", "", ("To Do",))
    assert tick(ws, activeSessions=["agent:main:main"])["dispatches"] == []  # the cap is used up now


def test_a_cap_already_reached_reads_no_queue(setup: Setup) -> None:
    setup.seed("Task", ["To Do"])
    tick(setup.ws, activeSessions=[])
    call(setup.ws, "task_pickup_confirm", projectGroupId=GROUP, role="dev", sessionId=DEV_SESSION)
    setup.seed("Other", ["To Do"])
    _set_caps(setup.ws, total=1)
    before = setup.count()
    result = tick(setup.ws, activeSessions=[DEV_SESSION])
    assert result["dispatches"] == [] and result["freeSlots"] == 0
    assert setup.spent(before) == budget(setup, 2)  # the reconcile only


def test_release_to_queue_puts_the_issue_back_where_it_came_from(setup: Setup) -> None:
    fix = setup.seed("Fix", ["To Improve"])
    tick(setup.ws, activeSessions=[])
    before = setup.count()
    params = {"projectGroupId": GROUP, "role": "dev", "issueId": fix, "to": "queue", "reason": "spawn failed",
              "fromLabel": "To Improve"}  # fmt: skip
    released = call_loop(setup.ws, "loop_release", params)
    assert released["labelTransition"] == "Doing → To Improve" and setup.labels(fix) == {"To Improve"}
    assert setup.spent(before) == budget(setup, 2)  # one read, one write
    assert setup.ws.store.read().project(GROUP).worker("dev").active is False
    [line] = setup.ws.audit.records(event="task_release")
    assert (line["issue"], line["to"], line["reason"]) == (fix, "queue", "spawn failed")


@pytest.mark.parametrize("role", ["dev", "qa"])
def test_release_to_refining_comments_why(ws: Workspace, role: str) -> None:
    add_local_project(ws)
    tracker = local_tracker(ws)
    issue = tracker.create_issue("Task", "", ("To Do" if role == "dev" else "To Test",)).id
    tick(ws, activeSessions=[])
    params = {"projectGroupId": GROUP, "role": role, "issueId": issue, "to": "refining", "reason": "no verdict"}
    released = call_loop(ws, "loop_release", params)
    assert released["comment"] == "added"
    assert tracker.get_issue(issue).labels == ("Refining",)
    [comment] = tracker.comments(issue)
    assert "Refining" in comment and "Why: no verdict" in comment
    # One decision for every role: a release is not a verdict, so it is no task_complete.
    events = [r["event"] for r in ws.audit.records() if r["event"] in ("task_complete", "task_release")]
    assert events == ["task_release"]
    assert not ws.store.read().project(GROUP).worker(role).active


def test_release_of_a_worker_that_is_not_on_the_issue_is_refused(ws: Workspace) -> None:
    from devclaw.errors import WorkflowError

    add_local_project(ws)
    with pytest.raises(WorkflowError, match="No DEV worker of webapp is active on issue #7"):
        call_loop(ws, "loop_release", {"projectGroupId": GROUP, "role": "dev", "issueId": 7, "to": "queue",
                                       "reason": "x"})  # fmt: skip


def test_queue_status_next_shows_only_what_each_idle_worker_would_take(setup: Setup) -> None:
    setup.seed("Old", ["To Do"])
    fix = setup.seed("Fix", ["To Improve"])
    before = setup.count()
    result = call(setup.ws, "queue_status", next=True)
    [row] = result["projects"]
    assert row["next"] == {"dev": {"id": fix, "title": "Fix", "label": "To Improve"}, "qa": None}
    assert "queue" not in row
    assert setup.spent(before) == budget(setup, 2)  # To Improve (found), To Test (empty); To Do never listed


def test_task_complete_records_the_runs_usage(ws: Workspace) -> None:
    add_local_project(ws)
    local_tracker(ws).create_issue("Task", "", ("To Do",))
    tick(ws, activeSessions=[])
    usage = {"input": 1034, "output": 56, "cacheRead": 200, "cacheWrite": 0, "cost": 0.004, "model": "fake/m"}
    call(ws, "task_complete", projectGroupId=GROUP, role="dev", result="done", usage=usage)
    [line] = ws.audit.records(event="task_complete")
    assert line["usage"] == {"input": 1034, "output": 56, "cacheRead": 200, "cacheWrite": 0, "cost": 0.004}
    assert line["model"] == "fake/m"


def cli(ws: Workspace, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([PYTHON, "-m", "devclaw", "--workspace", str(ws.root), *args], input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert "Traceback" not in done.stderr
    return done


def test_devclaw_tick_and_serve_tick(ws: Workspace) -> None:
    add_local_project(ws)
    issue = local_tracker(ws).create_issue("Task", "", ("To Do",)).id
    dry = cli(ws, "tick", "--dry-run", "--sessions", "")
    assert dry.returncode == 0 and json.loads(dry.stdout)["dispatches"][0]["issueId"] == issue
    request = json.dumps({"id": 1, "tool": "tick", "params": {"activeSessions": []}}) + "\n"
    [line] = cli(ws, "serve", stdin=request).stdout.splitlines()
    answer = json.loads(line)
    assert answer["ok"] is True and answer["result"]["dispatches"][0]["issueId"] == issue
    bad = json.dumps({"id": 2, "tool": "tick", "params": {"dryRun": "maybe"}}) + "\n"
    [line] = cli(ws, "serve", stdin=bad).stdout.splitlines()
    assert json.loads(line)["error"]["type"] == "invalid_input"


def test_devclaw_cost_totals_the_usage_on_task_complete_lines(ws: Workspace) -> None:
    add_local_project(ws)
    lines = [
        ("dev", 1, "fake/a", {"input": 100, "output": 10, "cacheRead": 5, "cacheWrite": 0, "cost": 0.5}),
        ("qa", 1, "fake/b", {"input": 50, "output": 5, "cacheRead": 0, "cacheWrite": 1, "cost": None}),
        ("dev", 2, "fake/a", {"input": 7, "output": 3, "cacheRead": 0, "cacheWrite": 0, "cost": 0.25}),
    ]
    for role, issue, model, usage in lines:
        ws.audit.append("task_complete", project="webapp", groupId=GROUP, issue=issue, role=role, result="done",
                        usage=usage, model=model)  # fmt: skip
    ws.audit.append("task_complete", project="webapp", groupId=GROUP, issue=3, role="dev", result="done")
    total = json.loads(cli(ws, "cost", "--json").stdout)["totals"]
    assert total == [{"key": "all", "tasks": 4, "unmeasured": 1, "input": 157, "output": 18, "cacheRead": 5,
                      "cacheWrite": 1, "cost": 0.75}]  # fmt: skip
    by_model = json.loads(cli(ws, "cost", "--by", "model", "--json").stdout)["totals"]
    assert [(t["key"], t["input"]) for t in by_model] == [("(unknown)", 0), ("fake/a", 107), ("fake/b", 50)]
    issue_one = json.loads(cli(ws, "cost", "--issue", "1", "--by", "role", "--json").stdout)["totals"]
    assert [(t["key"], t["tasks"], t["cost"]) for t in issue_one] == [("dev", 1, 0.5), ("qa", 1, None)]
    readable = cli(ws, "cost", "--by", "issue")
    assert readable.returncode == 0 and "webapp#1" in readable.stdout and "1 task(s) have no usage" in readable.stdout
    assert cli(ws, "cost", "--since", "yesterday").returncode == 2


def test_loop_status_and_doctor_read_loop_json(ws: Workspace, tmp_path: Path) -> None:
    add_local_project(ws)
    off = call(ws, "loop_status")
    assert off["enabled"] is False and "loop.enabled" in off["note"]
    status = {
        "version": 1, "enabled": True, "updatedAt": ws.now_iso(), "tickSeconds": 60, "modelOverride": False,
        "announceChannel": True, "nextTickAt": "2030-01-01T00:00:00Z",
        "lastTick": {"number": 3, "at": ws.now_iso(), "ok": True, "ms": 12, "dispatches": 1, "skipped": 0, "fixes": 0},
        "inFlight": [{"groupId": GROUP, "project": "webapp", "role": "dev", "slot": 0, "issueId": 1,
                      "sessionKey": "agent:main:subagent:x", "runId": "r1", "offset": 4}],
        "feedback": {},
    }  # fmt: skip
    (ws.memory / "loop.json").write_text(json.dumps(status))
    on = call(ws, "loop_status")
    assert on["enabled"] is True and on["running"] is True and on["lastTick"]["dispatches"] == 1
    assert on["inFlight"][0]["sessionKey"] == "agent:main:subagent:x" and "offset" not in on["inFlight"][0]
    report = cli(ws, "doctor").stdout
    assert "work loop" in report and "1 worker run(s): webapp DEV #1" in report
    assert "not allowed: workers run on the default model" in report
    (ws.memory / "loop.json").write_text("{not json")
    assert cli(ws, "doctor").returncode == 1


@pytest.mark.skipif(
    "max_workers" not in Project.model_fields,
    reason="needs N workers per role (projects.json v2 maxWorkers); free_slots switches to it then",
)
def test_two_projects_with_two_dev_workers_each_get_four_dev_runs(ws: Workspace) -> None:
    for group, name in ((GROUP, "webapp"), (OTHER_GROUP, "api")):
        add_local_project(ws, group, name, max_workers={"dev": 2})
        for n in range(3):
            local_tracker(ws, name).create_issue(f"{name} task {n}", "", ("To Do",))
    result = tick(ws, activeSessions=["agent:main:main"])
    dev = [(d["groupId"], d["slot"]) for d in result["dispatches"] if d["role"] == "dev"]
    assert sorted(dev) == sorted([(GROUP, 0), (GROUP, 1), (OTHER_GROUP, 0), (OTHER_GROUP, 1)])
    again = tick(ws, activeSessions=["agent:main:main"])
    assert [d for d in again["dispatches"] if d["role"] == "dev"] == []  # the caps hold


def _two_projects_with_two_dev_slots(ws: Workspace, cap: int | None) -> None:
    add_local_project(ws)
    add_local_project(ws, OTHER_GROUP, "api")
    for name in ("webapp", "api"):
        for n in range(3):
            local_tracker(ws, name).create_issue(f"{name} task {n}", "", ("To Do",))

    def configure(state: Any) -> Any:
        projects = {gid: p.model_copy(update={"max_workers": {"dev": 2}}) for gid, p in state.projects.items()}
        caps = {"dev": cap} if cap is not None else {}
        return state.model_copy(update={"projects": projects, "max_active_workers_per_role": caps})

    ws.store.update(configure)


def test_a_tick_fills_two_dev_slots_in_each_of_two_projects(ws: Workspace) -> None:
    _two_projects_with_two_dev_slots(ws, cap=None)
    result = tick(ws, activeSessions=[])
    dispatched = sorted((d["groupId"], d["slot"], d["issueId"]) for d in result["dispatches"] if d["role"] == "dev")
    assert dispatched == sorted([(OTHER_GROUP, 0, 1), (OTHER_GROUP, 1, 2), (GROUP, 0, 1), (GROUP, 1, 2)])
    state = ws.store.read()
    assert state.active_count("dev") == 4
    # each slot is its own worker: its own session label in the spawn instructions
    labels = {d["instructions"].split('"label": "')[1].split('"')[0] for d in result["dispatches"]}
    assert labels == {"devclaw-webapp-dev", "devclaw-webapp-dev-2", "devclaw-api-dev", "devclaw-api-dev-2"}
    assert tick(ws, activeSessions=[])["dispatches"] == []  # every slot is busy now


def test_a_tick_stops_at_the_workspace_cap(ws: Workspace) -> None:
    _two_projects_with_two_dev_slots(ws, cap=3)
    result = tick(ws, activeSessions=[])
    assert len([d for d in result["dispatches"] if d["role"] == "dev"]) == 3
    assert ws.store.read().active_count("dev") == 3
    with pytest.raises(Exception, match=r"maxActiveWorkersPerRole.dev is 3"):
        call(ws, "task_pickup", issueId=3, role="dev", projectGroupId=OTHER_GROUP)


def test_task_session_names_the_worker_a_completion_would_complete(ws: Workspace) -> None:
    add_local_project(ws, max_workers={"dev": 2})
    first = local_tracker(ws).create_issue("First", "", ("To Do",)).id
    second = local_tracker(ws).create_issue("Second", "", ("To Do",)).id
    for issue, session in ((first, DEV_SESSION), (second, QA_SESSION)):
        call(ws, "task_pickup", issueId=issue, role="dev", projectGroupId=GROUP)
        call(ws, "task_pickup_confirm", projectGroupId=GROUP, role="dev", sessionId=session, issueId=issue)
    before = snapshot(ws)
    found = call_loop(ws, "task_session", {"projectGroupId": GROUP, "role": "dev", "issueId": second})
    worker = ws.store.read().project(GROUP).worker("dev", 1)
    assert (found["slot"], found["issueId"], found["sessionId"]) == (1, second, QA_SESSION)
    assert found["startTime"] == worker.start_time is not None
    assert snapshot(ws) == before  # it only reads
    with pytest.raises(Exception, match="pass issueId"):
        call_loop(ws, "task_session", {"projectGroupId": GROUP, "role": "dev"})
