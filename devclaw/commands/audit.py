"""``devclaw audit``: query the audit log without jq."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

from devclaw.errors import InputError
from devclaw.workspace import Workspace


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="query the audit log")
    audit.add_argument("--event", help="only this event (task_pickup, task_complete, error, ...)")
    audit.add_argument("--project", help="only this project (name or group id)")
    audit.add_argument("--issue", type=int, help="only this issue number")
    audit.add_argument("--since", metavar="ISO", help="only events at or after this time (e.g. 2026-11-20)")
    audit.add_argument("--json", action="store_true", help="print matching lines as NDJSON")
    audit.set_defaults(handler=run_audit)


def run_audit(ws: Workspace, args: argparse.Namespace) -> int:
    ws.require_existing()
    since = _normalise_since(args.since) if args.since else None
    out = sys.stdout.buffer
    shown = 0
    for line, record in _matching(ws, args, since):
        shown += 1
        if args.json:
            out.write(line if line.endswith(b"\n") else line + b"\n")
        else:
            out.write((_readable(record) + "\n").encode())
    out.flush()
    if not shown:  # say what was read, so an empty answer is not mistaken for a wrong folder
        print(f"devclaw: no matching line in {ws.audit.path} ({len(ws.audit.files())} file(s) read)", file=sys.stderr)
    if ws.audit.skipped_lines:
        print(f"devclaw: {ws.audit.skipped_lines} torn or unreadable line(s) skipped", file=sys.stderr)
    return 0


def _matching(ws: Workspace, args: argparse.Namespace, since: str | None) -> Iterator[tuple[bytes, dict[str, Any]]]:
    for line, record in ws.audit.lines(event=args.event):
        if args.project and args.project not in (record.get("project"), record.get("groupId")):
            continue
        if args.issue is not None and record.get("issue") != args.issue:
            continue
        if since and str(record.get("ts", "")) < since:
            continue
        yield line, record


def _normalise_since(text: str) -> str:
    # Timestamps are ISO 8601 UTC ("2026-11-20T10:00:00.000Z"), so a prefix compares as text.
    if len(text) < 4 or not text[:4].isdigit():
        raise InputError(f"--since takes an ISO date or time such as 2026-11-20 or 2026-11-20T10:00, got {text!r}")
    return text.replace(" ", "T")


_HEAD = ("ts", "event", "project", "issue", "role")


def _readable(record: dict[str, Any]) -> str:
    head = [str(record.get("ts", "")), f"{record.get('event', '?'):<18}"]
    if record.get("project"):
        head.append(str(record["project"]))
    if record.get("issue") is not None:
        head.append(f"#{record['issue']}")
    if record.get("role"):
        head.append(str(record["role"]).upper())
    rest = {key: value for key, value in record.items() if key not in _HEAD and value is not None}
    return " ".join(head) + ("  " + json.dumps(rest, ensure_ascii=False) if rest else "")
