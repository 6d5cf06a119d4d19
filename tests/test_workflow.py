"""The workflow table: every legal move, every illegal one refused before anything changes; the review stage's
rows; a project's own states and moves over the built-in table, and the errors that name the bad setting."""

from __future__ import annotations

import pytest

from devclaw.errors import WorkflowError
from devclaw.workflow import DEFAULT, ROLES, Event, Label, customised, with_review

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
    assert {state: spec.label for state, spec in DEFAULT.states.items()} == {s: s for s in DEFAULT.states}
    assert {state: spec.colour for state, spec in DEFAULT.states.items()} == {
        "Planning": "#95a5a6", "To Do": "#428bca", "Doing": "#f0ad4e", "To Test": "#5bc0de",
        "Testing": "#9b59b6", "Done": "#5cb85c", "To Improve": "#d9534f", "Refining": "#f39c12",
    }  # fmt: skip


@pytest.mark.parametrize(("state", "event"), sorted(EXPECTED_MOVES, key=str))
def test_every_legal_move(state: Label, event: Event) -> None:
    assert DEFAULT.next(state, event) is EXPECTED_MOVES[state, event]


ILLEGAL = [(s, e) for s in DEFAULT.states for e in Event if (s, e) not in EXPECTED_MOVES]


@pytest.mark.parametrize(("state", "event"), ILLEGAL)
def test_every_illegal_move_names_state_and_event(state: Label, event: Event) -> None:
    before = {k: dict(v) for k, v in DEFAULT.transitions.items()}
    with pytest.raises(WorkflowError) as caught:
        DEFAULT.next(state, event)
    assert f'"{event}"' in caught.value.message and f'"{state}"' in caught.value.message
    assert {k: dict(v) for k, v in DEFAULT.transitions.items()} == before


def test_table_has_exactly_the_expected_moves() -> None:
    table = {(s, e): t for s, moves in DEFAULT.transitions.items() for e, t in moves.items()}
    assert table == EXPECTED_MOVES


def test_no_label_is_an_error() -> None:
    with pytest.raises(WorkflowError, match="no workflow label"):
        DEFAULT.next(None, Event.DEV_PICKUP)


def test_roles() -> None:
    assert {r: spec.start_labels for r, spec in DEFAULT.roles.items()} == {
        "dev": (Label.TO_DO, Label.TO_IMPROVE), "qa": (Label.TO_TEST,)
    }  # fmt: skip
    assert {r: spec.active_label for r, spec in DEFAULT.roles.items()} == {"dev": Label.DOING, "qa": Label.TESTING}
    assert DEFAULT.issue_state_after == {Event.QA_PASS: "closed", Event.QA_FAIL: "open"}
    assert DEFAULT.priority("dev") == (Label.TO_IMPROVE, Label.TO_DO)
    for spec in ROLES.values():
        workflow = with_review(DEFAULT, "agent")
        for event in spec.results.values():
            assert event in workflow.transitions[spec.active_label]


def test_current_label_ignores_other_labels() -> None:
    assert DEFAULT.state_of(("priority::high", "Doing", "area/ui")) is Label.DOING
    assert DEFAULT.state_of(("bug",)) is None
    assert DEFAULT.relabel(("bug", "Doing"), Label.TO_TEST) == ("bug", "To Test")


def test_parse_label_is_case_insensitive_and_lists_choices() -> None:
    assert DEFAULT.parse(" to do ") is Label.TO_DO
    with pytest.raises(WorkflowError, match="Planning, To Do, Doing"):
        DEFAULT.parse("Todo")


def test_human_moves() -> None:
    assert DEFAULT.human_move(Label.PLANNING, Label.TO_DO) is Label.TO_DO
    assert DEFAULT.human_move(Label.REFINING, Label.TO_DO) is Label.TO_DO
    assert DEFAULT.human_move(None, Label.PLANNING) is Label.PLANNING
    with pytest.raises(WorkflowError, match="--force"):
        DEFAULT.human_move(Label.DOING, Label.DONE)
    assert DEFAULT.human_move(Label.DOING, Label.DONE, force=True) is Label.DONE


# --- The review stage ---------------------------------------------------------------------------------

REVIEW_MOVES = {
    "human": {
        (Label.DOING, Event.DEV_DONE): Label.TO_REVIEW,
        (Label.TO_REVIEW, Event.CHANGE_APPROVED): Label.TO_TEST,
        (Label.TO_REVIEW, Event.CHANGES_REQUESTED): Label.TO_IMPROVE,
        (Label.TO_REVIEW, Event.CHANGE_CONFLICT): Label.TO_IMPROVE,
        (Label.TO_REVIEW, Event.CHANGE_CLOSED): Label.REJECTED,
    },
    "agent": {
        (Label.DOING, Event.DEV_DONE): Label.TO_REVIEW,
        (Label.TO_REVIEW, Event.REVIEW_PICKUP): Label.REVIEWING,
        (Label.TO_REVIEW, Event.CHANGE_APPROVED): Label.TO_TEST,
        (Label.TO_REVIEW, Event.CHANGE_CLOSED): Label.REJECTED,
        (Label.REVIEWING, Event.REVIEW_APPROVE): Label.TO_TEST,
        (Label.REVIEWING, Event.REVIEW_REJECT): Label.TO_IMPROVE,
        (Label.REVIEWING, Event.REVIEW_REFINE): Label.REFINING,
        (Label.REVIEWING, Event.CHANGE_APPROVED): Label.TO_TEST,
        (Label.REVIEWING, Event.CHANGE_CLOSED): Label.REJECTED,
        (Label.REVIEWING, Event.REVERT): Label.TO_REVIEW,
        (Label.REVIEWING, Event.STUCK): Label.REFINING,
    },
}


