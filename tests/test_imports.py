"""A call on the embedded tracker must not import the HTTP trackers' libraries.

python-gitlab and PyGithub cost 0.1-0.2 s each to import, and requests most of the rest: a cold
``devclaw call`` on a local project would be twice as slow if any of them crept onto its import path
(a module-level import in a shared module is enough). Each test runs the real CLI in a fresh
interpreter and looks at ``sys.modules`` when it is done. No timing: the assertion is on names only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from devclaw.workspace import Workspace
from tests.conftest import GROUP, add_local_project, local_tracker, new_issue

HTTP_LIBRARIES = ("gitlab", "github", "requests", "urllib3")

# Runs the CLI exactly as the console script does, then reports every module that was imported.
RUN_CLI = """
import json, sys
from devclaw.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
print("\\nMODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr)
sys.exit(code)
"""


def modules_after(ws: Workspace, *argv: str) -> tuple[set[str], str]:
    env = {**os.environ, "DEVCLAW_WORKSPACE": str(ws.root)}
    done = subprocess.run(
        [sys.executable, "-c", RUN_CLI, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"devclaw {' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
    marker = [line for line in done.stderr.splitlines() if line.startswith("MODULES ")]
    assert marker, done.stderr
    return set(json.loads(marker[-1].removeprefix("MODULES "))), done.stdout


def http_libraries(modules: set[str]) -> list[str]:
    return sorted(name for name in modules if name.split(".")[0] in HTTP_LIBRARIES)


@pytest.fixture
def local_ws(ws: Workspace) -> Workspace:
    add_local_project(ws)
    new_issue(local_tracker(ws), "Add login page")
    return ws


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(("call", "queue_status", "{}"), id="call-queue_status"),
        pytest.param(
            ("call", "task_pickup", json.dumps({"projectGroupId": GROUP, "issueId": 1, "role": "dev"})),
            id="call-task_pickup",
        ),
        pytest.param(("status",), id="status"),
    ],
)
def test_embedded_tracker_calls_import_no_http_library(local_ws: Workspace, argv: tuple[str, ...]) -> None:
    modules, stdout = modules_after(local_ws, *argv)
    # The call really ran on the embedded tracker (so the module list is the one of a real call) ...
    assert "devclaw.trackers.local" in modules
    assert "sqlite3" in modules
    if argv[0] == "call":
        assert json.loads(stdout)["success"] is True
    # ... and none of the HTTP trackers' libraries, nor devclaw's modules that wrap them, were imported.
    assert http_libraries(modules) == []
    assert not {"devclaw.trackers.gitlab", "devclaw.trackers.github", "devclaw.trackers.remote"} & modules


def test_pickup_really_happened(local_ws: Workspace) -> None:
    params = json.dumps({"projectGroupId": GROUP, "issueId": 1, "role": "dev"})
    modules_after(local_ws, "call", "task_pickup", params)
    assert local_tracker(local_ws).get_issue(1).label == "Doing"
    assert local_ws.store.read().project(GROUP).worker("dev").active
