"""The workflow: the only place a label, a colour or a move is spelled.

Rules, in the order the code relies on them:

1. An issue's workflow state is one of the eight ``Label`` values. Other labels on an issue
   (priority, area, ...) are not ours and are never touched.
2. ``TRANSITIONS[state][event]`` is the next state. A move not in the table is illegal, and
   ``next_label`` raises ``WorkflowError`` naming the state and the event BEFORE anything is written.
3. A role picks up only from its start labels (dev: To Do, To Improve; qa: To Test) and works while the
   issue sits on its active label (dev: Doing; qa: Testing).
4. A completion result maps to exactly one event; QA pass closes the issue, QA fail reopens it.
5. A health revert moves work that lost its worker back to the queue it came from.
6. Humans move Planning -> To Do and Refining -> To Do; anything else by hand needs ``force``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from devclaw.errors import WorkflowError


class Label(StrEnum):
    PLANNING = "Planning"
    TO_DO = "To Do"
    DOING = "Doing"
    TO_TEST = "To Test"
    TESTING = "Testing"
    DONE = "Done"
    TO_IMPROVE = "To Improve"
    REFINING = "Refining"


class Event(StrEnum):
    DEV_PICKUP = "dev_pickup"
    DEV_DONE = "dev_done"
    QA_PICKUP = "qa_pickup"
    QA_PASS = "qa_pass"
    QA_FAIL = "qa_fail"
    QA_REFINE = "qa_refine"
    REVERT = "revert"  # health: the worker is gone, put the work back in its queue
    REVERT_FIX = "revert_fix"  # health: as REVERT, for dev work that already failed QA once
    HUMAN = "human"  # a person approves a planned or refined issue
    STUCK = "stuck"  # the work loop: a worker ended without a verdict twice; a person decides


#: A role's name ("dev", "qa"): a key of ``ROLES``. Tool inputs check it against the table.
Role = str
#: A completion result ("done", "pass", "fail", "refine"): a key of some role's ``results``.
Result = str
IssueState = Literal["open", "closed"]

COLOURS: dict[Label, str] = {
    Label.PLANNING: "#95a5a6",
    Label.TO_DO: "#428bca",
    Label.DOING: "#f0ad4e",
    Label.TO_TEST: "#5bc0de",
    Label.TESTING: "#9b59b6",
    Label.DONE: "#5cb85c",
    Label.TO_IMPROVE: "#d9534f",
    Label.REFINING: "#f39c12",
}

TRANSITIONS: dict[Label, dict[Event, Label]] = {
    Label.PLANNING: {Event.HUMAN: Label.TO_DO},
    Label.TO_DO: {Event.DEV_PICKUP: Label.DOING},
    Label.TO_IMPROVE: {Event.DEV_PICKUP: Label.DOING},
    Label.DOING: {
        Event.DEV_DONE: Label.TO_TEST,
        Event.REVERT: Label.TO_DO,
        Event.REVERT_FIX: Label.TO_IMPROVE,
        Event.STUCK: Label.REFINING,
    },
    Label.TO_TEST: {Event.QA_PICKUP: Label.TESTING},
    Label.TESTING: {
        Event.QA_PASS: Label.DONE,
        Event.QA_FAIL: Label.TO_IMPROVE,
        Event.QA_REFINE: Label.REFINING,
        Event.REVERT: Label.TO_TEST,
        Event.STUCK: Label.REFINING,
    },
    Label.REFINING: {Event.HUMAN: Label.TO_DO},
    Label.DONE: {},
}

# The issue's open/closed state that goes with an event, written in the same request as the label.
ISSUE_STATE_AFTER: dict[Event, IssueState] = {Event.QA_PASS: "closed", Event.QA_FAIL: "open"}


@dataclass(frozen=True)
class RoleSpec:
    """One role, as data: everything the tools, health and the board need to know about it."""

    name: Role
    #: Labels a worker of this role picks up from (queue priority is ``QUEUES``).
    start_labels: tuple[Label, ...]
    #: The label an issue carries while a worker of this role works on it.
    active_label: Label
    pickup_event: Event
    #: Completion result -> event; the first result is the one a reply with no verdict would need.
    results: dict[Result, Event]
    #: Announcement per result ({id}, {summary} are filled in).
    announcements: dict[Result, str]
    #: What the worker is told to do and to reply ({id}, {base_branch} are filled in).
    task: str
    #: The announcement emoji, or per model alias where the model says something about the task.
    emoji: str
    emoji_by_model: dict[str, str] = field(default_factory=dict)
    #: The model alias when no keyword decides; None: the keyword heuristic picks (haiku/sonnet/opus).
    default_model: str | None = None
    #: The health revert for work that lost its worker, and the one after the issue already failed QA.
    revert_event: Event = Event.REVERT
    revert_after_fail: Event | None = None
    #: Results refused unless the issue has a change (MR/PR), as the project's ``changes`` settings say.
    change_gated: tuple[Result, ...] = ()
    #: Whether the worker's task names the issue's change (its branch and diff), when there is one.
    sees_change: bool = False

    @property
    def title(self) -> str:
        return self.name.upper()

    def emoji_for(self, model_alias: str) -> str:
        return self.emoji_by_model.get(model_alias, self.emoji)


ROLES: dict[Role, RoleSpec] = {
    "dev": RoleSpec(
        name="dev",
        start_labels=(Label.TO_DO, Label.TO_IMPROVE),
        active_label=Label.DOING,
        pickup_event=Event.DEV_PICKUP,
        results={"done": Event.DEV_DONE},
        announcements={"done": "✅ DEV done #{id}{summary}. Moved to QA queue."},
        task=(
            "Work on a branch from {base_branch}, open a merge/pull request that closes #{id}, and get it "
            "merged. When it is merged, reply with one line: DONE: <what you changed>."
        ),
        emoji="🔧",
        emoji_by_model={"haiku": "⚡", "sonnet": "🔧", "opus": "🧠"},
        revert_after_fail=Event.REVERT_FIX,
        change_gated=("done",),
    ),
    "qa": RoleSpec(
        name="qa",
        start_labels=(Label.TO_TEST,),
        active_label=Label.TESTING,
        pickup_event=Event.QA_PICKUP,
        results={"pass": Event.QA_PASS, "fail": Event.QA_FAIL, "refine": Event.QA_REFINE},
        announcements={
            "pass": "🎉 QA PASS #{id}{summary}. Issue closed.",
            "fail": "❌ QA FAIL #{id}{summary}. Sent back to DEV.",
            "refine": "🤔 QA REFINE #{id}{summary}. Awaiting human decision.",
        },
        task=(
            "Review and test the change for #{id} against the issue. Reply with one line: PASS: <what you "
            "verified>, FAIL: <what is wrong>, or REFINE: <the question a human must decide>."
        ),
        emoji="🔍",
        default_model="grok",
        sees_change=True,
    ),
}

#: Every result any role has, in table order: the ``result`` parameter's vocabulary.
RESULTS: tuple[Result, ...] = tuple(dict.fromkeys(r for spec in ROLES.values() for r in spec.results))

# Derived views of the table, for readers that want one fact about every role.
START_LABELS: dict[Role, tuple[Label, ...]] = {name: spec.start_labels for name, spec in ROLES.items()}
ACTIVE_LABEL: dict[Role, Label] = {name: spec.active_label for name, spec in ROLES.items()}
PICKUP_EVENT: dict[Role, Event] = {name: spec.pickup_event for name, spec in ROLES.items()}
RESULT_EVENT: dict[Role, dict[Result, Event]] = {name: dict(spec.results) for name, spec in ROLES.items()}


def role_spec(role: Role) -> RoleSpec:
    """The table row of ``role``; a ``WorkflowError`` naming the roles for any other name."""
    try:
        return ROLES[role]
    except KeyError:
        raise WorkflowError(f'Unknown role "{role}"; roles: {", ".join(ROLES)}') from None


def active_role(label: Label | None) -> Role | None:
    """The role whose workers work on issues carrying ``label``."""
    return next((name for name, spec in ROLES.items() if spec.active_label == label), None)


# queue_status lists these, in this priority order, under these result keys.
QUEUES: tuple[tuple[str, Label], ...] = (
    ("toImprove", Label.TO_IMPROVE),
    ("toTest", Label.TO_TEST),
    ("toDo", Label.TO_DO),
)

WORKFLOW_LABELS: frozenset[str] = frozenset(label.value for label in Label)


def next_label(state: Label | None, event: Event) -> Label:
    """The state after ``event``; raises ``WorkflowError`` for a move the table does not allow."""
    if state is None:
        raise WorkflowError(f'Cannot apply "{event}": the issue has no workflow label')
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        allowed = ", ".join(str(e) for e in TRANSITIONS[state]) or "none (final state)"
        raise WorkflowError(
            f'Cannot apply "{event}" to an issue on "{state}"; allowed from "{state}": {allowed}'
        ) from None


def current_label(labels: tuple[str, ...] | list[str]) -> Label | None:
    """The issue's workflow state: the first workflow label, in table order, present on it."""
    present = set(labels)
    return next((label for label in Label if label.value in present), None)


def workflow_labels(labels: tuple[str, ...] | list[str]) -> list[Label]:
    """Every workflow label on an issue, in table order: more than one is a conflict for a person."""
    present = set(labels)
    return [label for label in Label if label.value in present]


def parse_label(text: str) -> Label:
    """A workflow label from user text, matched without regard to case."""
    for label in Label:
        if label.value.lower() == text.strip().lower():
            return label
    names = ", ".join(label.value for label in Label)
    raise WorkflowError(f'"{text}" is not a workflow label; use one of: {names}')


def human_move(state: Label | None, target: Label, *, force: bool = False) -> Label:
    """Check a move made by a person (``devclaw issue label``)."""
    if force or state is None or state == target:
        return target
    if TRANSITIONS[state].get(Event.HUMAN) == target:
        return target
    raise WorkflowError(
        f'Moving an issue from "{state}" to "{target}" by hand is not a workflow move '
        f"(people move Planning -> To Do and Refining -> To Do); pass --force to do it anyway"
    )