@pytest.mark.parametrize("policy", ["human", "agent"])
def test_a_review_policy_adds_exactly_the_review_rows(policy: str) -> None:
    workflow = with_review(DEFAULT, policy)
    table = {(s, e): t for s, moves in workflow.transitions.items() for e, t in moves.items()}
    assert table == {**EXPECTED_MOVES, **REVIEW_MOVES[policy]}
    added = (
        [Label.TO_REVIEW, Label.REJECTED] if policy == "human" else [Label.TO_REVIEW, Label.REVIEWING, Label.REJECTED]
    )
    assert list(workflow.states) == [*DEFAULT.states, *added]
    assert workflow.transitions[Label.REJECTED] == {}  # final, like Done
    assert workflow.issue_state_after[Event.CHANGE_CLOSED] == "closed"
    assert workflow.queues[0] == ("toReview", Label.TO_REVIEW)
    assert ("reviewer" in workflow.roles) is (policy == "agent")
    assert "do not merge it" in workflow.role("dev").task


def test_skip_is_the_built_in_workflow_and_has_no_reviewer() -> None:
    assert with_review(DEFAULT, "skip") is DEFAULT
    with pytest.raises(WorkflowError, match=r'no "reviewer" role.*review policy "agent"'):
        DEFAULT.role("reviewer")


# --- A project's own workflow -------------------------------------------------------------------------


def test_a_renamed_label_and_an_extra_state() -> None:
    workflow = customised(
        DEFAULT,
        {Label.TO_DO: ("Backlog", None), "Blocked": (None, "#000000")},
        {Label.TESTING: {"qa_refine": "Blocked"}, "Blocked": {"human": Label.TO_DO}},
    )
    assert workflow.label(Label.TO_DO) == "Backlog"
    assert workflow.states[Label.TO_DO].colour == DEFAULT.states[Label.TO_DO].colour
    assert workflow.state_of(("Backlog",)) == Label.TO_DO and workflow.state_of(("To Do",)) is None
    assert workflow.parse("backlog") == Label.TO_DO and workflow.parse("to do") == Label.TO_DO
    assert workflow.next(Label.TESTING, Event.QA_REFINE) == "Blocked"
    assert workflow.waiting_for_a_person() == (Label.REFINING, "Blocked", Label.PLANNING)
    assert workflow.human_move("Blocked", Label.TO_DO) == Label.TO_DO
    assert workflow.relabel(("bug", "Blocked"), Label.TO_DO) == ("bug", "Backlog")
    assert DEFAULT.label(Label.TO_DO) == "To Do"  # the built-in table is untouched


@pytest.mark.parametrize(
    ("states", "transitions", "message"),
    [
        ({"To Do": (None, "blue")}, {}, 'workflow.states.To Do.colour: "blue" is not a colour'),
        ({"To Do": ("  ", None)}, {}, "workflow.states.To Do.label: a label cannot be empty"),
        ({"To Do": ("doing", None)}, {}, 'workflow.states.To Do.label: "doing" is already the label of "Doing"'),
        ({}, {"Nowhere": {"human": "To Do"}}, 'workflow.transitions.Nowhere: no state "Nowhere"'),
        ({}, {"Testing": {"qa_refine": "Limbo"}}, 'workflow.transitions.Testing.qa_refine: no state "Limbo"'),
        ({}, {"Testing": {"qa_maybe": "Done"}}, 'workflow.transitions.Testing.qa_maybe: "qa_maybe" is not an event'),
        ({"Blocked": (None, None)}, {}, 'workflow.states.Blocked: nothing moves an issue into "Blocked"'),
        (
            {},
            {"To Do": {"dev_pickup": "Testing"}},
            'workflow.transitions.To Do.dev_pickup: a dev pickup goes to "Doing"',
        ),
        (
            {},
            {"Testing": {"dev_done": "Done"}},
            'workflow.transitions.Testing.dev_done: "dev_done" is not a move of "Testing"',
        ),
        ({}, {"Testing": {"qa_refine": "Doing"}}, 'only a dev pickup moves an issue into "Doing"'),
        (
            {"Done ": (None, None)},
            {},
            "workflow.states.Done : a state's name cannot be empty or start or end with spaces",
        ),
        (
            {"Blocked": (None, None)},
            {"Testing": {"qa_refine": "Blocked"}, "Blocked": {"dev_pickup": "Doing"}},
            'workflow.transitions.Blocked.dev_pickup: "Blocked" is an extra state, which only a person moves on',
        ),
    ],
)
def test_a_bad_setting_is_refused_naming_it(
    states: dict[str, tuple[str | None, str | None]], transitions: dict[str, dict[str, str]], message: str
) -> None:
    with pytest.raises(WorkflowError) as caught:
        customised(DEFAULT, states, transitions)
    assert message in caught.value.message
