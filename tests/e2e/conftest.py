"""One real gateway per test module, with devclaw loaded and a scripted model behind it; OpenClaw itself is
installed once per session (and reused across runs from the cache folder)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .fake_model import FakeModel
from .gateway import Gateway, stage_plugin
from .install import OpenClawInstall, ensure_openclaw

# The project the agent turn works on: created by the fixture, driven only by the scripted model.
AGENT_GROUP = "-1002"
AGENT_SCRIPT: list[tuple[str, dict[str, Any]]] = [
    ("queue_status", {"projectGroupId": AGENT_GROUP}),
    ("task_pickup", {"issueId": 1, "role": "dev", "projectGroupId": AGENT_GROUP}),
]


def devclaw(workspace: Path, *args: str) -> Any:
    """Run the devclaw CLI of the test interpreter; returns its JSON output."""
    done = subprocess.run(
        [sys.executable, "-m", "devclaw.cli", "--workspace", str(workspace), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)


@pytest.fixture(scope="session")
def openclaw_install() -> OpenClawInstall:
    return ensure_openclaw()


@pytest.fixture(scope="module")
def e2e_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openclaw")


@pytest.fixture(scope="module")
def agent_workspace(e2e_root: Path) -> Path:
    """The agent's workspace, which is also devclaw's: the plugin gets it from the tool context."""
    workspace = e2e_root / "workspace"
    workspace.mkdir()
    devclaw(workspace, "project", "add", AGENT_GROUP, "--name", "agentdemo", "--provider", "local")
    devclaw(workspace, "issue", "create", AGENT_GROUP, "--title", "Add a logout button", "--label", "To Do")
    return workspace


@pytest.fixture(scope="module")
def fake_model() -> Iterator[FakeModel]:
    model = FakeModel(AGENT_SCRIPT)
    model.start()
    yield model
    model.stop()


@pytest.fixture(scope="module")
def gateway(
    openclaw_install: OpenClawInstall, e2e_root: Path, agent_workspace: Path, fake_model: FakeModel
) -> Iterator[Gateway]:
    plugin = stage_plugin(e2e_root / "plugin" / "devclaw")
    config = {
        "agents": {"defaults": {"workspace": str(agent_workspace), "model": {"primary": "fake/fake-model"}}},
        "models": {
            "providers": {
                "fake": {
                    "baseUrl": fake_model.base_url,
                    "apiKey": "not-a-real-key",
                    "api": "openai-completions",
                    "models": [{"id": "fake-model", "name": "Fake model"}],
                }
            }
        },
        "tools": {"toolSearch": False},
        "plugins": {
            "allow": ["devclaw"],
            "load": {"paths": [str(plugin)]},
            "entries": {"devclaw": {"enabled": True, "config": {"python": sys.executable, "callTimeoutSeconds": 60}}},
        },
    }
    with Gateway(openclaw_install, e2e_root / "gateway", config).running() as gw:
        yield gw
