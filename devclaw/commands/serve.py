"""``devclaw serve``: the long-lived process the OpenClaw plugin talks to."""

from __future__ import annotations

import argparse
import os
from typing import Any

from devclaw.errors import ConfigError
from devclaw.workspace import Workspace

PROCESSES_ENV = "DEVCLAW_SERVE_PROCESSES"
MAX_PROCESSES = 64
#: The default is one worker per CPU this process may run on, up to this many. Measured (docs/PERFORMANCE.md):
#: on 2 CPUs two workers lift 64 projects at 50 ms per reply from 0.61 to 0.75 of plain HTTP, and cost
#: nothing measurable at 16 projects; past the CPUs a worker only adds memory.
DEFAULT_MAX = 4


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="serve tool calls as JSON lines on stdin/stdout (for the plugin)")
    serve.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help=f"run the calls in N worker processes, each project always in the same one "
        f"(default: ${PROCESSES_ENV}, else one per CPU up to {DEFAULT_MAX}; 1: everything in this process)",
    )
    serve.set_defaults(handler=run_serve)


def processes(option: int | None) -> int:
    """The number of processes: the option, else the environment's, else one per usable CPU (at most 4)."""
    text = os.environ.get(PROCESSES_ENV, "").strip()
    source = "--processes" if option is not None else PROCESSES_ENV
    if option is None and not text:
        return min(_usable_cpus(), DEFAULT_MAX)
    try:
        count = option if option is not None else int(text)
    except ValueError:
        raise ConfigError(f"{PROCESSES_ENV} must be a whole number from 1 to {MAX_PROCESSES}, not {text!r}") from None
    if not 1 <= count <= MAX_PROCESSES:
        raise ConfigError(f"{source} must be from 1 to {MAX_PROCESSES}, not {count}")
    return count


def run_serve(ws: Workspace, args: argparse.Namespace) -> int:
    from devclaw.serve import run

    return run(args.workspace, processes(args.processes))


def _usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, on Linux), else the machine's."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1
