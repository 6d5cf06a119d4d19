"""``devclaw``: parse the command line, dispatch to one command, map every failure to an exit code.

This is the one place an exception becomes what a terminal user sees; no traceback ever reaches them.
Exit codes: 0 success, 1 a devclaw error (the message says what to fix), 2 bad usage or input,
3 an internal error (a bug: please report it with the command you ran).

One rule for how a failure is shown: a command whose output is JSON (``call``, ``tools``, ``issue create``,
``project add``, ``state rebuild``, ... and any command given ``--json``) prints
``{"success": false, "error": {"type", "message"}}`` on stdout; every other command prints one
``devclaw: <message>`` line on stderr. A usage error (an unknown option, a missing argument) is always
argparse's usage line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import select
import stat
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

from devclaw.errors import error_payload, exit_code
from devclaw.inputs import parse_params
from devclaw.workspace import WORKSPACE_ENV, Workspace

Command = Callable[[Workspace, argparse.Namespace], int]

WORKSPACE_HELP = f"workspace folder (default: ${WORKSPACE_ENV}, else the current directory)"
#: How long ``devclaw call`` waits for parameters on a pipe that has not delivered any yet.
STDIN_WAIT_SECONDS = 2.0


class Parser(argparse.ArgumentParser):
    """Every command also takes ``--workspace`` after its name; a mistyped choice gets a suggestion."""

    def __init__(self, *args: Any, top_level: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Below the top level the default is SUPPRESS, so a subcommand's missing option never
        # overwrites `devclaw --workspace DIR sub ...`.
        default = None if top_level else argparse.SUPPRESS
        self.add_argument("--workspace", metavar="DIR", default=default, help=WORKSPACE_HELP)

    def error(self, message: str) -> NoReturn:
        found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if found:
            choices = re.findall(r"'([^']*)'", found.group(2))
            close = difflib.get_close_matches(found.group(1), choices, n=1)
            if close:
                message += f"\n  did you mean: {close[0]}?"
        super().error(message)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    as_json = bool(getattr(args, "json", False) or getattr(args, "json_output", False))
    try:
        ws = Workspace.resolve(args.workspace)
        handler: Command = args.handler
        code = handler(ws, args)
        sys.stdout.flush()  # inside the try: a reader that went away is seen here, not at exit
        return code
    except BrokenPipeError as exc:
        if not _stdout_closed():
            return _report_failure(exc, as_json)
        return _quietly_after_closed_stdout()
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 (the one place every failure becomes an exit code)
        return _report_failure(exc, as_json)


def _report_failure(exc: BaseException, as_json: bool) -> int:
    payload = error_payload(exc)
    if as_json:
        print_json({"success": False, "error": payload})
    else:
        print(f"devclaw: {payload['message']}", file=sys.stderr)
    return exit_code(exc)


def _stdout_closed() -> bool:
    # `devclaw audit | head -1`: the reader has gone; that ends the output, it is not a failure.
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLERR)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError):
        return False


def _quietly_after_closed_stdout() -> int:
    # Python flushes stdout again at exit and would complain about the broken pipe on stderr.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 0


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def print_warning(message: str) -> None:
    print(f"devclaw: warning: {message}", file=sys.stderr)


def _version() -> str:
    try:
        return version("devclaw")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    from devclaw.commands import (
        audit,
        board,
        call,
        cost,
        demo,
        doctor,
        init,
        issue,
        observe,
        project,
        serve,
        setup_cmd,
        state_cmd,
        tick,
        workflow_cmd,
    )

    parser = Parser(prog="devclaw", description="Deterministic dev -> QA pipeline tools.", top_level=True)
    parser.add_argument("--version", action="version", version=f"devclaw {_version()}", help="print the version")
    parser.set_defaults(command=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (
        init,
        call,
        project,
        issue,
        board,
        audit,
        demo,
        doctor,
        state_cmd,
        setup_cmd,
        serve,
        tick,
        cost,
        observe,
        workflow_cmd,
    ):
        module.register(sub)
    return parser


def read_params(text: str | None) -> object:
    """A tool call's parameters: JSON from the argument; from stdin when it is ``-``, or when it is
    omitted and stdin is a file or a pipe that delivers data (an idle terminal or pipe is never waited on)."""
    if text == "-":
        text = sys.stdin.read() if sys.stdin is not None else ""
    elif text is None:
        text = _piped_stdin()
    return parse_params(text)


def _piped_stdin() -> str:
    if sys.stdin is None:
        return ""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError):
        return ""
    if stat.S_ISREG(mode):
        return sys.stdin.read()
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        ready, _, _ = select.select([sys.stdin], [], [], STDIN_WAIT_SECONDS)
        return sys.stdin.read() if ready else ""
    return ""  # a terminal, /dev/null or anything else: no parameters


if __name__ == "__main__":
    sys.exit(main())
