"""``devclaw init [DIR]``: make a folder a workspace (its ``memory/``), so tools and commands accept it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from devclaw.workspace import Workspace


def register(sub: Any) -> None:
    init = sub.add_parser("init", help="create a workspace (DIR/memory) for devclaw's files")
    init.add_argument(
        "dir", nargs="?", metavar="DIR", help="the folder (default: --workspace, $DEVCLAW_WORKSPACE or .)"
    )
    init.set_defaults(handler=run_init)


def run_init(ws: Workspace, args: argparse.Namespace) -> int:
    if args.dir is not None:
        ws = Workspace.resolve(str(Path(args.dir)))
    existed = ws.exists()
    ws.create()
    print(f"{'Already a' if existed else 'Created the'} devclaw workspace {ws.root} (files in {ws.memory}).")
    print(f"Next: devclaw --workspace {ws.root} project add GROUP_ID --name NAME")
    return 0
