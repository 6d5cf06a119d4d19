"""``devclaw observe`` as a real subprocess on 127.0.0.1, and a small HTTP client for it."""

from __future__ import annotations

import http.client
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

START_TIMEOUT = 60.0  # bounds a hang only: a loaded machine may take a while to import and read the log
WAIT_TIMEOUT = 20.0
T = TypeVar("T")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


class Observer:
    """Start with ``start()`` (or as a context); stopped by its PID."""

    def __init__(self, workspace: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.args = [sys.executable, "-m", "devclaw", "observe", "--workspace", str(workspace), "--port", "0", *extra]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> Observer:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env)
        line = _read_line(self.proc, START_TIMEOUT)
        if not line.startswith("devclaw observe: http://"):
            self.stop()
            raise AssertionError(f"observe did not start: {line!r}; stderr: {self.stderr()}")
        self.url = line.split()[2].rstrip("/")
        return self

    def __enter__(self) -> Observer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)

    def stderr(self) -> str:
        if self.proc is None or self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()

    def request(
        self, method: str, path: str, *, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Answer:
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=WAIT_TIMEOUT)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            reply = conn.getresponse()
            return Answer(reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read())
        finally:
            conn.close()

    def get(self, path: str, **headers: str) -> Answer:
        return self.request("GET", path, headers=headers)

    def state(self, **headers: str) -> Any:
        answer = self.get("/api/state", **headers)
        assert answer.status == 200, answer.text
        return answer.json()

    def history_read(self, **headers: str) -> Any:
        """Wait until the background read of the audit log is done (the server answers before it)."""
        return wait_for(lambda: self.state(**headers)["history"]["ready"], "the audit log to be read")


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return f"(nothing printed in {timeout:g} s)"
    return proc.stdout.readline()


def wait_for(condition: Callable[[], T | None], what: str, timeout: float = WAIT_TIMEOUT) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` (a hang bound only)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def project(state: Any, group_id: str) -> Any:
    return next(p for p in state["projects"] if p["groupId"] == group_id)


def make_demo(root: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "devclaw", "demo", "--workspace", str(root)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return root


def devclaw(root: Path, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "devclaw", "--workspace", str(root), *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)
