"""audit.log: whole lines under concurrency, never rewritten, and the documented jq queries work."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from devclaw.audit import AuditLog
from devclaw.workspace import Workspace
from tests.conftest import PYTHON

WRITER = """
import sys
from pathlib import Path
from devclaw.audit import AuditLog
log = AuditLog(Path(sys.argv[1]))
for n in range(int(sys.argv[3])):
    log.append("load", writer=int(sys.argv[2]), n=n, pad="x" * int(sys.argv[4]))
"""


def test_concurrent_appends_produce_only_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    procs = [subprocess.Popen([PYTHON, "-c", WRITER, str(path), str(w), "150", str(20_000 + w * 7_000)])
             for w in range(8)]  # fmt: skip
    assert all(p.wait(timeout=120) == 0 for p in procs)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    records = [json.loads(line) for line in lines[:-1]]
    assert len(records) == 8 * 150
    for writer in range(8):
        assert [r["n"] for r in records if r["writer"] == writer] == list(range(150))


def test_lines_start_with_ts_and_event(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    log.append("task_pickup", issue=1)
    line = (tmp_path / "audit.log").read_text()
    assert re.fullmatch(
        r'\{"ts": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", "event": "task_pickup", "issue": 1\}\n', line
    )


def test_append_never_rewrites(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text('{"ts": "x", "event": "old"}\n')
    inode = path.stat().st_ino
    AuditLog(path).append("new")
    assert path.stat().st_ino == inode and path.read_text().startswith('{"ts": "x", "event": "old"}\n')


def test_reader_skips_damaged_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text('{"ts": "a", "event": "x"}\n{"ts": "b", "ev\n[1, 2]\n{"ts": "c", "event": "x"}\n')
    assert [r["ts"] for r in AuditLog(path).records(event="x")] == ["a", "c"]


def _doc_queries() -> list[tuple[str, str]]:
    """The jq commands in docs/AUDIT.md, each with the expectation written under it."""
    text = (Path(__file__).parents[1] / "docs" / "AUDIT.md").read_text()
    found = re.findall(r"```sh\n(jq .+?)\n```\n<!-- expect(?:-re)?: (.+?) -->", text, re.DOTALL)
    patterns = re.findall(r"<!-- expect(-re)?: ", text)
    assert len(patterns) == len(found)
    assert len(found) >= 4, "docs/AUDIT.md lost its queries"
    return found


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
def test_every_documented_jq_query_works_on_a_real_log(tmp_path: Path) -> None:
    from devclaw.commands.demo import Demo

    ws = Workspace(tmp_path)
    Demo(ws).play()
    text = (Path(__file__).parents[1] / "docs" / "AUDIT.md").read_text()
    for command, expected in _doc_queries():
        argv = ["jq", *_split(command.removeprefix("jq "))]
        argv = [arg.replace("memory/audit.log", str(ws.audit.path)) for arg in argv]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
        wanted = expected.strip().replace("\\n", "\n")
        if f"<!-- expect-re: {expected}" in text:
            assert re.fullmatch(wanted, out, re.DOTALL), f"{command}\n{out}"
        else:
            assert out == wanted, f"{command}\n{out}"


def _split(text: str) -> list[str]:
    import shlex

    return shlex.split(text)
