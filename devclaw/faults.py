"""Crash points: ``DEVCLAW_CRASH_AT=<point>`` kills the process with SIGKILL when it reaches ``<point>``.

The mutating tools call ``checkpoint`` at each boundary between their effects (see docs/HEALTH.md for the
table of points and the health check that repairs each crash). The crash tests run a tool in a child
process with the variable set, so the process dies for real, at exactly that step, with nothing patched.
When the variable is unset (always, outside those tests) a checkpoint is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "DEVCLAW_CRASH_AT"

#: Every point a tool may stop at, in the order a call reaches them.
CRASH_POINTS: tuple[str, ...] = (
    "after_validation",  # everything checked, nothing written
    "after_intent",  # network trackers: the move recorded in projects.json, not yet made
    "after_tracker_write",  # the label moved, projects.json not yet written
    "after_state_commit",  # projects.json written, no audit line yet
    "during_audit_append",  # the audit file is open, the line not yet written
)


def checkpoint(name: str) -> None:
    """Die here, as if the machine lost power, when ``DEVCLAW_CRASH_AT`` names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
