"""``devclaw setup openclaw``: register the plugin in the user's openclaw.json in one step.

What it changes, and nothing else: ``gateway.mode`` is set to ``local`` when it is missing (the gateway
refuses to start without it); ``devclaw`` is added to ``plugins.allow`` when that allowlist exists (never
replacing it: the list may hold the Telegram channel plugin); the plugin folder is added to
``plugins.load.paths``; ``plugins.entries.devclaw`` is enabled with ``config.python`` = this interpreter
(and ``config.workspace`` when ``--workspace`` is given). Every other key is kept. The file is backed up
before it is written, and not written at all when nothing changes (running it twice changes nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import json5

from devclaw.cli import print_warning
from devclaw.errors import ConfigError, InputError
from devclaw.workspace import Workspace

PLUGIN_ID = "devclaw"
TESTED_OPENCLAW = "2026.9.6"
#: OpenClaw's own engines range (node:sqlite): >=24.16.0 <25 || >=26.1.0.
NODE_SUPPORTED = (((24, 16), (25, 0)), ((26, 1), (999, 0)))
VERSION_TIMEOUT = 60.0


def register(sub: Any) -> None:
    setup = sub.add_parser("setup", help="connect devclaw to an agent platform").add_subparsers(
        dest="setup_command", metavar="PLATFORM", required=True
    )
    openclaw = setup.add_parser("openclaw", help="add the devclaw plugin to openclaw.json (backed up first)")
    openclaw.add_argument("--config", metavar="PATH",
                          help="openclaw.json (default: $OPENCLAW_CONFIG_PATH, $OPENCLAW_STATE_DIR/openclaw.json "
                               "or ~/.openclaw/openclaw.json)")  # fmt: skip
    openclaw.add_argument("--plugin-dir", metavar="DIR",
                          help="the folder holding openclaw.plugin.json (default: the clone devclaw was installed from)")  # fmt: skip
    openclaw.set_defaults(handler=run_setup_openclaw)


def run_setup_openclaw(ws: Workspace, args: argparse.Namespace) -> int:
    config_path = _config_path(args.config)
    plugin_dir = _plugin_dir(args.plugin_dir)
    workspace = Workspace.resolve(args.workspace) if args.workspace else None
    original, config = _read_config(config_path)
    changes = plan_changes(config, plugin_dir, Path(sys.executable), workspace.root if workspace else None)
    for warning in _runtime_warnings():
        print_warning(warning)
    if workspace is not None and not workspace.exists():
        workspace.create()
        print(f"Created the devclaw workspace {workspace.root}")
    if not changes:
        print(f"{config_path} already has the devclaw plugin set up; nothing changed.")
    else:
        backup = _write_config(config_path, original, config)
        print(f"Updated {config_path}:")
        print("\n".join(f"  - {change}" for change in changes))
        if backup is not None:
            print(f"The previous file is in {backup}.")
        if original is not None and not _is_plain_json(original):
            print_warning("the file was JSON5; it is now written as plain JSON (comments are not kept)")
    print("\nNext: restart the gateway (`openclaw gateway restart`, or start it with `openclaw gateway run`),")
    print("then check the plugin: openclaw plugins inspect devclaw --runtime --json")
    return 0


def plan_changes(config: dict[str, Any], plugin_dir: Path, python: Path, workspace: Path | None) -> list[str]:
    """Change ``config`` in place; return what changed, one line each (empty: it was already set up)."""
    changes = []
    gateway = _object(config, "gateway")
    if "mode" not in gateway:
        gateway["mode"] = "local"
        changes.append('gateway.mode = "local" (the gateway does not start without it)')
    plugins = _object(config, "plugins")
    allow = plugins.get("allow")
    if isinstance(allow, list) and PLUGIN_ID not in allow:
        allow.append(PLUGIN_ID)
        changes.append(f'plugins.allow: added "{PLUGIN_ID}" (the others are kept)')
    elif allow is not None and not isinstance(allow, list):
        raise ConfigError("plugins.allow in openclaw.json is not a list; fix it by hand, then run this again")
    paths = _object(plugins, "load").setdefault("paths", [])
    if not isinstance(paths, list):
        raise ConfigError("plugins.load.paths in openclaw.json is not a list; fix it by hand, then run this again")
    if str(plugin_dir) not in paths:
        paths.append(str(plugin_dir))
        changes.append(f"plugins.load.paths: added {plugin_dir}")
    entry = _object(_object(plugins, "entries"), PLUGIN_ID)
    if entry.get("enabled") is not True:
        entry["enabled"] = True
        changes.append("plugins.entries.devclaw.enabled = true")
    settings = _object(entry, "config")
    wanted = {"python": str(python), **({"workspace": str(workspace)} if workspace else {})}
    for key, value in wanted.items():
        if settings.get(key) != value:
            settings[key] = value
            changes.append(f"plugins.entries.devclaw.config.{key} = {value}")
    return changes


def _object(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.setdefault(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key!r} in openclaw.json is not an object; fix it by hand, then run this again")
    return value


def _config_path(option: str | None) -> Path:
    if option:
        chosen = Path(option)
    elif os.environ.get("OPENCLAW_CONFIG_PATH"):
        chosen = Path(os.environ["OPENCLAW_CONFIG_PATH"])
    elif os.environ.get("OPENCLAW_STATE_DIR"):
        chosen = Path(os.environ["OPENCLAW_STATE_DIR"]) / "openclaw.json"
    else:
        chosen = Path("~/.openclaw/openclaw.json")
    return chosen.expanduser().resolve()  # a symlinked config is written through to its target


def _read_config(path: Path) -> tuple[str | None, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read {path}: {exc}") from exc
    try:
        data = json5.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON5 ({exc}); nothing was changed") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object; nothing was changed")
    return text, data


def _is_plain_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _write_config(path: Path, original: str | None, config: dict[str, Any]) -> Path | None:
    backup = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if original is not None:
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            backup = path.with_name(f"{path.name}.bak-{stamp}")
            shutil.copy2(path, backup)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        if original is not None:
            shutil.copymode(path, tmp)
        Path(tmp).replace(path)
    except OSError as exc:
        raise ConfigError(f"Cannot write {path}: {exc.strerror or exc}; nothing was changed") from exc
    return backup


def _plugin_dir(option: str | None) -> Path:
    candidates = [Path(option).expanduser()] if option else _installed_from()
    for candidate in candidates:
        manifest = candidate / "openclaw.plugin.json"
        if manifest.is_file() and _manifest_id(manifest) == PLUGIN_ID and (candidate / "index.js").is_file():
            return candidate.resolve()
    if option:
        raise InputError(f"{option} is not the devclaw plugin folder (no openclaw.plugin.json with id devclaw)")
    raise InputError(
        "Cannot find the plugin folder (the clone of devclaw holding openclaw.plugin.json and index.js); "
        "pass it with --plugin-dir DIR"
    )


def _installed_from() -> list[Path]:
    """Where the plugin files may be: the source tree of an editable install, or the local folder
    pip installed from (recorded in the package's direct_url.json)."""
    found = [Path(__file__).resolve().parents[2]]
    try:
        direct = distribution("devclaw").read_text("direct_url.json")
    except PackageNotFoundError:
        direct = None
    if direct:
        url = urlparse(str(json.loads(direct).get("url", "")))
        if url.scheme == "file":
            found.insert(0, Path(unquote(url.path)))
    return found


def _manifest_id(manifest: Path) -> object:
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("id")
    except (OSError, ValueError, AttributeError):
        return None


def _runtime_warnings() -> list[str]:
    warnings = []
    node = _version_of("node")
    if node is None:
        warnings.append("node is not on PATH: OpenClaw needs Node 24.16+ (or 26.1+)")
    elif not _node_supported(node):
        warnings.append(f"node {node} is too old or unsupported: OpenClaw needs Node 24.16+ (or 26.1+)")
    openclaw = _version_of("openclaw")
    if openclaw is None:
        warnings.append(f"openclaw is not on PATH: install it with `npm install -g openclaw@{TESTED_OPENCLAW}`")
    elif TESTED_OPENCLAW not in openclaw:
        warnings.append(f"openclaw {openclaw}: devclaw is tested with {TESTED_OPENCLAW} (the plugin API changes)")
    return warnings


def _version_of(program: str) -> str | None:
    if shutil.which(program) is None:
        return None
    try:
        done = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT,
                              stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if done.returncode == 0 and text else None


def _node_supported(text: str) -> bool:
    found = re.match(r"v?(\d+)\.(\d+)", text)
    if not found:
        return False
    version = (int(found.group(1)), int(found.group(2)))
    return any(low <= version < high for low, high in NODE_SUPPORTED)
