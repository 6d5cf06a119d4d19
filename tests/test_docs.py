"""The docs' commands run: every shell block in README.md and docs/*.md, in order, as a reader would type them.

How a doc is run:

- A fenced block whose info string is ``sh``, ``bash``, ``shell`` or ``console`` is a shell block; other
  blocks (``json``, ``json5``, ``markdown``, none) are not run.
- The shell blocks of one file run in order in ONE bash process (``set -euo pipefail``), like one terminal
  session: a ``cd`` or ``export`` in a block holds for the blocks after it. The session starts in an empty
  temporary folder, with ``HOME`` another empty temporary folder, no ``DEVCLAW_*`` variables, no network
  beyond loopback and ``devclaw`` on PATH (the test interpreter's scripts: an activated virtualenv).
  Every command must exit 0, in a pipeline too.
- A block that cannot run here (it installs packages, needs a token, the network, OpenClaw or a running
  gateway) is marked by an HTML comment on the line just before its opening fence (blank lines between
  are allowed, indentation is free):

      <!-- not run: needs a GitLab token and the network -->

  The reason is required. Mark only what truly cannot run; a marked block is still shown to readers.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELLS = {"sh", "bash", "shell", "console"}
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
NOT_RUN = re.compile(r"^\s*<!--\s*not run:\s*(\S.*?)\s*-->\s*$")
TIMEOUT = 600


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    info: str
    text: str
    skip_reason: str | None


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, info = opening.groups()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence[:3])), len(lines))
        body = [line[len(indent) :] if line.startswith(indent) else line.lstrip() for line in lines[i + 1 : end]]
        found.append(Block(i + 1, info, "\n".join(body), _skip_reason(lines, i)))
        i = end + 1
    return found


def _skip_reason(lines: list[str], fence: int) -> str | None:
    before = fence - 1
    while before >= 0 and not lines[before].strip():
        before -= 1
    marker = NOT_RUN.match(lines[before]) if before >= 0 else None
    return marker.group(1) if marker else None


def shell_script(path: Path) -> str:
    parts = ["set -euo pipefail"]
    for block in blocks(path):
        if block.info in SHELLS and block.skip_reason is None:
            parts.append(f"echo '>>> {path.name}:{block.line}' >&2\n{block.text}")
    return "\n".join(parts) + "\n"


@pytest.mark.parametrize("doc", DOCS, ids=[str(doc.relative_to(REPO)) for doc in DOCS])
def test_every_shell_block_runs(doc: Path, tmp_path: Path) -> None:
    if not any(b.info in SHELLS and b.skip_reason is None for b in blocks(doc)):
        pytest.skip("no runnable shell block")
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(exist_ok=True)
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVCLAW_")}
    env.update(
        HOME=str(home),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        GIT_CONFIG_NOSYSTEM="1",
        NO_COLOR="1",
    )
    done = run_session(shell_script(doc), work, env)
    started = re.findall(r">>> (\S+)", done.stderr)
    where = started[-1] if started else doc.name
    assert done.returncode == 0, f"the block at {where} failed ({done.returncode}):\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stdout + done.stderr


def run_session(script: str, work: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The doc's session in its own process group: whatever it started (a server a doc should have
    marked, say) is killed with it, by group id, when it ends or times out."""
    process = subprocess.Popen(
        ["bash", "-c", script],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        err += f"\n(timed out after {TIMEOUT} s: a block that runs until stopped needs a not-run marker)"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_every_skipped_block_says_why_and_is_a_shell_block() -> None:
    for doc in DOCS:
        for block in blocks(doc):
            if block.skip_reason is not None:
                assert block.info in SHELLS, f"{doc.name}:{block.line}: a not-run marker on a {block.info!r} block"


def test_the_reader_of_the_convention_can_rely_on_it(tmp_path: Path) -> None:
    # The parser itself, on a doc that uses every rule: order, indentation, markers, non-shell blocks.
    doc = tmp_path / "GUIDE.md"
    doc.write_text(
        "```sh\nexport A=1\n```\n\n1. step\n\n   <!-- not run: needs the network -->\n\n   ```bash\n   curl x\n   ```\n"
        '```json\n{}\n```\n   ```sh\n   test "$A" = 1 && echo ok\n   ```\n'
    )
    found = [(b.info, b.text, b.skip_reason) for b in blocks(doc)]
    assert found == [
        ("sh", "export A=1", None),
        ("bash", "curl x", "needs the network"),
        ("json", "{}", None),
        ("sh", 'test "$A" = 1 && echo ok', None),
    ]
    done = subprocess.run(["bash", "-c", shell_script(doc)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "ok\n"
