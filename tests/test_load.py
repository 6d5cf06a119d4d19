"""Load: 4 orchestrator processes race over 20 projects on the embedded tracker, with session_health
(autoFix) running concurrently: the full 1,000 lifecycles, as in benchmarks/bench_load.py (whose throughput
is in docs/PERFORMANCE.md); this test checks the outcome, never the time."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

from devclaw.workspace import Workspace
from tests.conftest import call

ROOT = Path(__file__).resolve().parent.parent


def bench_load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "benchmarks" / "bench_load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_load"] = module
    spec.loader.exec_module(module)
    return module


LIFECYCLES = 1_000


def test_concurrent_lifecycles_keep_every_invariant(tmp_path: Path) -> None:
    load = bench_load()
    report = load.run_load(tmp_path / "ws", projects=20, lifecycles=LIFECYCLES, processes=4)
    assert report["problems"] == []
    ok = report["successfulCalls"]
    assert (
        ok["task_pickup"] >= 2 * LIFECYCLES
        and ok["task_complete"] == ok["task_pickup"] >= ok["task_pickup_confirm"] >= 1
    )
    assert ok["session_health"] >= 1
    ws = Workspace(tmp_path / "ws")
    results = Counter(r["result"] for r in ws.audit.records(event="task_complete") if r["role"] == "qa")
    assert results["pass"] and results["fail"] and results["refine"]  # every path was driven
    assert call(ws, "session_health", checkTracker=True)["healthy"] is True


def test_verify_catches_a_double_pick_and_a_missing_audit_line(tmp_path: Path) -> None:
    # The checks of the load run must be able to fail: replay one pickup line and drop nothing else.
    load = bench_load()
    report = load.run_load(tmp_path / "ws", projects=2, lifecycles=4, processes=1)
    assert report["problems"] == []
    ws = Workspace(tmp_path / "ws")
    pickup = next(ws.audit.lines(event="task_pickup"))[0]
    with ws.audit.path.open("ab") as handle:
        handle.write(pickup)
    ok = Counter(report["successfulCalls"])
    problems = load.verify(ws, 2, ok, Counter(report["refusedCalls"]))
    assert any(p.startswith("audit lines") for p in problems)
    record = json.loads(pickup)
    assert any(p.startswith(f"{record['groupId']} #{record['issue']}: pickups and completions") for p in problems)
