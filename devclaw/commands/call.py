"""``devclaw call TOOL [PARAMS_JSON]`` and ``devclaw tools``."""

from __future__ import annotations

import argparse
from typing import Any

from devclaw.cli import print_json, read_params
from devclaw.tools import call_tool, tool_specs
from devclaw.workspace import Workspace


def register(sub: Any) -> None:
    call = sub.add_parser("call", help="call a tool; prints its result as JSON")
    call.add_argument("tool", help="tool name (see `devclaw tools`)")
    call.add_argument("params", nargs="?", help="parameters as a JSON object (default: read from stdin)")
    call.set_defaults(handler=run_call)
    tools = sub.add_parser("tools", help="every tool with its description and JSON Schema")
    tools.set_defaults(handler=run_tools)


def run_call(ws: Workspace, args: argparse.Namespace) -> int:
    print_json(call_tool(ws, args.tool, read_params(args.params)))
    return 0


def run_tools(ws: Workspace, args: argparse.Namespace) -> int:
    print_json(tool_specs())
    return 0
