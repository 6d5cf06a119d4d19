"""A real OpenClaw gateway for tests: isolated home and state, loopback only, token auth, stopped by PID."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .install import OpenClawInstall

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 120.0
CLI_TIMEOUT = 180.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stage_plugin(target: Path) -> Path:
    """Copy the files the plugin package ships (package.json ``files``) into ``target``.

    The gateway snapshots the whole plugin folder (all but node_modules and .git) when it loads it and
    refuses the load if anything there changes meanwhile; the clone holds a virtualenv and caches that
    the test run itself writes to. The staged folder is exactly what ``npm pack`` would publish.
    """
    package = json.loads((REPO / "package.json").read_text())
    target.mkdir(parents=True)
    for name in ["package.json", *package["files"]]:
        shutil.copy2(REPO / name, target / name)
    return target


class Gateway:
    """``openclaw gateway run`` with everything (HOME, state, config, TMPDIR) under ``root``."""

    def __init__(self, install: OpenClawInstall, root: Path, config: dict[str, Any]) -> None:
        self.install = install
        self.root = root
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.state = root / "state"
        self.log_file = self.state / "logs" / "openclaw.log"
        self.config_path = self.state / "openclaw.json"
        for folder in ("home", "state", "tmp"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        base = {
            "gateway": {"mode": "local", "bind": "loopback", "port": self.port, "auth": {"mode": "token"}},
            "logging": {"file": str(self.log_file), "level": "debug"},
        }
        self.config_path.write_text(json.dumps(base | config, indent=2))
        self.process: subprocess.Popen[bytes] | None = None
        self.descendants: set[int] = set()

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "OPENCLAW_", "DEVCLAW_"))}
        env.update(
            HOME=str(self.root / "home"),
            TMPDIR=str(self.root / "tmp"),
            OPENCLAW_STATE_DIR=str(self.state),
            OPENCLAW_CONFIG_PATH=str(self.config_path),
            OPENCLAW_DISABLE_BONJOUR="1",
            OPENCLAW_GATEWAY_TOKEN=self.token,
            PATH=self.install.env_path(),
        )
        return env

    def start(self) -> None:
        output = (self.root / "gateway.out").open("wb")
        self.process = subprocess.Popen(
            [str(self.install.openclaw), "gateway", "run"],
            env=self.env,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        output.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}:\n{self.output_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway not ready after {READY_TIMEOUT:.0f} s:\n{self.output_tail()}")
            time.sleep(0.25)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def invoke(self, tool: str, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """``POST /tools/invoke``: the HTTP status and the JSON body."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/tools/invoke",
            data=json.dumps({"tool": tool, "args": args}).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read() or b"{}")

    def result(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        """Invoke a tool that must succeed; return the devclaw result (``details``) after checking ``content``."""
        status, body = self.invoke(tool, args)
        assert status == 200 and body.get("ok") is True, (tool, status, body, self.log_tail())
        details: dict[str, Any] = body["result"]["details"]
        assert body["result"]["content"] == [
            {"type": "text", "text": json.dumps(details, ensure_ascii=False, separators=(",", ":"))}
        ]
        return details

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.install.openclaw), *args],
            env=self.env,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def devclaw_serve_pids(self) -> list[int]:
        """PIDs of the ``devclaw serve`` processes the plugin started (normally zero or one): not the worker
        processes a serve routes to, which are its own children."""
        serve = [pid for pid in self._refresh_descendants() if b"devclaw.cli\0serve" in _cmdline(pid)]
        return [pid for pid in serve if _parent(pid) not in serve]

    def _refresh_descendants(self) -> list[int]:
        assert self.process is not None
        found = list(_descendants(self.process.pid))
        self.descendants.update(found)
        return found

    def stop(self) -> None:
        """SIGTERM the gateway and wait; SIGKILL it, then any process it left behind, by PID."""
        if self.process is None or self.process.poll() is not None:
            return
        self._refresh_descendants()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    @contextlib.contextmanager
    def running(self) -> Iterator[Gateway]:
        """Started for the ``with`` block; stopped after it, with whatever it left behind killed."""
        try:
            self.start()
            yield self
        finally:
            self.stop()
            self.kill_leftovers()

    def leftovers(self, wait: float = 5.0) -> list[int]:
        """Processes the gateway started that are still alive ``wait`` seconds after it stopped."""
        deadline = time.monotonic() + wait
        alive = [pid for pid in self.descendants if _alive(pid)]
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in alive if _alive(pid)]
        return alive

    def kill_leftovers(self) -> None:
        for pid in self.leftovers(wait=0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def output_tail(self, lines: int = 40) -> str:
        path = self.root / "gateway.out"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def _descendants(pid: int) -> Iterator[int]:
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                yield int(child)
                yield from _descendants(int(child))


def _parent(pid: int) -> int | None:
    try:  # the field after the command, which is in parentheses and may hold spaces
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    # A zombie has exited; only its parent's wait is missing.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
