"""Audit log rotation: by size, by renaming under a lock, read back across every file, nothing lost."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from devclaw.audit import MAX_BYTES_ENV, AuditLog
from devclaw.cli import main
from devclaw.errors import ConfigError
from devclaw.workspace import Workspace
from tests.conftest import PYTHON

WRITER = """
import sys
from devclaw.audit import AuditLog
log = AuditLog(__import__("pathlib").Path(sys.argv[1]))
for n in range(int(sys.argv[3])):
    log.append("load", writer=int(sys.argv[2]), n=n)
"""


def test_rotates_by_size_and_reads_oldest_first(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", max_bytes=300)
    for n in range(30):
        log.append("step", n=n)
    names = sorted(path.name for path in tmp_path.iterdir())
    assert "audit.log" in names and "audit.log.1" in names and "audit.log.lock" in names
    assert [path.name for path in log.files()][-2:] == ["audit.log.1", "audit.log"]
    assert [record["n"] for record in log.records()] == list(range(30))
    assert [record["n"] for record in log.records(event="step")] == list(range(30))
    for path in log.files():
        assert path.stat().st_size <= 300 + 100  # at most one line over the limit, then renamed
    assert log.count("step", n=7) == 1


def test_rotation_keeps_every_file(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", max_bytes=1)
    for n in range(5):
        log.append("step", n=n)
    assert [path.name for path in log.files()] == [
        "audit.log.5", "audit.log.4", "audit.log.3", "audit.log.2", "audit.log.1", "audit.log",
    ]  # fmt: skip
    assert [json.loads(path.read_text())["n"] for path in log.files()[:-1]] == [0, 1, 2, 3, 4]
    assert not (tmp_path / "audit.log").exists() or (tmp_path / "audit.log").read_text() == ""


def test_concurrent_appenders_lose_nothing_across_rotations(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    env = {**os.environ, MAX_BYTES_ENV: "4000"}
    procs = [subprocess.Popen([PYTHON, "-c", WRITER, str(path), str(w), "300"], env=env) for w in range(4)]
    assert all(proc.wait(timeout=120) == 0 for proc in procs)
    log = AuditLog(path)
    assert len(log.files()) > 10
    for file in log.files():
        # The last append may have rotated audit.log away, and no line came after it to make a new one.
        data = file.read_bytes() if file.exists() else b""
        assert not data or data.endswith(b"\n")
    records = list(log.records())
    assert len(records) == 4 * 300
    for writer in range(4):
        assert [r["n"] for r in records if r["writer"] == writer] == list(range(300))


def test_devclaw_audit_reads_the_rotated_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = Workspace(tmp_path / "ws")
    log = AuditLog(ws.memory / "audit.log", max_bytes=200)
    for n in range(12):
        log.append("task_complete", project="webapp", issue=n)
    assert main(["--workspace", str(ws.root), "audit", "--json", "--event", "task_complete"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["issue"] for line in lines] == list(range(12))


def test_the_limit_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_BYTES_ENV, "1234")
    assert AuditLog(tmp_path / "audit.log").max_bytes == 1234
    monkeypatch.setenv(MAX_BYTES_ENV, "lots")
    with pytest.raises(ConfigError, match="DEVCLAW_AUDIT_MAX_BYTES must be a number of bytes"):
        AuditLog(tmp_path / "audit.log")
    monkeypatch.delenv(MAX_BYTES_ENV)
    assert AuditLog(tmp_path / "audit.log").max_bytes == 64 * 1024 * 1024
