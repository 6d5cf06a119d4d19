"""Core benchmark: cold CLI calls, the state commit with 1,000 projects, the audit log with 1,000,000 lines.

Run from the repository root with the project's virtualenv:

    .venv/bin/python benchmarks/bench_core.py            # the full run (a few minutes on 2 cores)
    .venv/bin/python benchmarks/bench_core.py --quick    # fewer runs and a 100,000-line log, to try it out

It prints a Markdown table (the numbers in docs/PERFORMANCE.md come from it) and progress on stderr.
Everything happens in a temporary folder that is removed at the end. Times are wall-clock medians;
the cold calls are real subprocesses of the installed ``devclaw`` script, measured in the same run as a
bare ``python3 -c pass`` (interleaved, so load from other processes hits both alike).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from devclaw.audit import AuditLog
from devclaw.state import Project, ProjectsFile, TrackerConfig, Worker
from devclaw.tools import call_tool
from devclaw.trackers.local import LocalTracker
from devclaw.workflow import Label
from devclaw.workspace import Workspace

BIN = Path(sys.executable).parent
DEVCLAW = str(BIN / "devclaw")
#: The baseline: the virtualenv's ``python3``, the very interpreter and site setup that runs ``devclaw``.
VENV_PYTHON = str(BIN / "python3") if (BIN / "python3").exists() else sys.executable
#: The interpreter the virtualenv was made from, with its own site-packages (whatever .pth files they hold).
SYSTEM_PYTHON = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
BASELINE = "python3 -c pass"
JQ = shutil.which("jq")
GROUP = "-1001234567890"
PICKUP_EVENT = "task_pickup"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def run_timed(cmd: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall time and CPU time (user + system of the child) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"benchmark command failed ({done.returncode}): {' '.join(cmd)}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def wall(cmd: Sequence[str], env: dict[str, str] | None = None) -> float:
    return run_timed(cmd, env)[0]


# --------------------------------------------------------------------------------------------------- machine


def machine() -> dict[str, str]:
    cpu = "unknown"
    with Path("/proc/cpuinfo").open() as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with Path("/proc/meminfo").open() as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()} ({SYSTEM_PYTHON})",
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# --------------------------------------------------------------------------------------------------- (a) cold


def local_workspace(root: Path, issues: int) -> Workspace:
    from devclaw.registry import register_project

    ws = Workspace(root)
    ws.memory.mkdir(parents=True)
    register_project(ws, GROUP, Project(name="webapp", tracker=TrackerConfig(provider="local", path="webapp")))
    tracker = LocalTracker(ws.memory / "tracker.sqlite3", "webapp")
    for n in range(issues):
        tracker.create_issue(
            f"Issue {n + 1}: add a settings page", "A form and its API endpoint.", (Label.TO_DO.value,)
        )
    return ws


def free_dev_worker(ws: Workspace) -> None:
    def free(state: ProjectsFile) -> ProjectsFile:
        project = state.project(GROUP)
        workers = {
            **project.workers,
            "dev": [project.worker("dev").model_copy(update={"active": False, "issue_id": None})],
        }
        return state.model_copy(
            update={"projects": {**state.projects, GROUP: project.model_copy(update={"workers": workers})}}
        )

    ws.store.update(free)


def cold_calls(tmp: Path, runs: int) -> dict[str, list[tuple[float, float]]]:
    """(wall, cpu) of each run: the baseline, the system interpreter, and the two calls, interleaved."""
    ws = local_workspace(tmp / "cold", runs + 2)
    env = {**os.environ, "DEVCLAW_WORKSPACE": str(ws.root)}
    base = [DEVCLAW, "call"]
    times: dict[str, list[tuple[float, float]]] = defaultdict(list)
    # One warm-up of each, so the first measured run does not pay for cold disk caches.
    wall([VENV_PYTHON, "-c", "pass"])
    wall([*base, "queue_status", "{}"], env)
    for n in range(runs):
        times[BASELINE].append(run_timed([VENV_PYTHON, "-c", "pass"]))
        times["python3 -c pass (system interpreter, outside the venv)"].append(run_timed([SYSTEM_PYTHON, "-c", "pass"]))
        times["devclaw call queue_status"].append(run_timed([*base, "queue_status", "{}"], env))
        free_dev_worker(ws)  # not timed: the pickup needs an idle worker and a fresh issue in To Do
        params = json.dumps({"projectGroupId": GROUP, "issueId": n + 1, "role": "dev"})
        times["devclaw call task_pickup"].append(run_timed([*base, "task_pickup", params], env))
    return times


PHASES = """
import contextlib, io, json, sys, time
t0 = time.perf_counter()
import devclaw.cli
devclaw.cli._parser()
t1 = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    rc = devclaw.cli.main(sys.argv[1:])
t2 = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    devclaw.cli.main(sys.argv[1:])
t3 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "call": t2 - t1, "again": t3 - t2, "rc": rc}), file=sys.stderr)
"""


def phases(ws_root: Path, runs: int) -> dict[str, float]:
    """Where a cold queue_status call spends its time: interpreter start, devclaw's imports, the call."""
    env = {**os.environ, "DEVCLAW_WORKSPACE": str(ws_root)}
    parts: dict[str, list[float]] = defaultdict(list)
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(
            [VENV_PYTHON, "-c", PHASES, "call", "queue_status", "{}"], env=env, capture_output=True, check=True
        )
        total = time.perf_counter() - start
        inner = json.loads(done.stderr.decode().strip().splitlines()[-1])
        total -= inner["again"]
        parts["interpreter start + site + exit"].append(total - inner["imports"] - inner["call"])
        parts["import devclaw.cli + build parser (all commands, tools, pydantic, filelock)"].append(inner["imports"])
        parts["the call (lazy sqlite3/tracker imports, projects.json, SQLite, audit line)"].append(inner["call"])
        parts["total"].append(total)
        parts["(the same call again in the same process: the work without any import)"].append(inner["again"])
    return {name: statistics.median(values) for name, values in parts.items()}


