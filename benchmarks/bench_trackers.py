"""Wall time and request counts of the tools on GitLab and GitHub, against the fakes on loopback.

Every request to the fake server waits DELAY (50 ms) before its reply, standing in for a real host's
latency. Each tool call goes through ``call_tool`` in a throw-away workspace, exactly as the CLI and the
bridge run it (projects.json lock and write, audit line, a tracker opened per call), and is checked:

- task_pickup and task_complete: wall time <= 1.3 x (requests x DELAY), also with the change gate on (a
  project that requires changes: DEV done and QA pickup look up the issue's merged MR/PR);
- queue_status over 20 projects: far below 20 x the time of one project (projects fetched concurrently).

Run: ``.venv/bin/python benchmarks/bench_trackers.py`` (prints a Markdown table; exit 1 if a check fails).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devclaw.registry import register_project
from devclaw.state import ChangeSettings, Project, TrackerConfig
from devclaw.tools import call_tool
from devclaw.workspace import Workspace
from tests.fakes import FakeServer, FakeTracker, TrackerKind, make_fake

#: The benchmark measures the engine and the label moves, as before DEV done checked the change; the
#: change lookup's cost is asserted in tests/test_tool_budgets.py.
NO_CHANGES = ChangeSettings(required=False)
DELAY = 0.050
ROUNDS = 10
PROJECTS = 20
TOKEN_ENV = "BENCH_TRACKER_TOKEN"
MAX_RATIO = 1.3


def path_of(kind: TrackerKind, n: int) -> str:
    return f"acme/platform/webapp{n}" if kind == "gitlab" else f"acme/webapp{n}"


@contextmanager
def workspace(
    kind: TrackerKind, projects: int, changes: ChangeSettings = NO_CHANGES
) -> Iterator[tuple[Workspace, FakeTracker]]:
    """A workspace with ``projects`` projects, all on one fake server answering DELAY late."""
    fake = make_fake(kind, path_of(kind, 0))
    for n in range(1, projects):
        fake.projects[path_of(kind, n)] = type(fake.project)()
    os.environ[TOKEN_ENV] = fake.token
    with tempfile.TemporaryDirectory() as tmp, FakeServer(fake, delay=DELAY) as server:
        ws = Workspace(Path(tmp))
        ws.memory.mkdir()
        for n in range(projects):
            config = TrackerConfig(provider=kind, path=path_of(kind, n), base_url=server.url, token_env=TOKEN_ENV)
            register_project(ws, f"-100{n}", Project(name=f"webapp{n}", tracker=config, changes=changes))
        yield ws, fake


def timed(fake: FakeTracker, run: Callable[[], Any]) -> tuple[float, int]:
    before = len(fake.log)
    started = time.perf_counter()
    run()
    return time.perf_counter() - started, len(fake.log) - before


def bench_calls(kind: TrackerKind, *, gated: bool = False) -> dict[str, list[tuple[float, int]]]:
    """ROUNDS dev -> QA cycles on one project: every call's wall time and request count. ``gated``: the
    project requires changes and each issue has one merged MR/PR; only the calls that look it up count."""
    steps = (
        ("task_pickup", {"role": "dev"}),
        ("task_complete", {"role": "dev", "result": "done"}),
        ("task_pickup", {"role": "qa"}),
        ("task_complete", {"role": "qa", "result": "pass"}),  # label + close in one write
    )
    # step index -> the row it is counted in
    rows = {0: "task_pickup", 1: "task_complete", 2: "task_pickup", 3: "task_complete"}
    if gated:
        rows = {1: "task_complete dev done (change gate)", 2: "task_pickup qa (names the change)"}
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in dict.fromkeys(rows.values())}
    with workspace(kind, 1, ChangeSettings() if gated else NO_CHANGES) as (ws, fake):
        for round_ in range(ROUNDS):
            issue = fake.project.add(f"Task {round_}", ["To Do", "priority::high"])
            if gated:
                fake.add_change(f"Task {round_}", state="merged", closes=[issue])
            for index, (tool, params) in enumerate(steps):
                call: dict[str, Any] = {"projectGroupId": "-1000", **params}
                if tool == "task_pickup":
                    call["issueId"] = issue
                sample = timed(fake, partial(call_tool, ws, tool, call))
                if index in rows:
                    samples[rows[index]].append(sample)
    return samples


def bench_queue(kind: TrackerKind) -> tuple[float, int, float, int]:
    """queue_status of one project, then of PROJECTS projects: median wall time and requests of each."""
    with workspace(kind, PROJECTS) as (ws, fake):
        one = [timed(fake, lambda: call_tool(ws, "queue_status", {"projectGroupId": "-1000"})) for _ in range(5)]
        every = [timed(fake, lambda: call_tool(ws, "queue_status", {})) for _ in range(3)]
    return (
        statistics.median(t for t, _ in one),
        one[0][1],
        statistics.median(t for t, _ in every),
        every[0][1],
    )


def main() -> int:
    failed = False
    print(f"delay per request: {DELAY * 1000:.0f} ms; {ROUNDS} rounds; medians\n")
    print("| tracker | tool | requests | wall time | requests x delay | ratio |")
    print("|---|---|---|---|---|---|")
    kinds: tuple[TrackerKind, ...] = ("gitlab", "github")
    for kind, gated in ((kind, gated) for gated in (False, True) for kind in kinds):
        for tool, samples in bench_calls(kind, gated=gated).items():
            counts = {n for _, n in samples}
            wall = statistics.median(t for t, _ in samples)
            floor = max(counts) * DELAY
            ratio = wall / floor
            failed |= ratio > MAX_RATIO
            print(f"| {kind} | {tool} | {'/'.join(map(str, sorted(counts)))} | {wall * 1000:.0f} ms "
                  f"| {floor * 1000:.0f} ms | {ratio:.2f} |")  # fmt: skip
    print("\n| tracker | queue_status | requests | wall time | x one project |")
    print("|---|---|---|---|---|")
    for kind in kinds:
        one, one_requests, every, every_requests = bench_queue(kind)
        speedup = every / one
        failed |= speedup > PROJECTS / 3  # "well under 20x": at least 3x better than one after another
        print(f"| {kind} | 1 project | {one_requests} | {one * 1000:.0f} ms | 1.0 |")
        print(f"| {kind} | {PROJECTS} projects | {every_requests} | {every * 1000:.0f} ms | {speedup:.1f} |")
    print("\nresult:", "FAIL" if failed else "ok")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
