"""``devclaw tick``: one pass of the work loop (reconcile, then fill free worker slots), as JSON."""

from __future__ import annotations

import argparse
from typing import Any

from devclaw.cli import print_json
from devclaw.loop import call_loop
from devclaw.workspace import Workspace


def register(sub: Any) -> None:
    tick = sub.add_parser("tick", help="one work-loop pass: reconcile, then pick up work for every free worker")
    tick.add_argument("--sessions", metavar="KEYS",
                      help="comma-separated live session keys; without them no worker is judged dead")  # fmt: skip
    tick.add_argument("--dry-run", action="store_true", help="show what the tick would do; change nothing")
    tick.add_argument("--no-check-tracker", action="store_true", help="reconcile without comparing labels")
    tick.set_defaults(handler=run_tick)


def run_tick(ws: Workspace, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"dryRun": args.dry_run, "checkTracker": not args.no_check_tracker}
    if args.sessions is not None:
        params["activeSessions"] = [key.strip() for key in args.sessions.split(",") if key.strip()]
    print_json(call_loop(ws, "tick", params))
    return 0