# --------------------------------------------------------------------------------------------------- (b) imports

_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")
ImportGroup = tuple[str, float, int, str]
CALL_PATH = "import sys; from devclaw.cli import main; sys.exit(main(sys.argv[1:]))"


def _owner_key(name: str, stdlib: set[str]) -> str | None:
    """The group a module is reported under, or None for a standard-library module (charged to its importer)."""
    top = name.split(".")[0]
    if top == "devclaw":
        return name
    if top in stdlib or top.startswith("_") or top in {"encodings", "site", "sitecustomize"}:
        return None
    return top


def import_groups(ws_root: Path, runs: int, tool: str = "queue_status") -> tuple[list[ImportGroup], float, list[str]]:
    """Import self time per group, median over ``runs`` ``-X importtime`` runs of the real call path.

    A group is a third-party package or a devclaw module; a standard-library module is charged to the
    nearest non-standard-library module that imported it (``logging`` under ``filelock``, ``sqlite3``
    under ``devclaw.trackers.local``), or to "python startup + devclaw.cli's own stdlib" at the top.
    Returns the groups (name, median self time, modules, biggest stdlib modules it brought in), the
    median total, and the module names of the last run."""
    env = {**os.environ, "DEVCLAW_WORKSPACE": str(ws_root)}
    params = "{}" if tool == "queue_status" else json.dumps({"projectGroupId": GROUP, "issueId": 1, "role": "dev"})
    stdlib = set(sys.stdlib_module_names)
    top_level = "python startup + devclaw.cli's own stdlib"
    per_run: list[dict[str, float]] = []
    counts: dict[str, int] = {}
    brought: dict[str, dict[str, float]] = {}
    modules: list[str] = []
    for _ in range(runs):
        done = subprocess.run(
            [VENV_PYTHON, "-X", "importtime", "-c", CALL_PATH, "call", tool, params],
            env=env,
            capture_output=True,
            check=True,
        )
        rows = []
        for line in done.stderr.decode().splitlines():
            match = _IMPORT_LINE.match(line)
            if match:
                rows.append((int(match.group(1)) / 1e6, len(match.group(3)), match.group(4)))
        modules = [name for _, _, name in rows]
        groups: dict[str, float] = defaultdict(float)
        count: dict[str, int] = defaultdict(int)
        stdlib_in: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        # importtime prints a module after its children (post-order); reversed, parents come first.
        stack: list[tuple[int, str]] = []
        for self_s, depth, name in reversed(rows):
            while stack and stack[-1][0] >= depth:
                stack.pop()
            own = _owner_key(name, stdlib)
            owner = own or (stack[-1][1] if stack else top_level)
            stack.append((depth, owner))
            groups[owner] += self_s
            count[owner] += 1
            if own is None:
                stdlib_in[owner][name.split(".")[0]] += self_s
        per_run.append(groups)
        counts = dict(count)
        brought = {key: dict(value) for key, value in stdlib_in.items()}
    names = set().union(*per_run)
    medians = {name: statistics.median(run.get(name, 0.0) for run in per_run) for name in names}
    total = statistics.median(sum(run.values()) for run in per_run)
    ordered = []
    for name, value in sorted(medians.items(), key=lambda item: -item[1]):
        top = sorted(brought.get(name, {}).items(), key=lambda item: -item[1])[:4]
        ordered.append((name, value, counts.get(name, 0), ", ".join(module for module, _ in top)))
    return ordered, total, modules


