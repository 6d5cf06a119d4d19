"""``devclaw``: parse the command line, dispatch to one command, map every failure to an exit code.

This is the one place an exception becomes what a terminal user sees; no traceback ever reaches them.
Exit codes: 0 success, 1 a devclaw error (the message says what to fix), 2 bad usage or input,
3 an internal error (a bug: please report it with the command you ran).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from devclaw.errors import InputError, error_payload, exit_code
from devclaw.workspace import Workspace

Command = Callable[[Workspace, argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    json_errors = args.command in {"call", "issue"}
    try:
        ws = Workspace.resolve(args.workspace)
        handler: Command = args.handler
        return handler(ws, args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 (the one place every failure becomes an exit code)
        return _report_failure(exc, json_errors)


def _report_failure(exc: BaseException, as_json: bool) -> int:
    payload = error_payload(exc)
    if as_json:
        print_json({"success": False, "error": payload})
    else:
        print(f"devclaw: {payload['message']}", file=sys.stderr)
    return exit_code(exc)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _parser() -> argparse.ArgumentParser:
    from devclaw.commands import audit, board, call, cost, demo, doctor, issue, observe, project, serve, state_cmd, tick

    parser = argparse.ArgumentParser(prog="devclaw", description="Deterministic dev -> QA pipeline tools.")
    parser.add_argument("--workspace", metavar="DIR", help="workspace folder (default: $DEVCLAW_WORKSPACE or .)")
    parser.set_defaults(command=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (call, project, issue, board, audit, demo, serve, doctor, state_cmd, tick, cost, observe):
        module.register(sub)
    return parser


def read_params(text: str | None) -> object:
    """A tool call's parameters: JSON from the argument, or from stdin when it is omitted."""
    if text is None:
        text = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    if not text.strip():
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"Parameters are not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None


if __name__ == "__main__":
    sys.exit(main())
