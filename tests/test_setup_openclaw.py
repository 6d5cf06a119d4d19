"""``devclaw setup openclaw`` on real openclaw.json files: adds, never replaces, keeps every key, backs up,
changes nothing the second time. (tests/e2e/test_setup.py starts a real gateway on the result.)"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import json5

from tests.test_cli import devclaw

REPO = Path(__file__).resolve().parents[1]
USER_CONFIG = """// my gateway
{
  gateway: {mode: "local", port: 18789},
  channels: {telegram: {botToken: "123:abc"}},
  plugins: {
    allow: ["telegram"],  // the channel plugin must stay allowed
    entries: {devclaw: {config: {callTimeoutSeconds: 90}}},
  },
}
"""


def setup(config: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    done = devclaw(None, "setup", "openclaw", "--config", str(config), "--plugin-dir", str(REPO), *extra,
                   env={**os.environ, "PATH": "/nonexistent", **(env or {})})  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def test_adds_to_the_allowlist_keeps_everything_and_backs_up(tmp_path: Path) -> None:
    config = tmp_path / "openclaw.json"
    config.write_text(USER_CONFIG)
    code, out, err = setup(config, "--workspace", str(tmp_path / "agent-ws"))
    assert code == 0, err
    data = json.loads(config.read_text())
    assert data["plugins"]["allow"] == ["telegram", "devclaw"]
    assert data["channels"] == {"telegram": {"botToken": "123:abc"}} and data["gateway"]["port"] == 18789
    assert data["plugins"]["load"]["paths"] == [str(REPO)]
    assert data["plugins"]["entries"]["devclaw"] == {
        "config": {"callTimeoutSeconds": 90, "python": sys.executable, "workspace": str(tmp_path / "agent-ws")},
        "enabled": True,
    }
    backups = list(tmp_path.glob("openclaw.json.bak-*"))
    assert len(backups) == 1 and backups[0].read_text() == USER_CONFIG and str(backups[0]) in out
    assert "comments are not kept" in err and "openclaw gateway restart" in out
    assert "node is not on PATH" in err and "openclaw is not on PATH" in err
    assert (tmp_path / "agent-ws" / "memory").is_dir()
    again = config.read_text()
    code, out, _ = setup(config, "--workspace", str(tmp_path / "agent-ws"))
    assert code == 0 and "nothing changed" in out and config.read_text() == again
    assert len(list(tmp_path.glob("openclaw.json.bak-*"))) == 1


def test_a_new_config_gets_the_local_gateway_mode_and_no_allowlist(tmp_path: Path) -> None:
    config = tmp_path / "state" / "openclaw.json"
    code, out, _ = setup(config)
    assert code == 0 and 'gateway.mode = "local"' in out
    data = json5.loads(config.read_text())
    assert data["gateway"] == {"mode": "local"} and "allow" not in data["plugins"]  # none to add to


def test_a_broken_config_is_reported_and_left_alone(tmp_path: Path) -> None:
    config = tmp_path / "openclaw.json"
    config.write_text("{plugins: [")
    code, _, err = setup(config)
    assert code == 1 and "is not valid JSON5" in err and config.read_text() == "{plugins: ["
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "openclaw.json"]  # no backup, no temp file
    config.write_text('{"plugins": {"allow": "devclaw"}}')
    code, _, err = setup(config)
    assert code == 1 and "plugins.allow in openclaw.json is not a list" in err


def test_a_folder_that_is_not_the_plugin_is_refused(tmp_path: Path) -> None:
    done = devclaw(None, "setup", "openclaw", "--config", str(tmp_path / "c.json"), "--plugin-dir", str(tmp_path))
    assert done.returncode == 2 and "is not the devclaw plugin folder" in done.stderr
    assert not (tmp_path / "c.json").exists()
