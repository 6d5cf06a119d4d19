"""``devclaw call TOOL [PARAMS_JSON]`` and ``devclaw tools``."""

from __future__ import annotations

import argparse
from typing import Any

from devclaw.cli import print_json, read_params
from devclaw.tools import TOOLS, call_tool, tool_specs
from devclaw.workspace import Workspace


def register(sub: Any) -> None:
    call = sub.add_parser("call", help="call a tool; prints its result as JSON")
    call.add_argument("tool", help="tool name (see `devclaw tools`)")
    call.add_argument(
        "params", nargs="?",
        help="parameters as a JSON object; '-' reads them from stdin (default: {}, or stdin when it is a pipe or a file)",
    )  # fmt: skip
    call.set_defaults(handler=run_call, json_output=True)
    tools = sub.add_parser("tools", help="every tool with its description and JSON Schema")
    tools.set_defaults(handler=run_tools, json_output=True)


def run_call(ws: Workspace, args: argparse.Namespace) -> int:
    params = read_params(args.params)
    tool = TOOLS.get(args.tool)
    # An unknown tool is reported by call_tool itself; a known one needs a workspace that exists, and a
    # mutating one a writable workspace, before anything (a tracker included) is changed.
    if tool is not None and tool.mutating:
        ws.require_writable()
    elif tool is not None:
        ws.require_existing()
    print_json(call_tool(ws, args.tool, params))
    return 0


def run_tools(ws: Workspace, args: argparse.Namespace) -> int:
    print_json(tool_specs())
    return 0
