"""``devclaw setup openclaw`` against a real gateway: the user's config (with an allowlist of its own)
is set up by the command alone, and the gateway then loads the plugin and runs its tools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .gateway import Gateway, stage_plugin
from .install import OpenClawInstall

pytestmark = pytest.mark.e2e


def test_the_gateway_loads_the_plugin_after_setup(openclaw_install: OpenClawInstall, tmp_path: Path) -> None:
    plugin = stage_plugin(tmp_path / "plugin" / "devclaw")
    workspace = tmp_path / "agent-workspace"
    gateway = Gateway(openclaw_install, tmp_path / "gateway", {"plugins": {"allow": ["telegram"]}})
    done = subprocess.run(
        [sys.executable, "-m", "devclaw", "setup", "openclaw", "--config", str(gateway.config_path),
         "--plugin-dir", str(plugin), "--workspace", str(workspace)],
        capture_output=True, text=True, timeout=180, env={**os.environ, "PATH": f"{openclaw_install.openclaw.parent}{os.pathsep}{openclaw_install.env_path()}"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in done.stderr, done.stderr  # Node 24.21 and the tested OpenClaw are on PATH
    assert f"plugins.load.paths: added {plugin}" in done.stdout
    config = json.loads(gateway.config_path.read_text())
    assert config["plugins"]["allow"] == ["telegram", "devclaw"]
    try:
        gateway.start()
        inspected = gateway.cli("plugins", "inspect", "devclaw", "--runtime", "--json")
        assert inspected.returncode == 0, inspected.stderr
        assert json.loads(inspected.stdout)["plugin"]["status"] == "loaded"
        status, body = gateway.invoke("queue_status", {})
        assert status == 200 and body["result"]["details"] == {"success": True, "projects": []}, gateway.log_tail()
    finally:
        gateway.stop()
        gateway.kill_leftovers()