# --------------------------------------------------------------------------------------------------- (c) state


def big_state_workspace(root: Path, projects: int, pickups: int) -> tuple[Workspace, list[str]]:
    ws = Workspace(root)
    ws.memory.mkdir(parents=True)
    state = ProjectsFile()
    group_ids = []
    for k in range(projects):
        gid = f"-100{k:010d}"
        group_ids.append(gid)
        project = Project(name=f"project-{k}", group_name=f"Dev - Project {k}", repo=f"/srv/git/project-{k}",
                          tracker=TrackerConfig(provider="local", path=f"project-{k}"))  # fmt: skip
        if k % 3 == 0:  # a third of the projects have a QA worker busy, with a session
            project.workers["qa"] = [
                Worker(
                    active=True,
                    issue_id=7,
                    model="grok",
                    start_time="2026-11-20T08:00:00Z",
                    session_id=f"agent:devclaw:subagent:{k:08x}-qa",
                )
            ]
        state.projects[gid] = project
    with ws.store.locked():
        ws.store.write(state)
    db = ws.memory / "tracker.sqlite3"
    for gid in group_ids[:pickups]:
        LocalTracker(db, state.projects[gid].tracker.path or "").create_issue(
            "Add login page", "A login form with email and password.", (Label.TO_DO.value,)
        )
    return ws, group_ids


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    values = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        values.append(time.perf_counter() - start)
    return values


def state_commit(tmp: Path, projects: int, runs: int) -> dict[str, Any]:
    ws, group_ids = big_state_workspace(tmp / "state", projects, runs)
    store = ws.store
    results: dict[str, Any] = {"size": store.path.stat().st_size}

    write_only: list[float] = []
    for _ in range(runs):
        with store.locked() as state:
            start = time.perf_counter()
            store.write(state)
            write_only.append(time.perf_counter() - start)

    def locked_read_write() -> None:
        with store.locked() as state:
            store.write(state)

    state = store.read()
    results["ProjectStore.read() (parse + validate)"] = timed(store.read, runs)
    results["model_dump_json (serialise)"] = timed(lambda: state.model_dump_json(by_alias=True, indent=2), runs)
    results["ProjectStore.write() under locked() (the commit)"] = write_only
    results["locked(): lock + read + write + unlock"] = timed(locked_read_write, runs)
    pickups: list[float] = []
    for gid in group_ids[:runs]:
        params = {"projectGroupId": gid, "issueId": 1, "role": "dev"}
        start = time.perf_counter()
        call_tool(ws, "task_pickup", params)
        pickups.append(time.perf_counter() - start)
    results["whole task_pickup in-process (call_tool)"] = pickups
    return results


# --------------------------------------------------------------------------------------------------- (d) audit

_MODELS = (("haiku", 'Simple task ("fix typo", 8 words)'), ("sonnet", "Standard dev task"), ("opus", "Complex task"))


