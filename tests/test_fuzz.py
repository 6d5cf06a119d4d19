"""Fuzz every tool's parameters: the result is always a valid result or a structured error (a
``DevclawError``), never anything else, and an error changes nothing but one ``error`` audit line."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devclaw.errors import DevclawError, error_payload
from devclaw.tools import TOOLS, call_tool
from devclaw.tools.complete import TaskCompleteResult
from devclaw.tools.health import SessionHealthResult
from devclaw.tools.loop_status import LoopStatusResult
from devclaw.tools.pickup import TaskPickupConfirmResult, TaskPickupResult
from devclaw.tools.queue import QueueStatusResult
from devclaw.workflow import Label
from devclaw.workspace import Workspace
from tests.conftest import GROUP, OTHER_GROUP, add_local_project, local_tracker, new_issue, snapshot

RESULTS: dict[str, type[Any]] = {
    "task_pickup": TaskPickupResult,
    "task_pickup_confirm": TaskPickupConfirmResult,
    "task_complete": TaskCompleteResult,
    "queue_status": QueueStatusResult,
    "session_health": SessionHealthResult,
    "loop_status": LoopStatusResult,
}

# Values an agent might send, sensible and not: the right words, near misses, wrong types, extremes.
WORDS = ["dev", "qa", "DEV", " qa ", "done", "pass", "fail", "refine", "", "opus", "haiku", GROUP, OTHER_GROUP, "-1"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=6),
    st.integers(),
    st.sampled_from([2**63, -(2**63) - 1, 2**100]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS),
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=4000, max_size=5000),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                          max_size=3), max_leaves=6)  # fmt: skip


def params_for(tool: str) -> st.SearchStrategy[object]:
    names = [field.alias or name for name, field in TOOLS[tool].input_model.model_fields.items()]
    keys = st.sampled_from([*names, "extra", "issue_id"])
    objects = st.dictionaries(keys, values, max_size=len(names) + 1)
    return st.one_of(objects, objects, objects, values)


@pytest.fixture(scope="module")
def fuzz_ws() -> Iterator[Workspace]:
    # One workspace for every example of a tool: state left by a successful call is the next one's start.
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        ws.memory.mkdir(parents=True)
        add_local_project(ws)
        add_local_project(ws, OTHER_GROUP, "api")
        tracker = local_tracker(ws)
        for label in (Label.TO_DO, Label.TO_DO, Label.TO_TEST, Label.TO_IMPROVE, Label.DOING, Label.PLANNING):
            new_issue(tracker, f"Issue on {label}", label=label)
        yield ws


def check_one(ws: Workspace, tool: str, params: object) -> None:
    before = snapshot(ws)
    try:
        result = call_tool(ws, tool, params)
    except DevclawError as exc:
        state, audit, rows = snapshot(ws)
        assert (state, rows) == (before[0], before[2]), f"{tool} failed ({exc}) but changed state or tracker"
        assert audit.startswith(before[1])
        (line,) = audit[len(before[1]) :].splitlines()
        assert json.loads(line)["event"] == "error"
        assert set(error_payload(exc)) == {"type", "message"}
        return
    RESULTS[tool].model_validate(result)
    json.dumps(result)  # what the bridge sends must be JSON


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_any_parameters_give_a_result_or_a_structured_error(fuzz_ws: Workspace, tool: str) -> None:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
    @given(params=params_for(tool))
    def run(params: object) -> None:
        check_one(fuzz_ws, tool, params)

    run()


@pytest.mark.parametrize("tool", ["task_pickup", "task_complete", "task_pickup_confirm"])
def test_fuzz_around_valid_calls(fuzz_ws: Workspace, tool: str) -> None:
    # Mostly right parameters, so the examples get past validation into the tools themselves.
    fields: dict[str, st.SearchStrategy[object]] = {
        "issueId": st.integers(min_value=-1, max_value=8) | st.sampled_from([2**63, 1.0, "1"]),
        "role": st.sampled_from(["dev", "qa", "Dev", "tester"]),
        "result": st.sampled_from(["done", "pass", "fail", "refine", "ok"]),
        "projectGroupId": st.sampled_from([GROUP, OTHER_GROUP, int(GROUP), "nope", ""]),
        "sessionId": st.sampled_from(["s-1", " ", "x" * 300]),
        "summary": st.none() | st.text(max_size=50),
    }
    names = [field.alias or name for name, field in TOOLS[tool].input_model.model_fields.items()]

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
    @given(params=st.fixed_dictionaries({}, optional={name: fields[name] for name in names if name in fields}))
    def run(params: dict[str, object]) -> None:
        check_one(fuzz_ws, tool, params)

    run()
