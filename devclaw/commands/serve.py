"""``devclaw serve``: the long-lived process the OpenClaw plugin talks to."""

from __future__ import annotations

import argparse
from typing import Any

from devclaw.workspace import Workspace


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="serve tool calls as JSON lines on stdin/stdout (for the plugin)")
    serve.set_defaults(handler=run_serve)


def run_serve(ws: Workspace, args: argparse.Namespace) -> int:
    from devclaw.serve import run

    return run(args.workspace)
