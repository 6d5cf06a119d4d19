"""The work loop runs several workers at once: two projects with two DEV slots each, in a real gateway.

The scripted model's ``Barrier`` holds the DEV runs until N of them are in flight together, so "four at
once" is proven by the barrier releasing, never by timing. While the N runs are held the loop keeps
ticking; a run started beyond the caps would reach the model then (``late_while_held``). The audit log,
replayed in commit order, shows the caps held all along.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from devclaw.state import ProjectsFile
from devclaw.workspace import Workspace

from .conftest import devclaw
from .fake_model import Barrier, FakeModel
from .gateway import Gateway, stage_plugin
from .install import OpenClawInstall
from .test_loop import TASK, audit, tracker, user_texts, wait_for

pytestmark = pytest.mark.e2e

ALPHA, BETA = "-1003000000001", "-1003000000002"
NAMES = {ALPHA: "alpha", BETA: "beta"}
TICK_SECONDS = 5  # the schema's minimum


class ParallelWorkers:
    """DEV answers DONE, QA PASS; a DEV run first waits at ``barrier`` when one is set."""

    def __init__(self) -> None:
        self.barrier: Barrier | None = None

    def __call__(self, body: dict[str, Any]) -> str | None:
        texts = user_texts(body)
        found = TASK.search(texts[-1] if texts else "")
        if found is None:
            return "I have no task."
        role, project, issue, title = found.groups()
        if role == "QA":
            return f"PASS: verified {title.strip()}"
        barrier = self.barrier
        if barrier is not None:
            barrier.wait(f"{project}#{issue}")
        return f"DONE: implemented {title.strip()}"


@pytest.fixture(scope="module")
def workers() -> ParallelWorkers:
    return ParallelWorkers()


@pytest.fixture(scope="module")
def worker_model(workers: ParallelWorkers) -> Iterator[FakeModel]:
    model = FakeModel([], responder=workers)
    model.start()
    yield model
    if workers.barrier is not None:
        workers.barrier.hold.set()
    model.stop()


@pytest.fixture(scope="module")
def parallel_ws(e2e_root: Path) -> Path:
    ws = e2e_root / "parallel-workspace"
    ws.mkdir()
    for group, name in NAMES.items():
        devclaw(ws, "project", "add", group, "--name", name, "--provider", "local")

    def two_dev_slots(state: ProjectsFile) -> ProjectsFile:
        projects = {gid: p.model_copy(update={"max_workers": {"dev": 2}}) for gid, p in state.projects.items()}
        models = {alias: "fake/fake-model" for alias in ("haiku", "sonnet", "opus", "grok")}
        return state.model_copy(update={"projects": projects, "models": models})

    Workspace(ws).store.update(two_dev_slots)
    return ws


@pytest.fixture(scope="module")
def parallel_gateway(
    openclaw_install: OpenClawInstall, e2e_root: Path, parallel_ws: Path, worker_model: FakeModel
) -> Iterator[Gateway]:
    plugin = stage_plugin(e2e_root / "plugin-parallel" / "devclaw")
    loop = {"enabled": True, "tickSeconds": TICK_SECONDS, "announce": False}
    config = {
        "agents": {"defaults": {"workspace": str(parallel_ws), "model": {"primary": "fake/fake-model"}}},
        "models": {"providers": {"fake": {"baseUrl": worker_model.base_url, "apiKey": "not-a-real-key",
                                          "api": "openai-completions",
                                          "models": [{"id": "fake-model", "name": "fake-model"}]}}},
        "tools": {"toolSearch": False},
        "plugins": {
            "allow": ["devclaw"],
            "load": {"paths": [str(plugin)]},
            "entries": {"devclaw": {"enabled": True,
                                    "config": {"python": sys.executable, "workspace": str(parallel_ws),
                                               "loop": loop}}},
        },
    }  # fmt: skip
    with Gateway(openclaw_install, e2e_root / "gateway-parallel", config).running() as gw:
        yield gw


def create_issues(ws: Path, per_project: int, tag: str) -> dict[str, list[int]]:
    return {
        group: [
            devclaw(ws, "issue", "create", group, "--title", f"{tag} task {n}", "--label", "To Do")["id"]
            for n in range(per_project)
        ]
        for group in NAMES
    }


def all_done(ws: Path, issues: dict[str, list[int]]) -> bool:
    return all(tracker(ws, NAMES[g]).get_issue(n).labels == ("Done",) for g, ns in issues.items() for n in ns)


def last_tick(ws: Path) -> int:
    try:
        status = json.loads((ws / "memory" / "loop.json").read_text())
    except (OSError, ValueError):
        return 0
    return int((status.get("lastTick") or {}).get("number") or 0)


def wait_for_ticks(ws: Path, count: int) -> None:
    """``count`` whole ticks after now: each had its chance to dispatch more."""
    start = last_tick(ws)
    wait_for(lambda: last_tick(ws) >= start + count, what=f"{count} more ticks")


def in_flight_peaks(records: list[dict[str, Any]]) -> tuple[Counter[tuple[str, str]], int]:
    """Replay pickups and their ends in commit order: the most workers active at once, per (project, role)
    and in all."""
    active: Counter[tuple[str, str]] = Counter()
    peaks: Counter[tuple[str, str]] = Counter()
    total_peak = 0
    for record in records:
        key = (record.get("groupId", ""), record.get("role", ""))
        if record["event"] == "task_pickup":
            active[key] += 1
        elif record["event"] in ("task_complete", "task_release"):
            active[key] -= 1
        else:
            continue
        peaks[key] = max(peaks[key], active[key])
        total_peak = max(total_peak, sum(active.values()))
    return peaks, total_peak


def hops(records: list[dict[str, Any]]) -> list[float]:
    """Seconds from a DEV completion to the QA pickup of the same issue (the next hop starting)."""
    done: dict[tuple[str, int], datetime] = {}
    found = []
    for record in records:
        key = (record.get("groupId", ""), record.get("issue", 0))
        at = datetime.fromisoformat(record["ts"].replace("Z", "+00:00"))
        if record["event"] == "task_complete" and record["role"] == "dev":
            done[key] = at
        elif record["event"] == "task_pickup" and record["role"] == "qa" and key in done:
            found.append((at - done.pop(key)).total_seconds())
    return found


def report(what: str, started: float, records: list[dict[str, Any]]) -> None:
    latencies = sorted(hops(records))
    median = latencies[len(latencies) // 2] if latencies else float("nan")
    print(f"\n{what}: {time.monotonic() - started:.1f} s; DEV done -> QA pickup median {median:.2f} s over {latencies}")


def test_two_projects_with_two_dev_slots_run_four_dev_workers_at_once(
    parallel_gateway: Gateway, parallel_ws: Path, workers: ParallelWorkers
) -> None:
    ws = parallel_ws
    started = time.monotonic()
    barrier = workers.barrier = Barrier(4, hold=True)
    issues = create_issues(ws, 3, "first")
    assert wait_for(barrier.released.is_set, what="four DEV runs in flight at once")
    released_after = time.monotonic() - started
    wait_for_ticks(ws, 2)  # the loop had its chances to start a fifth while the four are busy
    assert barrier.late_while_held == [] and len(barrier.arrivals) == 4
    held = Counter(who.split("#")[0] for who in barrier.arrivals)
    assert held == {"alpha": 2, "beta": 2}
    barrier.hold.set()

    wait_for(lambda: all_done(ws, issues), what="six issues Done")
    records = audit(ws)
    confirms = {(r["groupId"], r["sessionId"]) for r in records if r["event"] == "task_pickup_confirm"}
    dev_sessions = {key for key in confirms if "-dev-" in key[1]}
    assert {(g, s.rsplit("-", 1)[1]) for g, s in dev_sessions} == {(g, slot) for g in NAMES for slot in "01"}
    completes = [(r["groupId"], r["issue"], r["role"], r["result"]) for r in records if r["event"] == "task_complete"]
    assert sorted(completes) == sorted((g, n, role, result) for g, ns in issues.items() for n in ns
                                       for role, result in (("dev", "done"), ("qa", "pass")))  # fmt: skip
    peaks, _ = in_flight_peaks(records)
    assert {g: peaks[(g, "dev")] for g in NAMES} == {ALPHA: 2, BETA: 2}  # maxWorkers.dev, never more
    assert all(peaks[(g, "qa")] == 1 for g in NAMES)
    print(f"\nfour DEV runs in flight {released_after:.1f} s after the first issue was created")
    report("six issues To Do -> Done over two projects x two DEV slots", started, records)


def test_the_workspace_cap_keeps_three_runs_in_flight(
    parallel_gateway: Gateway, parallel_ws: Path, workers: ParallelWorkers
) -> None:
    ws = parallel_ws
    Workspace(ws).store.update(lambda state: state.model_copy(update={"max_active_workers": 3}))
    before = len(audit(ws))
    started = time.monotonic()
    barrier = workers.barrier = Barrier(3, hold=True)
    issues = create_issues(ws, 2, "second")
    assert wait_for(barrier.released.is_set, what="three DEV runs in flight at once")
    wait_for_ticks(ws, 2)
    assert barrier.late_while_held == [] and len(barrier.arrivals) == 3
    assert Workspace(ws).store.read().active_count() == 3
    barrier.hold.set()

    wait_for(lambda: all_done(ws, issues), what="four issues Done")
    records = audit(ws)[before:]
    _, total_peak = in_flight_peaks(records)
    assert total_peak == 3  # maxActiveWorkers, QA included
    events = [(r["event"], r.get("role")) for r in records if r["event"] in ("task_pickup", "task_complete")]
    fourth_dev = [i for i, e in enumerate(events) if e == ("task_pickup", "dev")][3]
    assert ("task_complete", "dev") in events[:fourth_dev]  # the fourth started only after one finished
    report("four issues To Do -> Done under maxActiveWorkers 3", started, records)
