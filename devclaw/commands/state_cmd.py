"""``devclaw state rebuild``: a new projects.json from the backup, the audit log and the trackers."""

from __future__ import annotations

import argparse
from typing import Any

from devclaw.cli import print_json
from devclaw.rebuild import rebuild_state
from devclaw.workspace import Workspace


def register(sub: Any) -> None:
    state = sub.add_parser("state", help="repair projects.json").add_subparsers(
        dest="state_command", metavar="ACTION", required=True
    )
    rebuild = state.add_parser(
        "rebuild",
        help="rebuild a lost or unreadable projects.json from projects.json.bak, the audit log and the trackers",
    )
    rebuild.add_argument("--force", action="store_true", help="rebuild even if projects.json is valid")
    rebuild.set_defaults(handler=run_rebuild, json_output=True)


def run_rebuild(ws: Workspace, args: argparse.Namespace) -> int:
    ws.require_writable()
    report = rebuild_state(ws, force=args.force)
    print_json(report.as_json())
    return 0
