"""``devclaw cost``: tokens and money per task, from the ``usage`` of the audit log's task_complete lines.

The work loop records each worker run's usage on its ``task_complete`` line:
``usage: {"input", "output", "cacheRead", "cacheWrite", "cost"}`` (``cost`` in USD, null when the provider
does not price the model) and ``model`` (the full model id). Lines without usage (runs nobody measured)
are counted as ``unmeasured``.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

from devclaw.cli import print_json
from devclaw.commands.audit import _normalise_since
from devclaw.workspace import Workspace

GROUPINGS = ("role", "model", "project", "issue")
COUNTS = ("input", "output", "cacheRead", "cacheWrite")


@dataclass
class Total:
    key: str
    tasks: int = 0
    unmeasured: int = 0
    input: int = 0
    output: int = 0
    cacheRead: int = 0  # the audit line's field names
    cacheWrite: int = 0
    cost: float | None = None

    def add(self, record: dict[str, Any]) -> None:
        self.tasks += 1
        usage = record.get("usage")
        if not isinstance(usage, dict):
            self.unmeasured += 1
            return
        for name in COUNTS:
            value = usage.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, name, getattr(self, name) + value)
        cost = usage.get("cost")
        if isinstance(cost, int | float) and not isinstance(cost, bool):
            self.cost = (self.cost or 0.0) + float(cost)


def register(sub: Any) -> None:
    cost = sub.add_parser("cost", help="tokens and cost of the workers' runs, from the audit log")
    cost.add_argument("--project", help="only this project (name or group id)")
    cost.add_argument("--issue", type=int, help="only this issue number")
    cost.add_argument("--since", metavar="ISO", help="only tasks completed at or after this time")
    cost.add_argument("--by", choices=GROUPINGS, help="one total per role, model, project or issue")
    cost.add_argument("--json", action="store_true", help="print the totals as JSON")
    cost.set_defaults(handler=run_cost)


def run_cost(ws: Workspace, args: argparse.Namespace) -> int:
    totals = collect(ws, args)
    if args.json:
        print_json({"by": args.by, "totals": [asdict(total) for total in totals]})
    else:
        print(render(totals, args.by))
    return 0


def collect(ws: Workspace, args: argparse.Namespace) -> list[Total]:
    since = _normalise_since(args.since) if args.since else None
    totals: dict[str, Total] = {}
    for record in ws.audit.records(event="task_complete"):
        if args.project and args.project not in (record.get("project"), record.get("groupId")):
            continue
        if args.issue is not None and record.get("issue") != args.issue:
            continue
        if since and str(record.get("ts", "")) < since:
            continue
        key = _key(record, args.by)
        totals.setdefault(key, Total(key)).add(record)
    return sorted(totals.values(), key=lambda total: total.key) or [Total("all")]


def _key(record: dict[str, Any], by: str | None) -> str:
    if by is None:
        return "all"
    if by == "issue":
        return f"{record.get('project', '?')}#{record.get('issue', '?')}"
    value = record.get(by)
    return str(value) if value is not None else "(unknown)"


def render(totals: list[Total], by: str | None) -> str:
    header = f"{by or 'total':<32} {'tasks':>6} {'input':>10} {'output':>9} {'cache rd':>10} {'cache wr':>9} {'USD':>9}"
    lines = [header]
    for t in totals:
        usd = f"{t.cost:.4f}" if t.cost is not None else "-"
        lines.append(f"{t.key[:32]:<32} {t.tasks:>6} {t.input:>10} {t.output:>9} {t.cacheRead:>10} "
                     f"{t.cacheWrite:>9} {usd:>9}")  # fmt: skip
    unmeasured = sum(t.unmeasured for t in totals)
    if unmeasured:
        lines.append(f"\n{unmeasured} task(s) have no usage recorded (completed by hand or before the loop)")
    return "\n".join(lines)
