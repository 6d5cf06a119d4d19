"""Load: orchestrator processes drive projects on the embedded tracker through full issue lifecycles,
with session_health (autoFix) running concurrently, then every invariant is checked.

    .venv/bin/python benchmarks/bench_load.py                      # 4 processes, 20 projects, 1,000 lifecycles
    .venv/bin/python benchmarks/bench_load.py --lifecycles 200     # a smaller run

A lifecycle is one issue from To Do to Done or Refining: DEV pickup, confirm, done, QA pickup, confirm,
then a random QA result (pass 60 %, fail 30 %, refine 10 %); a fail sends it back to DEV, and the loop
brake sends the third fail to Refining. Every process races every other for the same projects, so most
pickups of a busy worker are refused: those refusals are the point of the run. Prints a JSON report with
the throughput and the problems found (none, or the run failed); tests/test_load.py runs a smaller size.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devclaw.errors import DevclawError
from devclaw.state import Project, TrackerConfig
from devclaw.tools import call_tool
from devclaw.trackers.local import LocalTracker
from devclaw.workflow import DEFAULT, Label
from devclaw.workspace import Workspace

OUTCOMES = ("pass",) * 6 + ("fail",) * 3 + ("refine",)
UNFINISHED = (Label.TO_DO, Label.TO_IMPROVE, Label.DOING, Label.TO_TEST, Label.TESTING)
STOP_FILE = "load.stop"


def group_id(index: int) -> str:
    return f"-100{index:010d}"


def session(gid: str, role: str) -> str:
    return f"agent:load:{gid}:{role}"


def setup(root: Path, projects: int, lifecycles: int) -> Workspace:
    from devclaw.registry import register_project

    ws = Workspace(root)
    ws.memory.mkdir(parents=True, exist_ok=True)
    for index in range(projects):
        name = f"load-{index}"
        register_project(ws, group_id(index), Project(name=name, tracker=TrackerConfig(provider="local", path=name)))
    for number in range(lifecycles):
        tracker = LocalTracker(ws.memory / "tracker.sqlite3", f"load-{number % projects}")
        tracker.create_issue(f"Issue {number}", "Load test issue.", (Label.TO_DO.value,))
    return ws


class Driver:
    """One orchestrator process: counts every call it makes, by tool and outcome."""

    def __init__(self, ws: Workspace, seed: int) -> None:
        self.ws, self.rng = ws, random.Random(seed)
        self.ok: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.repeated: Counter[str] = Counter()

    def call(self, tool: str, **params: Any) -> dict[str, Any] | None:
        try:
            result = call_tool(self.ws, tool, params)
        except DevclawError:
            self.failed[tool] += 1
            return None
        if result.get("repeated"):
            # Another process already did this (its worker has the issue): a lost race, not ours to finish.
            self.repeated[tool] += 1
            return None
        self.ok[tool] += 1
        return result

    def run(self) -> None:
        groups = list(self.ws.store.read().projects)
        while True:
            progress = False
            for gid in self.rng.sample(groups, len(groups)):
                progress |= self.step(gid)
            if not progress and self.finished(groups):
                return

    def step(self, gid: str) -> bool:
        project = self.ws.store.read().project(gid)
        tracker = self.ws.tracker(project)
        if not project.worker("qa").active:
            for issue in tracker.list_issues(Label.TO_TEST)[:1]:
                return self.lifecycle_step(gid, issue.id, "qa", self.rng.choice(OUTCOMES))
        if not project.worker("dev").active:
            for issue in (tracker.list_issues(Label.TO_IMPROVE) + tracker.list_issues(Label.TO_DO))[:1]:
                return self.lifecycle_step(gid, issue.id, "dev", "done")
        return False

    def lifecycle_step(self, gid: str, issue: int, role: str, result: str) -> bool:
        picked = self.call("task_pickup", issueId=issue, role=role, projectGroupId=gid)
        if picked is None:
            return False  # another process was first: the refusal is the expected outcome of a race
        if picked["sessionAction"] == "spawn":  # as the instructions say: confirm what was spawned
            self.call("task_pickup_confirm", projectGroupId=gid, role=role, sessionId=session(gid, role))
        self.call("task_complete", role=role, result=result, projectGroupId=gid, summary=f"{role} {result}")
        return True

    def finished(self, groups: list[str]) -> bool:
        state = self.ws.store.read()
        for gid in groups:
            tracker = self.ws.tracker(state.project(gid))
            if any(label.value in issue.labels for issue in tracker.list_issues() for label in UNFINISHED):
                time.sleep(0.01)  # another process holds that work; let it finish
                return False
        return True


def health_loop(ws: Workspace, groups: list[str]) -> dict[str, Any]:
    sessions = [session(gid, role) for gid in groups for role in DEFAULT.roles]
    ok, findings = 0, []
    while not (ws.memory / STOP_FILE).exists():
        result = call_tool(ws, "session_health", {"autoFix": True, "activeSessions": sessions})
        ok += 1
        findings += result["issues"]
        time.sleep(0.05)
    return {"ok": {"session_health": ok}, "failed": {}, "findings": findings}


def worker_main(root: Path, seed: int, health: bool) -> None:
    ws = Workspace(root)
    if health:
        report = health_loop(ws, list(ws.store.read().projects))
    else:
        driver = Driver(ws, seed)
        driver.run()
        report = {"ok": dict(driver.ok), "failed": dict(driver.failed), "findings": []}
    print(json.dumps(report))


def run_load(root: Path, *, projects: int, lifecycles: int, processes: int, seed: int = 1) -> dict[str, Any]:
    """Set up the workspace, run the processes and the health loop, verify; return the report."""
    ws = setup(root, projects, lifecycles)
    script = str(Path(__file__).resolve())
    argv = [sys.executable, script, "--worker", "--root", str(root)]
    health = subprocess.Popen([*argv, "--health"], stdout=subprocess.PIPE, text=True)
    start = time.perf_counter()
    drivers = [subprocess.Popen([*argv, "--seed", str(seed + n)], stdout=subprocess.PIPE, text=True)
               for n in range(processes)]  # fmt: skip
    outputs = [proc.communicate(timeout=1800)[0] for proc in drivers]
    elapsed = time.perf_counter() - start
    (ws.memory / STOP_FILE).touch()
    outputs.append(health.communicate(timeout=120)[0])
    codes = [proc.returncode for proc in [*drivers, health]]
    reports = [json.loads(out) for out in outputs if out.strip()]
    ok: Counter[str] = sum((Counter(r["ok"]) for r in reports), Counter())
    failed: Counter[str] = sum((Counter(r["failed"]) for r in reports), Counter())
    findings = [finding for r in reports for finding in r["findings"]]
    problems = [f"process exit codes {codes}"] if any(codes) else []
    problems += [f"session_health found {f['type']} during the run: {f['message']}" for f in findings]
    problems += verify(ws, projects, ok, failed)
    return {
        "processes": processes,
        "projects": projects,
        "lifecycles": lifecycles,
        "seconds": round(elapsed, 2),
        "lifecyclesPerSecond": round(lifecycles / elapsed, 1),
        "successfulCalls": dict(ok),
        "refusedCalls": dict(failed),
        "problems": problems,
    }


def verify(ws: Workspace, projects: int, ok: Counter[str], failed: Counter[str]) -> list[str]:
    """Every invariant of a finished run; returns what is wrong (nothing, in a good run)."""
    problems = []
    state = ws.store.read()
    for project in state.projects.values():
        tracker = ws.tracker(project)
        for role in DEFAULT.roles:
            if project.worker(role).active:
                problems.append(f"{project.name}: {role} worker still active")
            if tracker.list_issues(DEFAULT.roles[role].active_label):
                problems.append(f"{project.name}: issues left on {DEFAULT.roles[role].active_label}")
        unfinished = [i.id for i in tracker.list_issues() if i.label != Label.REFINING]
        if unfinished:
            problems.append(f"{project.name}: issues not finished: {unfinished}")
    events = Counter(record["event"] for record in ws.audit.records())
    expected = Counter({
        "project_register": projects, "task_pickup": ok["task_pickup"], "model_selection": ok["task_pickup"],
        "task_pickup_confirm": ok["task_pickup_confirm"], "task_complete": ok["task_complete"],
        "health_check": ok["session_health"], "error": sum(failed.values()),
    })  # fmt: skip
    if +events != +expected:
        problems.append(f"audit lines {dict(events)} != successful and refused calls {dict(expected)}")
    problems += _double_picks(ws)
    return problems


def _double_picks(ws: Workspace) -> list[str]:
    """Per issue, each pickup must be matched by exactly one completion of the same role, and DEV picks an
    issue up once, plus once per QA fail that sent it back: an extra pickup is a double pick."""
    seen: Counter[tuple[str, int, str]] = Counter()
    for record in ws.audit.records():
        key = (record.get("groupId", ""), record.get("issue", 0))
        if record["event"] == "task_pickup":
            seen[(*key, f"pickup-{record['role']}")] += 1
        elif record["event"] == "task_complete":
            back_to_dev = record["result"] == "fail" and not record.get("loopBrake")
            seen[(*key, f"complete-{record['role']}")] += 1
            seen[(*key, "sent-back")] += back_to_dev
    issues = {(gid, issue) for gid, issue, _ in seen}
    problems = []
    for gid, issue in sorted(issues):
        count = {kind: seen[(gid, issue, kind)] for kind in ("pickup-dev", "complete-dev", "pickup-qa", "complete-qa")}
        if not (
            count["pickup-dev"] == count["complete-dev"] == count["pickup-qa"] == count["complete-qa"]
            and count["pickup-dev"] == 1 + seen[(gid, issue, "sent-back")]
        ):
            problems.append(f"{gid} #{issue}: pickups and completions do not match: {count}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--projects", type=int, default=20)
    parser.add_argument("--lifecycles", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--health", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.root, args.seed, args.health)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        report = run_load(Path(tmp) / "ws", projects=args.projects, lifecycles=args.lifecycles,
                          processes=args.processes, seed=args.seed)  # fmt: skip
    print(json.dumps(report, indent=2))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