def audit_line(n: int, ts: dt.datetime, rng: random.Random) -> str:
    """One line as ``AuditLog.append`` writes it, for a plausible mix of events (about 10% task_pickup)."""
    k = rng.randrange(100)
    project = f"project-{rng.randrange(40)}"
    group = f"-100{rng.randrange(10**10):010d}"
    issue = rng.randrange(1, 500)
    role = "dev" if k % 2 else "qa"
    model, reason = _MODELS[k % 3] if role == "dev" else ("grok", "Default QA model")
    record: dict[str, Any] = {"ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    if k < 45:
        record |= {"event": "queue_status", "projectCount": 40, "totalToImprove": k % 4, "totalToTest": k % 7,
                   "totalToDo": k % 23, "projectErrors": 0}  # fmt: skip
    elif k < 55:
        session = f"agent:devclaw:subagent:{n:08x}-{role}" if k % 4 else None
        record |= {"event": "task_pickup", "project": project, "groupId": group, "issue": issue,
                   "issueTitle": f"Issue {issue}: add a settings page", "role": role, "model": model,
                   "modelReason": reason, "sessionAction": "send" if session else "spawn", "sessionId": session,
                   "labelTransition": "To Do → Doing" if role == "dev" else "To Test → Testing"}  # fmt: skip
    elif k < 65:
        record |= {"event": "model_selection", "issue": issue, "role": role, "selected": model,
                   "fullModel": f"anthropic/claude-{model}-4-5", "reason": reason, "override": None}  # fmt: skip
    elif k < 70:
        record |= {"event": "task_pickup_confirm", "project": project, "groupId": group, "role": role,
                   "issue": issue, "sessionId": f"agent:devclaw:subagent:{n:08x}-{role}",
                   "previousSessionId": None}  # fmt: skip
    elif k < 80:
        record |= {"event": "task_complete", "project": project, "groupId": group, "issue": issue, "role": role,
                   "result": "done" if role == "dev" else "pass", "summary": "Login form with validation",
                   "labelTransition": "Doing → To Test" if role == "dev" else "Testing → Done",
                   "gitPull": "Already up to date."}  # fmt: skip
    elif k < 95:
        record |= {"event": "health_check", "projectsScanned": 40, "issuesFound": k % 2, "fixesApplied": 0,
                   "autoFix": False, "activeSessionsProvided": True}  # fmt: skip
    elif k < 98:
        record |= {"event": "error", "tool": "task_pickup", "type": "workflow",
                   "message": f"DEV worker already active on {project} (issue: {issue}). Complete current task first.",
                   "params": {"projectGroupId": group, "issueId": issue, "role": role}}  # fmt: skip
    else:
        record |= {"event": "issue_label", "project": project, "groupId": group, "issue": issue,
                   "labelTransition": "Refining → To Do", "forced": False}  # fmt: skip
    return json.dumps(record, ensure_ascii=False) + "\n"


def write_audit_log(path: Path, lines: int) -> int:
    rng = random.Random(20261120)
    ts = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    step = dt.timedelta(seconds=25)
    pickups = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        batch: list[str] = []
        for n in range(lines):
            line = audit_line(n, ts + n * step, rng)
            pickups += '"event": "task_pickup",' in line
            batch.append(line)
            if len(batch) == 10_000:
                handle.writelines(batch)
                batch.clear()
        handle.writelines(batch)
    return pickups


def append_times(path: Path, runs: int) -> list[float]:
    audit = AuditLog(path)
    fields = {"projectCount": 40, "totalToImprove": 1, "totalToTest": 2, "totalToDo": 9, "projectErrors": 0}
    return timed(lambda: audit.append("queue_status", **fields), runs)


def audit_bench(tmp: Path, lines: int, runs: int, append_runs: int) -> dict[str, Any]:
    root = tmp / "audit"
    # One 1,000,000-line file, as the target says: no rotation (its default limit would split it).
    os.environ["DEVCLAW_AUDIT_MAX_BYTES"] = str(1 << 40)
    log_path = root / "memory" / "audit.log"
    start = time.perf_counter()
    pickups = write_audit_log(log_path, lines)
    log(f"  wrote {lines:,} lines ({log_path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - start:.1f} s")
    results: dict[str, Any] = {"lines": lines, "pickups": pickups, "size": log_path.stat().st_size}

    devclaw_cmd = [DEVCLAW, "--workspace", str(root), "audit", "--event", PICKUP_EVENT, "--json"]
    jq_cmd = [JQ or "jq", "-c", f'select(.event=="{PICKUP_EVENT}")', str(log_path)]
    # Same answer first (a count of lines), then the timing; one untimed run of each warms the page cache.
    for name, cmd in (("devclaw", devclaw_cmd), ("jq", jq_cmd)):
        if name == "jq" and JQ is None:
            continue
        out = subprocess.run(cmd, capture_output=True, check=True).stdout
        results[f"{name} lines"] = out.count(b"\n")
    query: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for _ in range(runs):
        query["devclaw audit --event task_pickup --json"].append(run_timed(devclaw_cmd))
        if JQ is not None:
            query["jq -c 'select(.event==\"task_pickup\")'"].append(run_timed(jq_cmd))
    results["query"] = dict(query)

    results["append at 0 lines"] = append_times(root / "empty" / "audit.log", append_runs)
    results[f"append at {lines:,} lines"] = append_times(log_path, append_runs)
    return results


# --------------------------------------------------------------------------------------------------- report


def section_cold(say: Callable[[str], None], args: argparse.Namespace, tmp: Path) -> None:
    log(f"(a) cold calls, {args.runs} runs each ...")
    cold = cold_calls(tmp, args.runs)
    bare = statistics.median(w for w, _ in cold[BASELINE])
    say(f"### Cold calls on the embedded tracker ({args.runs} runs each, interleaved)")
    say("")
    say(f"Baseline `{BASELINE}` is `{VENV_PYTHON} -c pass`: the interpreter and site setup that run `devclaw`.")
    say("")
    say(f"| command | wall median | wall p95 | wall min | ratio to `{BASELINE}` (median) | CPU user+sys median |")
    say("|---|---:|---:|---:|---:|---:|")
    for name, pairs in cold.items():
        walls = [w for w, _ in pairs]
        med = statistics.median(walls)
        cpu = statistics.median(c for _, c in pairs)
        say(f"| `{name}` | {ms(med)} | {ms(p95(walls))} | {ms(min(walls))} | {med / bare:.1f}x | {ms(cpu)} |")
    say("")

    log("    phases ...")
    parts = phases(tmp / "cold", max(5, args.runs // 2))
    say("Where a cold `devclaw call queue_status` goes (median of the phases, measured inside the process):")
    say("")
    say("| phase | median |")
    say("|---|---:|")
    for name, value in parts.items():
        say(f"| {name} | {ms(value)} |")
    say("")


def section_imports(say: Callable[[str], None], args: argparse.Namespace, tmp: Path) -> None:
    log("(b) import breakdown ...")
    if not (tmp / "cold").exists():
        local_workspace(tmp / "cold", 2)
    groups, _, modules = import_groups(tmp / "cold", args.import_runs)
    total = sum(g[1] for g in groups)
    banned = sorted({m.split(".")[0] for m in modules} & {"gitlab", "github", "requests", "urllib3"})
    say(f"### Imports of `devclaw call queue_status` (`-X importtime`, median of {args.import_runs} runs)")
    say("")
    say(f"{len(modules)} modules, {ms(total)} of import time as `-X importtime` counts it (it inflates every "
        f"module a little). HTTP libraries imported: {', '.join(banned) or 'none'}. Standard-library modules "
        "are charged to the package or devclaw module that imported them.")  # fmt: skip
    say("")
    say("| imported by / package | modules | self time | share | biggest stdlib modules it brings in |")
    say("|---|---:|---:|---:|---|")
    for name, value, count, stdlib_in in groups[:22]:
        say(f"| `{name}` | {count} | {ms(value)} | {value / total:.0%} | {stdlib_in} |")
    rest = groups[22:]
    if rest:
        value = sum(g[1] for g in rest)
        say(f"| {len(rest)} smaller groups | {sum(g[2] for g in rest)} | {ms(value)} | {value / total:.0%} | |")
    say("")


def section_state(say: Callable[[str], None], args: argparse.Namespace, tmp: Path) -> None:
    log(f"(c) projects.json with {args.projects:,} projects, {args.state_runs} runs ...")
    state = state_commit(tmp, args.projects, args.state_runs)
    say(f"### projects.json with {args.projects:,} projects ({state['size'] / 1e3:.0f} kB), "
        f"{args.state_runs} runs each")  # fmt: skip
    say("")
    say("| step | median | p95 |")
    say("|---|---:|---:|")
    for name, values in state.items():
        if name != "size":
            say(f"| {name} | {ms(statistics.median(values))} | {ms(p95(values))} |")
    say("")


def section_audit(say: Callable[[str], None], args: argparse.Namespace, tmp: Path) -> None:
    log(f"(d) audit.log with {args.audit_lines:,} lines ...")
    audit = audit_bench(tmp, args.audit_lines, args.query_runs, args.append_runs)
    say(f"### audit.log with {audit['lines']:,} lines ({audit['size'] / 1e6:.0f} MB, "
        f"{audit['pickups']:,} task_pickup = {audit['pickups'] / audit['lines']:.1%})")  # fmt: skip
    say("")
    say("| measurement | median | p95 / max | CPU user+sys median |")
    say("|---|---:|---:|---:|")
    for name in (k for k in audit if k.startswith("append")):
        values = audit[name]
        say(f"| `AuditLog.append` {name[len('append '):]} ({len(values)} appends) | "
            f"{statistics.median(values) * 1e6:.0f} µs | {p95(values) * 1e6:.0f} µs | |")  # fmt: skip
    query: dict[str, list[tuple[float, float]]] = audit["query"]
    for name, pairs in query.items():
        walls = [w for w, _ in pairs]
        cpu = statistics.median(c for _, c in pairs)
        say(f"| `{name}` ({len(pairs)} runs) | {ms(statistics.median(walls))} | {ms(max(walls))} | {ms(cpu)} |")
    if len(query) == 2:
        ours, theirs = (statistics.median(w for w, _ in pairs) for pairs in query.values())
        say(f"| ratio devclaw / jq (wall) | {ours / theirs:.2f}x | | |")
    say("")
    say(f"Both queries print the same number of lines: devclaw {audit['devclaw lines']:,}, "
        f"jq {audit.get('jq lines', 0):,}.")  # fmt: skip
    say("")


SECTIONS = {"cold": section_cold, "imports": section_imports, "state": section_state, "audit": section_audit}


def report(info: dict[str, str], args: argparse.Namespace, tmp: Path) -> None:
    out: list[str] = []
    say = out.append
    say(f"Machine: {info['cpu']}, {info['memory']} RAM, {info['os']}; {info['python']}")
    say(f"Date: {info['date']}; load average at start: {info['load']}")
    say("")
    for name in args.sections:
        SECTIONS[name](say, args, tmp)
    say(f"Load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\n".join(out))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=25, help="cold runs per command (default 25)")
    parser.add_argument("--import-runs", type=int, default=7, help="-X importtime runs (default 7)")
    parser.add_argument("--projects", type=int, default=1000, help="projects in projects.json (default 1000)")
    parser.add_argument("--state-runs", type=int, default=60, help="state commit runs (default 60)")
    parser.add_argument("--audit-lines", type=int, default=1_000_000, help="audit.log lines (default 1,000,000)")
    parser.add_argument("--query-runs", type=int, default=5, help="audit query runs each (default 5)")
    parser.add_argument("--append-runs", type=int, default=500, help="appends timed per file (default 500)")
    parser.add_argument("--quick", action="store_true", help="a short run to try the script")
    parser.add_argument(
        "--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS), help="run only these (default: all)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.import_runs, args.state_runs, args.audit_lines, args.query_runs = 5, 2, 10, 100_000, 2
    if not Path(DEVCLAW).exists():
        raise SystemExit(f"{DEVCLAW} not found: run this with the virtualenv's python (.venv/bin/python)")
    with tempfile.TemporaryDirectory(prefix="devclaw-bench-") as tmp:
        report(machine(), args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
