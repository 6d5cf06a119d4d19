"""Observatory benchmark: 100 projects and a 1,000,000-line audit log behind ``devclaw observe``.

Run from the repository root with the project's virtualenv:

    .venv/bin/python benchmarks/bench_observe.py            # the full run (1,000,000 lines)
    .venv/bin/python benchmarks/bench_observe.py --quick    # a 100,000-line log, to try it out

It builds a workspace in a temporary folder (100 projects on the embedded tracker, five open issues each,
a third of the workers active, a log of whole lifecycles with token usage on every task_complete),
starts ``devclaw observe`` as a subprocess on 127.0.0.1, and measures, after start-up:

- start-up: the time until the server answers, the first answers while the log is still being read in
  the background, and the time until that read is done;
- the answer time of ``/api/state`` and of the Live page (``/``), against a static file served by the
  same server in the same run (the framework and socket floor); the Live page both as it is served
  between two changes (rendered once per change) and right after a change (rendered for the answer);
- what one rescan of the log would cost per request (``AuditLog.records()`` over the same files);
- the delay from an audit append to the ``change`` event on ``/api/stream`` (the Live page's update);
- the server's memory (VmRSS and its peak VmHWM from /proc).

It prints a Markdown table (docs/PERFORMANCE.md's observatory section comes from it) and progress on stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from devclaw.audit import AuditLog
from devclaw.state import Project, ProjectsFile, Worker
from devclaw.trackers.local import LocalTracker
from devclaw.workflow import Label
from devclaw.workspace import Workspace

PROJECTS = 100
REQUESTS = 60
MODELS = ("anthropic/claude-sonnet-4-5", "anthropic/claude-opus-4-5", "github-copilot/grok-code-fast-1")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def build(root: Path, lines: int) -> Workspace:
    ws = Workspace(root)
    ws.memory.mkdir(parents=True)
    state = ProjectsFile()
    start = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    for n in range(PROJECTS):
        group = f"-100{n:07d}"
        active = n % 3 == 0
        worker = Worker(
            active=active,
            session_id=f"agent:devclaw:subagent:{n}-dev",
            issue_id=1 if active else None,
            start_time=start.isoformat().replace("+00:00", "Z"),
            model="sonnet",
        )
        state.projects[group] = Project(name=f"project-{n:03d}", workers={"dev": [worker]})
        tracker = LocalTracker(ws.memory / "tracker.sqlite3", f"project-{n:03d}")
        for label in (Label.DOING, Label.TO_DO, Label.TO_TEST, Label.REFINING, Label.TO_IMPROVE):
            tracker.create_issue(f"Issue on {label}", "", (label.value,))
    with ws.store.locked():
        ws.store.write(state)
    log(f"writing {lines:,} audit lines")
    with (ws.memory / "audit.log").open("w") as handle:
        written, issue = 0, 0
        while written < lines:
            issue += 1
            n = issue % PROJECTS
            group, name = f"-100{n:07d}", f"project-{n:03d}"
            at = start + dt.timedelta(seconds=issue * 20)
            for offset, record in enumerate(_lifecycle(group, name, issue, n)):
                ts = (at + dt.timedelta(seconds=offset * 90)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                handle.write(json.dumps({"ts": ts, **record}) + "\n")
                written += 1
    return ws


def _lifecycle(group: str, name: str, issue: int, n: int) -> list[dict[str, object]]:
    base = {"project": name, "groupId": group, "issue": issue}
    usage = {"input": 12000 + issue % 5000, "output": 1500, "cacheRead": 8000, "cacheWrite": 400, "cost": 0.042}
    model = MODELS[issue % len(MODELS)]
    records: list[dict[str, object]] = [
        {
            "event": "task_pickup",
            **base,
            "issueTitle": f"Task {issue}",
            "role": "dev",
            "model": "sonnet",
            "labelTransition": "To Do → Doing",
        },
        {"event": "model_selection", "issue": issue, "role": "dev", "selected": "sonnet", "fullModel": model},
        {
            "event": "task_complete",
            **base,
            "role": "dev",
            "result": "done",
            "labelTransition": "Doing → To Test",
            "model": model,
            "usage": usage,
        },
        {"event": "task_pickup", **base, "role": "qa", "model": "grok", "labelTransition": "To Test → Testing"},
    ]
    if issue % 4 == 0:
        records += [
            {
                "event": "task_complete",
                **base,
                "role": "qa",
                "result": "fail",
                "summary": "broken",
                "labelTransition": "Testing → To Improve",
                "model": model,
                "usage": usage,
            },
            {"event": "task_pickup", **base, "role": "dev", "labelTransition": "To Improve → Doing"},
            {"event": "task_complete", **base, "role": "dev", "result": "done", "labelTransition": "Doing → To Test"},
            {"event": "task_pickup", **base, "role": "qa", "labelTransition": "To Test → Testing"},
        ]
    records.append(
        {
            "event": "task_complete",
            **base,
            "role": "qa",
            "result": "pass",
            "labelTransition": "Testing → Done",
            "model": model,
            "usage": usage,
        }
    )
    return records


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def timed_get(port: int, path: str) -> tuple[float, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.perf_counter()
    conn.request("GET", path)
    reply = conn.getresponse()
    body = reply.read()
    elapsed = time.perf_counter() - started
    conn.close()
    assert reply.status == 200, (path, reply.status)
    return elapsed, len(body)


def push_delay(port: int, log_path: Path) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/api/stream")
    reply = conn.getresponse()
    got = threading.Event()
    hello = threading.Event()

    def read() -> None:
        while True:
            line = reply.readline()
            if line.startswith(b"event: hello"):
                hello.set()
            if line.startswith(b"event: change") or not line:
                got.set()
                return

    threading.Thread(target=read, daemon=True).start()
    assert hello.wait(60)
    started = time.perf_counter()
    AuditLog(log_path).append("queue_status", projectCount=0)
    assert got.wait(60)
    delay = time.perf_counter() - started
    conn.close()
    return delay


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    lines = 100_000 if args.quick else 1_000_000
    root = Path(tempfile.mkdtemp(prefix="devclaw-bench-observe-"))
    try:
        ws = build(root / "ws", lines)
        size = ws.audit.path.stat().st_size
        log("one full rescan of the log (what a per-request reader would pay)")
        started = time.perf_counter()
        count = sum(1 for _ in ws.audit.records())
        rescan = time.perf_counter() - started
        log("starting devclaw observe")
        started = time.perf_counter()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devclaw",
                "observe",
                "--workspace",
                str(ws.root),
                "--port",
                "0",
                "--refresh",
                "3600",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            assert selector.select(600), "observe did not start"
        line = proc.stdout.readline()
        startup = {"listening": time.perf_counter() - started}
        port = int(line.split()[2].rstrip("/").rsplit(":", 1)[1])
        try:
            startup.update(first_answers(port, started))
            rows = measure(port, ws, proc.pid)
            memory = memory_kib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
        report(lines, count, size, rescan, startup, rows, memory)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def get_json(port: int, path: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path)
    data: dict[str, Any] = json.loads(conn.getresponse().read())
    conn.close()
    return data


def first_answers(port: int, started: float) -> dict[str, float]:
    """The first answers, while the log is read in the background, and when that read is done."""
    found: dict[str, float] = {}
    found["state"], _ = timed_get(port, "/api/state")
    found["live"], _ = timed_get(port, "/")
    found["percent"] = get_json(port, "/api/state")["history"]["percent"]
    log(f"first answers {found}; waiting for the history")
    while not get_json(port, "/api/state")["history"]["ready"]:
        time.sleep(0.2)
    found["history"] = time.perf_counter() - started
    return found


def after_changes(port: int, ws: Workspace) -> list[float]:
    """The Live page right after a change: each answer renders it anew."""
    times = []
    for _ in range(20):
        version = get_json(port, "/api/state")["version"]
        AuditLog(ws.audit.path).append("queue_status", projectCount=0)
        while get_json(port, "/api/state")["version"] == version:
            time.sleep(0.05)
        times.append(timed_get(port, "/")[0])
    return times


def measure(port: int, ws: Workspace, pid: int) -> dict[str, list[float]]:
    # Wait for the first queue read of every project, so pages show full boards.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/api/state")
        state = json.loads(conn.getresponse().read())
        conn.close()
        if all(p["queues"]["readAt"] for p in state["projects"]):
            break
        time.sleep(0.5)
    rows: dict[str, list[float]] = {"/static/observe.css": [], "/api/state": [], "/": [], "push": []}
    sizes: dict[str, int] = {}
    for _ in range(REQUESTS):  # interleaved, so load from other processes hits all alike
        for path in ("/static/observe.css", "/api/state", "/"):
            elapsed, size = timed_get(port, path)
            rows[path].append(elapsed)
            sizes[path] = size
    log(f"answer sizes: {sizes}")
    for _ in range(10):
        rows["push"].append(push_delay(port, ws.audit.path))
    rows["changed"] = after_changes(port, ws)
    return rows


def report(
    lines: int,
    count: int,
    size: int,
    rescan: float,
    startup: dict[str, float],
    rows: dict[str, list[float]],
    memory: dict[str, int],
) -> None:
    def ms(values: list[float], q: float = 0.5) -> str:
        ordered = sorted(values)
        return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.1f} ms"

    floor = statistics.median(rows["/static/observe.css"])
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{dt.date.today().isoformat()}; {PROJECTS} projects, {lines:,} audit lines ({size / 2**20:.0f} MiB, "
        f"{count:,} records)\n"
    )
    print("| measure | median | p95 | × static file |")
    print("|---|---|---|---|")
    for path, title in (
        ("/static/observe.css", "static file (floor)"),
        ("/api/state", "`/api/state`"),
        ("/", "Live page `/` (between two changes)"),
        ("changed", "Live page `/` right after a change"),
    ):
        ratio = statistics.median(rows[path]) / floor
        print(f"| {title} | {ms(rows[path])} | {ms(rows[path], 0.95)} | {ratio:.1f} |")
    print(f"| audit append → `change` event | {ms(rows['push'])} | max {max(rows['push']) * 1000:.0f} ms | |")
    print(
        f"| one full rescan of the log (not done per request) | {rescan * 1000:.0f} ms | | "
        f"{rescan / statistics.median(rows['/api/state']):.0f}× `/api/state` |"
    )
    print(f"| start-up: spawn → listening | {startup['listening']:.1f} s | | |")
    print(
        f"| first answers, log still being read ({startup['percent']:.0f}% read) | "
        f"`/api/state` {startup['state'] * 1000:.0f} ms, `/` {startup['live'] * 1000:.0f} ms | | |"
    )
    print(f"| start-up: spawn → whole log read (in the background) | {startup['history']:.1f} s | | |")
    print(
        f"| server memory after the run | VmRSS {memory['VmRSS'] / 1024:.0f} MiB | peak {memory['VmHWM'] / 1024:.0f} MiB | |"
    )


if __name__ == "__main__":
    main()
