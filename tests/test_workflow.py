"""The workflow table: every legal move, every illegal one refused before anything changes."""

from __future__ import annotations

import pytest

from devclaw.errors import WorkflowError
from devclaw.workflow import (
    ACTIVE_LABEL,
    COLOURS,
    ISSUE_STATE_AFTER,
    RESULT_EVENT,
    START_LABELS,
    TRANSITIONS,
    Event,
    Label,
    current_label,
    human_move,
    next_label,
    parse_label,
)

# The moves of the reference design, written out independently of the table.
EXPECTED_MOVES = {
    (Label.PLANNING, Event.HUMAN): Label.TO_DO,
    (Label.TO_DO, Event.DEV_PICKUP): Label.DOING,
    (Label.TO_IMPROVE, Event.DEV_PICKUP): Label.DOING,
    (Label.DOING, Event.DEV_DONE): Label.TO_TEST,
    (Label.DOING, Event.REVERT): Label.TO_DO,
    (Label.DOING, Event.REVERT_FIX): Label.TO_IMPROVE,
    (Label.TO_TEST, Event.QA_PICKUP): Label.TESTING,
    (Label.TESTING, Event.QA_PASS): Label.DONE,
    (Label.TESTING, Event.QA_FAIL): Label.TO_IMPROVE,
    (Label.TESTING, Event.QA_REFINE): Label.REFINING,
    (Label.TESTING, Event.REVERT): Label.TO_TEST,
    (Label.DOING, Event.STUCK): Label.REFINING,
    (Label.TESTING, Event.STUCK): Label.REFINING,
    (Label.REFINING, Event.HUMAN): Label.TO_DO,
}


def test_labels_and_colours_match_the_reference() -> None:
    assert {label.value: COLOURS[label] for label in Label} == {
        "Planning": "#95a5a6", "To Do": "#428bca", "Doing": "#f0ad4e", "To Test": "#5bc0de",
        "Testing": "#9b59b6", "Done": "#5cb85c", "To Improve": "#d9534f", "Refining": "#f39c12",
    }  # fmt: skip


@pytest.mark.parametrize(("state", "event"), sorted(EXPECTED_MOVES, key=str))
def test_every_legal_move(state: Label, event: Event) -> None:
    assert next_label(state, event) is EXPECTED_MOVES[state, event]


ILLEGAL = [(s, e) for s in Label for e in Event if (s, e) not in EXPECTED_MOVES]


@pytest.mark.parametrize(("state", "event"), ILLEGAL)
def test_every_illegal_move_names_state_and_event(state: Label, event: Event) -> None:
    before = {k: dict(v) for k, v in TRANSITIONS.items()}
    with pytest.raises(WorkflowError) as caught:
        next_label(state, event)
    assert f'"{event}"' in caught.value.message and f'"{state}"' in caught.value.message
    assert {k: dict(v) for k, v in TRANSITIONS.items()} == before


def test_table_has_exactly_the_expected_moves() -> None:
    table = {(s, e): t for s, moves in TRANSITIONS.items() for e, t in moves.items()}
    assert table == EXPECTED_MOVES


def test_no_label_is_an_error() -> None:
    with pytest.raises(WorkflowError, match="no workflow label"):
        next_label(None, Event.DEV_PICKUP)


def test_roles() -> None:
    assert START_LABELS == {"dev": (Label.TO_DO, Label.TO_IMPROVE), "qa": (Label.TO_TEST,)}
    assert ACTIVE_LABEL == {"dev": Label.DOING, "qa": Label.TESTING}
    assert ISSUE_STATE_AFTER == {Event.QA_PASS: "closed", Event.QA_FAIL: "open"}
    for role, results in RESULT_EVENT.items():
        for event in results.values():
            assert event in TRANSITIONS[ACTIVE_LABEL[role]]


def test_current_label_ignores_other_labels() -> None:
    assert current_label(("priority::high", "Doing", "area/ui")) is Label.DOING
    assert current_label(("bug",)) is None


def test_parse_label_is_case_insensitive_and_lists_choices() -> None:
    assert parse_label(" to do ") is Label.TO_DO
    with pytest.raises(WorkflowError, match="Planning, To Do, Doing"):
        parse_label("Todo")


def test_human_moves() -> None:
    assert human_move(Label.PLANNING, Label.TO_DO) is Label.TO_DO
    assert human_move(Label.REFINING, Label.TO_DO) is Label.TO_DO
    assert human_move(None, Label.PLANNING) is Label.PLANNING
    with pytest.raises(WorkflowError, match="--force"):
        human_move(Label.DOING, Label.DONE)
    assert human_move(Label.DOING, Label.DONE, force=True) is Label.DONE
