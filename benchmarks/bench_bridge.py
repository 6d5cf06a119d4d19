"""Bridge benchmark: what the OpenClaw plugin's bridge adds to a tool call, and whether ``devclaw serve`` leaks.

Run from the repository root with the project's virtualenv (Node >= 20 on PATH, or NODE=/path/to/node):

    .venv/bin/python benchmarks/bench_bridge.py           # 200 timed calls per path, memory over 10,000 calls
    .venv/bin/python benchmarks/bench_bridge.py --quick   # 50 calls, memory over 1,000 calls

The same ``queue_status`` call (one project on the embedded tracker, five open issues) is timed three ways:
in-process ``call_tool``; through the plugin's own ``Bridge`` class from index.js (Node writes a JSON line
to one long-lived ``devclaw serve``, which answers on stdout); and as one ``devclaw call`` process per call.
The bridge's overhead is its median minus the in-process median. Memory is the resident size (VmRSS) of one
``devclaw serve`` after 100 calls and after 10,000. It prints a Markdown table (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devclaw.registry import register_project
from devclaw.state import Project, TrackerConfig
from devclaw.tools import call_tool
from devclaw.trackers.local import LocalTracker
from devclaw.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
GROUP = "-1001234567890"
TOOL = "queue_status"
PARAMS = {"projectGroupId": GROUP}
WARM_UP = 20

# Times `calls` bridge calls after a warm-up, then, on a fresh process, reads VmRSS at the checkpoints.
NODE_BENCH = """
import { readFileSync } from "node:fs";
import { Bridge } from "./index.js";
const [python, workspace, tool, params, calls, warmUp, checkpoints] = JSON.parse(process.argv[1]);
const quiet = { info() {}, warn: (line) => console.error(line), debug() {} };
const rss = (pid) => Number(/VmRSS:\\s+(\\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]);

let bridge = new Bridge({ python, timeoutMs: 60000, logger: quiet });
for (let i = 0; i < warmUp; i++) await bridge.call(tool, params, workspace);
const times = [];
for (let i = 0; i < calls; i++) {
  const started = process.hrtime.bigint();
  await bridge.call(tool, params, workspace);
  times.push(Number(process.hrtime.bigint() - started) / 1e6);
}
await bridge.stop();

bridge = new Bridge({ python, timeoutMs: 60000, logger: quiet });
const memory = {};
for (let done = 1; done <= Math.max(...checkpoints); done++) {
  await bridge.call(tool, params, workspace);
  if (checkpoints.includes(done)) memory[done] = rss(bridge.pid);
}
await bridge.stop();
console.log(JSON.stringify({ times, memory }));
"""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def make_workspace(root: Path) -> Workspace:
    ws = Workspace(root)
    ws.memory.mkdir(parents=True)
    register_project(ws, GROUP, Project(name="webapp", tracker=TrackerConfig(provider="local", path="webapp")))
    tracker = LocalTracker(ws.memory / "tracker.sqlite3", "webapp")
    for n in range(5):
        tracker.create_issue(f"Issue {n}", "A task.", ("To Do",))
    return ws


def timed(call: Callable[[], object], calls: int) -> list[float]:
    for _ in range(WARM_UP):
        call()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def in_process(ws: Workspace, calls: int) -> list[float]:
    return timed(lambda: call_tool(ws, TOOL, PARAMS), calls)


def per_call_process(ws: Workspace, calls: int) -> list[float]:
    command = [
        str(Path(sys.executable).parent / "devclaw"),
        "--workspace",
        str(ws.root),
        "call",
        TOOL,
        json.dumps(PARAMS),
    ]
    return timed(lambda: subprocess.run(command, check=True, capture_output=True), calls)


def through_bridge(ws: Workspace, calls: int, checkpoints: list[int]) -> dict[str, Any]:
    node = os.environ.get("NODE") or shutil.which("node")
    if not node:
        raise SystemExit("Node is needed for the bridge: put node on PATH or set NODE")
    argument = json.dumps([sys.executable, str(ws.root), TOOL, PARAMS, calls, WARM_UP, checkpoints])
    done = subprocess.run(
        [node, "--input-type=module", "-e", NODE_BENCH, argument], cwd=REPO, capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout)
    result["node"] = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    return result


def p95(times: list[float]) -> float:
    return statistics.quantiles(times, n=20, method="inclusive")[18]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 calls, memory over 1,000 calls")
    args = parser.parse_args()
    calls, memory_calls = (50, 1_000) if args.quick else (200, 10_000)

    with tempfile.TemporaryDirectory(prefix="devclaw-bench-bridge-") as tmp:
        ws = make_workspace(Path(tmp) / "ws")
        log(f"in-process: {calls} calls")
        local = in_process(ws, calls)
        log(f"bridge: {calls} calls, then {memory_calls} calls for memory")
        bridge = through_bridge(ws, calls, [100, memory_calls])
        log(f"devclaw call: {calls} processes")
        spawned = per_call_process(ws, calls)

    rows = [("in-process `call_tool`", local), ("bridge (index.js → `devclaw serve`)", bridge["times"])]
    rows.append(("one `devclaw call` process per call", spawned))
    base = statistics.median(local)
    print(
        f"Measured {dt.date.today()}, {os.cpu_count()} cores, Python {platform.python_version()}, Node {bridge['node']}, "
    )
    print(
        f"`{TOOL}` on the embedded tracker (1 project, 5 open issues), {calls} calls per path after {WARM_UP} warm-up calls:\n"
    )
    print("| path | median | p95 | median added to in-process |")
    print("|---|---|---|---|")
    for name, times in rows:
        median = statistics.median(times)
        print(f"| {name} | {median:.2f} ms | {p95(times):.2f} ms | {median - base:+.2f} ms |")
    small, large = bridge["memory"]["100"], bridge["memory"][str(memory_calls)]
    print(f"\n| `devclaw serve` resident size | after 100 calls | after {memory_calls:,} calls | change |")
    print("|---|---|---|---|")
    print(f"| VmRSS | {small / 1024:.1f} MiB | {large / 1024:.1f} MiB | {(large - small) / small:+.1%} |")


if __name__ == "__main__":
    main()
