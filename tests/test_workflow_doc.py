"""docs/WORKFLOW.md's tables are what ``devclaw workflow`` prints: the doc is generated from the table in code."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from devclaw.commands.workflow_cmd import markdown_table
from devclaw.workflow import DEFAULT, with_review
from tests.conftest import PYTHON

DOC = Path(__file__).resolve().parents[1] / "docs" / "WORKFLOW.md"
GENERATED = re.compile(
    r"<!-- generated: devclaw workflow(?P<args>[^>]*?) -->\n(?P<table>.*?)\n<!-- end generated -->", re.S
)


def test_every_generated_table_is_what_the_code_says() -> None:
    found = {match["args"].strip(): match["table"] for match in GENERATED.finditer(DOC.read_text(encoding="utf-8"))}
    assert found == {
        "": markdown_table(DEFAULT),
        "--review human": markdown_table(with_review(DEFAULT, "human")),
        "--review agent": markdown_table(with_review(DEFAULT, "agent")),
    }, "regenerate them with `devclaw workflow [--review POLICY]`"


@pytest.mark.parametrize("args", [[], ["--review", "human"], ["--review", "agent"]])
def test_devclaw_workflow_prints_the_table(args: list[str], tmp_path: Path) -> None:
    done = subprocess.run([PYTHON, "-m", "devclaw", "workflow", *args], capture_output=True, text=True, check=True,
                          cwd=tmp_path, timeout=60)  # fmt: skip
    policy = args[1] if args else "skip"
    assert done.stdout.strip() == markdown_table(with_review(DEFAULT, policy))
