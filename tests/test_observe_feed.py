"""The incremental audit reader and the digests built from it, on real files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devclaw.audit import AuditLog
from devclaw.observe.board import IssueItem, QueueSnapshot, worker_rows
from devclaw.observe.feed import AuditFeed
from devclaw.observe.history import History
from devclaw.state import Project, ProjectsFile, Worker
from devclaw.workflow import DEFAULT

GROUP = "-100"


def _line(n: int, **fields: Any) -> bytes:
    return (json.dumps({"ts": "2026-11-20T10:00:00.000Z", "event": "queue_status", "n": n, **fields}) + "\n").encode()


def _ns(records: list[dict[str, Any]]) -> list[int]:
    return [record["n"] for record in records]


def test_each_poll_reads_only_what_was_appended(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(_line(1) + _line(2))
    feed = AuditFeed(AuditLog(path))
    assert _ns(feed.poll()) == [1, 2]
    assert feed.poll() == [] and not feed.changed()
    with path.open("ab") as handle:
        handle.write(_line(3))
    assert feed.changed()
    assert _ns(feed.poll()) == [3]
    assert feed.bytes_read == path.stat().st_size  # no byte was read twice


def test_a_torn_last_line_waits_until_it_is_whole(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    whole = _line(2)
    path.write_bytes(_line(1) + whole[:10])
    feed = AuditFeed(AuditLog(path))
    assert _ns(feed.poll()) == [1]
    assert feed.poll() == []
    with path.open("ab") as handle:
        handle.write(whole[10:])
    assert _ns(feed.poll()) == [2]


def test_rotation_loses_and_repeats_nothing(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(_line(1))
    feed = AuditFeed(AuditLog(path))
    assert _ns(feed.poll()) == [1]
    path.replace(tmp_path / "audit.log.1")  # the rotation
    with (tmp_path / "audit.log.1").open("ab") as late:  # a writer that opened the file just before it
        late.write(_line(2))
    path.write_bytes(_line(3))
    assert _ns(feed.poll()) == [2, 3]
    assert feed.poll() == []
    total = sum(p.stat().st_size for p in (path, tmp_path / "audit.log.1"))
    assert feed.bytes_read == total


def test_follows_the_real_appender_through_many_rotations(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", max_bytes=400)
    feed = AuditFeed(AuditLog(tmp_path / "audit.log"))
    seen: list[int] = []
    for n in range(60):
        log.append("queue_status", n=n)
        if n % 7 == 0:
            seen += _ns(feed.poll())
    seen += _ns(feed.poll())
    assert len(log.files()) > 3
    assert seen == list(range(60))


def test_lines_that_are_not_records_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(b"not json\n[1, 2]\n" + _line(1))
    assert _ns(AuditFeed(AuditLog(path)).poll()) == [1]


def _record(ts: str, event: str, issue: int, **fields: Any) -> dict[str, Any]:
    return {
        "ts": f"2026-11-20T{ts}.000Z",
        "event": event,
        "project": "webapp",
        "groupId": GROUP,
        "issue": issue,
        **fields,
    }


def _lifecycle(history: History) -> None:
    steps = [
        ("09:00:00", "issue_label", {"labelTransition": "Planning → To Do"}),
        ("10:00:00", "task_pickup", {"role": "dev", "issueTitle": "Login", "labelTransition": "To Do → Doing"}),
        ("10:30:00", "task_complete", {"role": "dev", "result": "done", "labelTransition": "Doing → To Test"}),
        ("10:40:00", "task_pickup", {"role": "qa", "labelTransition": "To Test → Testing"}),
        (
            "10:50:00",
            "task_complete",
            {"role": "qa", "result": "fail", "summary": "broken", "labelTransition": "Testing → To Improve"},
        ),
        ("11:00:00", "task_pickup", {"role": "dev", "labelTransition": "To Improve → Doing"}),
        ("11:20:00", "task_complete", {"role": "dev", "result": "done", "labelTransition": "Doing → To Test"}),
        ("11:25:00", "task_pickup", {"role": "qa", "labelTransition": "To Test → Testing"}),
        ("12:00:00", "task_complete", {"role": "qa", "result": "pass", "labelTransition": "Testing → Done"}),
    ]
    for ts, event, fields in steps:
        history.add(_record(ts, event, 1, **fields))


def test_an_issues_stages_and_cycle_time() -> None:
    history = History()
    _lifecycle(history)
    issue = history.issues[(GROUP, 1)]
    assert issue.title == "Login" and issue.roles == {"dev", "qa"} and issue.qa_fails == 1
    assert [(s.name, s.seconds(0)) for s in issue.stages()] == [
        ("queued", 3600),
        ("in dev", 1800),
        ("waiting for QA", 600),
        ("in QA", 600),
        ("back for fixes", 600),
        ("in dev", 1200),
        ("waiting for QA", 300),
        ("in QA", 2100),
    ]
    assert issue.cycle_seconds == 2 * 3600  # first dev pickup 10:00 to the QA pass at 12:00
    day = history.days[("2026-11-20", "webapp")]
    assert (day.done, day.qa_fail, day.qa_pass, day.loop_brakes) == (1, 1, 1, 0)
    assert day.qa_fail_rate == 0.5 and day.median_cycle_seconds == 7200


def test_a_loop_brake_is_counted_and_explained() -> None:
    history = History()
    history.add(
        _record(
            "10:00:00",
            "task_complete",
            4,
            role="qa",
            result="fail",
            summary="still broken",
            labelTransition="Testing → Refining",
            loopBrake=True,
        )
    )
    issue = history.issues[(GROUP, 4)]
    assert issue.braked and issue.last_feedback == "still broken"
    assert history.days[("2026-11-20", "webapp")].loop_brakes == 1
    assert issue.stages()[-1].name == "waiting for a person" and issue.stages()[-1].end is None


def test_usage_is_summed_by_task_role_model_project_and_day() -> None:
    history = History()
    _lifecycle(history)
    assert history.usage.total.tasks == 0  # no usage recorded: nothing summed
    for role, model, cost in (("dev", "m/opus", 0.5), ("dev", "m/opus", 0.25), ("qa", "m/grok", None)):
        history.add(
            _record(
                "13:00:00",
                "task_complete",
                2,
                role=role,
                result="done",
                model=model,
                usage={"input": 10, "output": 5, "cacheRead": 2, "cacheWrite": 1, "cost": cost},
            )
        )
    usage = history.usage
    assert usage.total.as_json() == {
        "tasks": 3,
        "input": 30,
        "output": 15,
        "cacheRead": 6,
        "cacheWrite": 3,
        "cost": 0.75,
        "tasksWithoutCost": 1,
    }
    assert usage.by_model["m/opus"].cost == 0.75 and usage.by_role["qa"].tasks == 1
    task = history.issues[(GROUP, 2)].usage
    assert task is not None and (task.tasks, task.cost, task.cost_missing) == (3, 0.75, 1)
    assert usage.by_day["2026-11-20"].tasks == 3


def test_events_after_is_a_bounded_window() -> None:
    history = History(window=5)
    for n in range(12):
        history.add({"ts": "2026-11-20T10:00:00Z", "event": "queue_status", "n": n})
    assert [seq for seq, _ in history.events_after(0, 100)] == [8, 9, 10, 11, 12]
    assert [seq for seq, _ in history.events_after(10, 100)] == [11, 12]
    assert history.events_after(12, 100) == []


def test_worker_rows_give_each_role_its_slot() -> None:
    workers = {"dev": [Worker(active=True, issue_id=3), Worker(active=True, issue_id=5)], "qa": [Worker()]}
    project = Project(name="webapp", max_workers={"dev": 2}, workers=workers)
    rows = worker_rows(project)
    assert [(row.role, row.slot, row.worker.issue_id) for row in rows] == [
        ("dev", 0, 3),
        ("dev", 1, 5),
        ("qa", 0, None),
    ]


@pytest.mark.parametrize(
    ("target", "lists"),
    [
        ("Doing", {"To Do": [], "Doing": [7]}),
        ("Done", {"To Do": [], "Doing": []}),
    ],
)
def test_a_move_from_the_log_is_applied_to_the_last_read(target: str, lists: dict[str, list[int]]) -> None:
    item = IssueItem(7, "Seven", "http://t/7", "")
    snapshot = QueueSnapshot(issues={"To Do": [item], "Doing": []}, fetched_at=0.0)
    assert snapshot.move(7, target, DEFAULT)
    assert snapshot.issues is not None
    assert {label: [i.id for i in items] for label, items in snapshot.issues.items()} == lists
    assert not snapshot.move(99, "Doing", DEFAULT)  # an issue the last read did not list: nothing to move


def _big_log(path: Path, chunks: float) -> int:
    """A log of pickups over more than ``chunks`` read chunks; returns its line count."""
    from devclaw.observe import feed

    line = json.dumps(
        {
            "ts": "2026-11-20T10:00:00.000Z",
            "event": "task_pickup",
            "project": "webapp",
            "groupId": GROUP,
            "issue": 1,
            "role": "dev",
            "labelTransition": "To Do → Doing",
        }
    ).encode()
    filler = _line(0).rstrip(b"\n")  # an event the history does not digest: counted, never parsed
    count = int(chunks * feed.READ_CHUNK) // (len(line) + len(filler) + 2) + 1
    path.write_bytes((line + b"\n" + filler + b"\n") * count)
    return 2 * count


def test_the_log_is_read_into_a_history_of_its_own_then_handed_over(tmp_path: Path) -> None:
    from devclaw.observe.live import Observatory
    from devclaw.workspace import Workspace

    ws = Workspace(tmp_path)
    ws.memory.mkdir()
    lines = _big_log(ws.audit.path, 2.5)
    obs = Observatory(ws)
    obs.load_state()
    assert obs.history_progress() == {"ready": False, "percent": 0, "error": None, "records": 0}
    seen: list[dict[str, Any]] = []

    def progress() -> None:  # called after each chunk, from the reading thread
        seen.append({**obs.history_progress(), "served": obs.history.seq})

    history, recent = obs._read_history(progress)
    # While it read, what the pages show stayed the empty history, and the share read only grew.
    assert [s["served"] for s in seen] == [0, 0, 0] and not any(s["ready"] for s in seen)
    percents = [s["percent"] for s in seen]
    assert 0 < percents[0] < percents[1] < percents[2] <= 99
    assert history.seq == lines and len(history.issues[(GROUP, 1)].transitions) == lines // 2
    assert recent == []  # every move is older than the server
    obs._hand_over((history, recent))
    assert obs.history_progress() == {"ready": True, "percent": 100, "error": None, "records": lines}
    # Following the log goes on from where the read ended: the next lines only, no byte twice.
    with ws.audit.path.open("ab") as handle:
        handle.write(_line(1))
    obs._digest(obs._read_new_lines())
    assert obs.history.seq == lines + 1 and obs.feed.bytes_read == ws.audit.path.stat().st_size


def test_only_digested_events_are_parsed_but_every_line_is_an_event() -> None:
    history = History(window=3)
    assert history.add_line(_line(1).rstrip()) is None  # counted, kept, not parsed
    assert history.add_line(b"") is None and history.add_line(b"not json") is None  # not records at all
    record = history.add_line(
        json.dumps({"ts": "2026-11-20T10:00:00Z", "event": "health_check", "issuesFound": 0}).encode()
    )
    assert record is not None and history.last_health == record
    assert history.add_line(b'{"event": "task_pickup", damaged') is None  # found, fails to parse: skipped
    assert history.seq == 3
    # The window keeps the lines as written; /api/events parses them when asked, dropping a damaged one.
    assert [(seq, r["event"]) for seq, r in history.events_after(0, 10)] == [(1, "queue_status"), (2, "health_check")]


def test_a_cached_live_page_has_its_times_since_worked_out_again_for_each_answer(tmp_path: Path) -> None:
    import asyncio

    from starlette.requests import Request

    from devclaw.observe.app import Site, _times_since
    from devclaw.observe.live import Observatory
    from devclaw.workspace import Workspace

    html = '<td><span data-since="2026-11-20T10:00:00Z">1s</span></td> <span data-since="None">–</span>'
    at = datetime.fromisoformat("2026-11-20T10:00:00+00:00").timestamp()
    assert _times_since(html, at + 3725) == (
        '<td><span data-since="2026-11-20T10:00:00Z">1h 02m</span></td> <span data-since="None">–</span>'
    )
    # An active worker in grace: the page rendered now holds until its grace ends, then is rendered again.
    ws = Workspace(tmp_path)
    started = datetime.now(UTC) - timedelta(minutes=1)
    state = ProjectsFile()
    state.projects[GROUP] = Project(
        name="webapp",
        workers={"dev": [Worker(active=True, issue_id="1", start_time=started.isoformat().replace("+00:00", "Z"))]},
    )
    ws.memory.mkdir()
    with ws.store.locked():
        ws.store.write(state)
    obs = Observatory(ws)
    obs.load_state()
    site = Site(obs, None)
    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": []}
    answer = asyncio.run(site.live(Request(scope)))
    assert b"in grace" in answer.body
    grace = obs.state.health.grace_minutes * 60
    assert abs(site._live_pages[False].expires_at - (started.timestamp() + grace)) < 2
