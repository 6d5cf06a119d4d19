"""Work-loop benchmark: what a heartbeat costs with and without the loop, and what one tick costs.

Run from the repository root with the project's virtualenv:

    .venv/bin/python benchmarks/bench_loop.py           # everything below
    .venv/bin/python benchmarks/bench_loop.py --quick   # fewer hops, 20 projects for the tick

1. Orchestrator input per idle heartbeat. With the loop on, no orchestrator turn happens at all: 0 tokens
   (tests/e2e/test_loop.py asserts the model gets zero requests outside worker runs). Without it, the LLM
   heartbeat reads session_health's and queue_status's results every time; measured here for 1, 20 and 100
   projects (each with 3 To Do, 1 To Improve, 1 To Test issue, idle workers), as the bridge used to send them
   (2-space JSON), as it sends them now (compact) and with ``queue_status {"next": true}``. ~tokens = bytes/4.
2. One tick over idle projects (empty queues, no workers) on the GitLab fake answering 50 ms late:
   wall time and requests, with and without the reconcile's tracker check.
3. Hop latency through one ``devclaw serve`` (embedded tracker): a worker's verdict arrives, then
   ``task_complete`` and the immediate ``tick`` that picks up the next task, as index.js sends them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devclaw.loop import call_loop
from devclaw.registry import register_project
from devclaw.state import Project, TrackerConfig
from devclaw.tools import call_tool
from devclaw.trackers.local import LocalTracker
from devclaw.workspace import Workspace
from tests.fakes import FakeServer, make_fake

DELAY = 0.050
TOKEN_ENV = "BENCH_TRACKER_TOKEN"
TITLES = ("Add a login page with OAuth", "Fix the footer links", "Show the build number in settings")


@contextmanager
def local_workspace(projects: int) -> Iterator[Workspace]:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp))
        ws.memory.mkdir()
        for n in range(projects):
            register_project(ws, f"-100{n:010d}", Project(name=f"app{n}", tracker=TrackerConfig(path=f"app{n}")))
            tracker = LocalTracker(ws.memory / "tracker.sqlite3", f"app{n}")
            for title in TITLES:
                tracker.create_issue(title, "", ("To Do",))
            tracker.create_issue("Handle an empty cart", "", ("To Improve",))
            tracker.create_issue("Check the signup e-mail", "", ("To Test",))
        yield ws


def heartbeat_sizes(projects: int) -> dict[str, int]:
    with local_workspace(projects) as ws:
        health = call_tool(ws, "session_health", {"activeSessions": ["agent:main:main"]})
        full = call_tool(ws, "queue_status", {})
        nxt = call_tool(ws, "queue_status", {"next": True})
    indented = len(json.dumps(health, indent=2, ensure_ascii=False).encode()) + len(
        json.dumps(full, indent=2, ensure_ascii=False).encode()
    )
    compact_health = len(json.dumps(health, ensure_ascii=False).encode())
    compact = compact_health + len(json.dumps(full, ensure_ascii=False).encode())
    return {"indented": indented, "compact": compact, "next": compact_health + len(json.dumps(nxt).encode())}


def tick_over_idle(projects: int, check_tracker: bool) -> tuple[float, int]:
    fake = make_fake("gitlab", "acme/app0")
    for n in range(1, projects):
        fake.projects[f"acme/app{n}"] = type(fake.project)()
    os.environ[TOKEN_ENV] = fake.token
    with tempfile.TemporaryDirectory() as tmp, FakeServer(fake, delay=DELAY) as server:
        ws = Workspace(Path(tmp))
        ws.memory.mkdir()
        for n in range(projects):
            config = TrackerConfig(provider="gitlab", path=f"acme/app{n}", base_url=server.url, token_env=TOKEN_ENV)
            register_project(ws, f"-100{n:010d}", Project(name=f"app{n}", tracker=config))
        before = len(fake.log)
        started = time.perf_counter()
        result = call_loop(ws, "tick", {"activeSessions": ["agent:main:main"], "checkTracker": check_tracker})
        wall = time.perf_counter() - started
        assert result["dispatches"] == [] and result["skipped"] == [], result
        return wall, len(fake.log) - before


def hop_latency(hops: int) -> list[float]:
    """Per hop: task_complete (dev done) + tick that picks the issue up for QA, through devclaw serve."""
    group = "-1001234567890"
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp))
        ws.memory.mkdir()
        register_project(ws, group, Project(name="app", tracker=TrackerConfig(path="app")))
        tracker = LocalTracker(ws.memory / "tracker.sqlite3", "app")
        for n in range(hops):
            tracker.create_issue(f"Task {n}", "", ("To Do",))
        serve = subprocess.Popen([sys.executable, "-m", "devclaw", "--workspace", str(ws.root), "serve"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
        assert serve.stdin is not None and serve.stdout is not None
        ids = iter(range(1, 10**6))

        def request(tool: str, params: dict[str, Any]) -> dict[str, Any]:
            assert serve.stdin is not None and serve.stdout is not None
            serve.stdin.write((json.dumps({"id": next(ids), "tool": tool, "params": params}) + "\n").encode())
            serve.stdin.flush()
            answer: dict[str, Any] = json.loads(serve.stdout.readline())
            assert answer["ok"], answer
            return dict(answer["result"])

        sessions = {"activeSessions": ["agent:main:subagent:d", "agent:main:subagent:q"]}
        times = []
        try:
            request("tick", sessions)  # the first DEV pickup
            for _ in range(hops):
                request(
                    "task_pickup_confirm",
                    {"projectGroupId": group, "role": "dev", "sessionId": "agent:main:subagent:d"},
                )
                started = time.perf_counter()
                request("task_complete", {"projectGroupId": group, "role": "dev", "result": "done", "summary": "x"})
                tick = request("tick", sessions)
                times.append(time.perf_counter() - started)
                assert any(d["role"] == "qa" for d in tick["dispatches"]), tick
                request("task_complete", {"projectGroupId": group, "role": "qa", "result": "pass"})
                request("tick", sessions)
        finally:
            serve.stdin.close()
            serve.wait(timeout=30)
        return times


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(f"{platform.node()} · {os.cpu_count()} cores · {platform.python_version()} · {dt.date.today()}\n")
    print("| projects | heartbeat reads today (2-space) | compact | compact + next | with the loop |")
    print("|---:|---:|---:|---:|---:|")
    for projects in (1, 20, 100):
        s = heartbeat_sizes(projects)
        cells = [f"{s[k]:,} B (~{s[k] // 4:,} tokens)" for k in ("indented", "compact", "next")]
        print(f"| {projects} | {' | '.join(cells)} | 0 tokens |")
    idle = 20 if args.quick else 100
    print(f"\n| tick over {idle} idle projects, GitLab fake at {DELAY * 1000:.0f} ms | wall time | requests |")
    print("|---|---:|---:|")
    for check in (True, False):
        wall, requests = tick_over_idle(idle, check)
        print(f"| checkTracker {str(check).lower()} | {wall:.2f} s | {requests} |")
    times = hop_latency(10 if args.quick else 40)
    print(f"\nhop (task_complete + tick through devclaw serve, embedded tracker, {len(times)} hops): "
          f"median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
