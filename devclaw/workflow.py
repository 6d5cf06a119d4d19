"""The workflow: the only place a state, a label, a colour or a move is spelled.

Rules, in the order the code relies on them:

1. A project's workflow is a ``Workflow``: the built-in ``DEFAULT`` (today's eight states), with the review
   stage's rows when the project has one (``REVIEW_STAGE``), with the project's own ``workflow`` settings
   over both (devclaw/state.py ``WorkflowSettings``; docs/WORKFLOW.md). Nothing reads the built-in table
   where a project's effective one applies.
2. A state is named by its built-in label ("To Do"); its ``label`` is the text on the tracker, which a
   project may rename. An issue's state is the first state, in table order, whose label it carries. Other
   labels on an issue (priority, area, ...) are not ours and are never touched.
3. ``transitions[state][event]`` is the next state. A move not in the table is illegal, and ``next`` raises
   ``WorkflowError`` naming the state and the event BEFORE anything is written.
4. A role picks up only from its start states (dev: To Do, To Improve; qa: To Test) and works while the
   issue sits on its active state (dev: Doing; qa: Testing).
5. A completion result maps to exactly one event; QA pass closes the issue, QA fail reopens it.
6. A health revert moves work that lost its worker back to the queue it came from.
7. People move an issue out of a state with a ``human`` move (Planning -> To Do, Refining -> To Do);
   anything else by hand needs ``force``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Literal, get_args

from devclaw.errors import WorkflowError


class Label(StrEnum):
    """The built-in states, named by their default labels."""

    PLANNING = "Planning"
    TO_DO = "To Do"
    DOING = "Doing"
    TO_TEST = "To Test"
    TESTING = "Testing"
    DONE = "Done"
    TO_IMPROVE = "To Improve"
    REFINING = "Refining"
    # The review stage's states: only in the workflow of a project with a review policy.
    TO_REVIEW = "To Review"
    REVIEWING = "Reviewing"
    REJECTED = "Rejected"


class Event(StrEnum):
    DEV_PICKUP = "dev_pickup"
    DEV_DONE = "dev_done"
    QA_PICKUP = "qa_pickup"
    QA_PASS = "qa_pass"
    QA_FAIL = "qa_fail"
    QA_REFINE = "qa_refine"
    REVIEW_PICKUP = "review_pickup"
    REVIEW_APPROVE = "review_approve"
    REVIEW_REJECT = "review_reject"
    REVIEW_REFINE = "review_refine"
    # review policy human: what the tick sees on the change of an issue in To Review
    CHANGE_APPROVED = "change_approved"  # approved (and merged, when the project merges) or merged by a person
    CHANGES_REQUESTED = "changes_requested"
    CHANGE_CONFLICT = "change_conflict"
    CHANGE_CLOSED = "change_closed"  # closed without being merged
    REVERT = "revert"  # health: the worker is gone, put the work back in its queue
    REVERT_FIX = "revert_fix"  # health: as REVERT, for dev work that already failed QA once
    HUMAN = "human"  # a person approves a planned or refined issue
    STUCK = "stuck"  # the work loop: a worker ended without a verdict twice; a person decides


#: A state's name: a built-in ``Label`` value, or the name a project's workflow gives an extra state.
State = str
#: A role's name ("dev", "qa", "reviewer"): a key of ``ROLES``. Tool inputs check it against the table.
Role = str
#: A completion result ("done", "pass", "fail", "refine", ...): a key of some role's ``results``.
Result = str
IssueState = Literal["open", "closed"]


@dataclass(frozen=True)
class StateSpec:
    #: The label that marks an issue in this state on the tracker.
    label: str
    colour: str


@dataclass(frozen=True)
class RoleSpec:
    """One role, as data: everything the tools, health and the board need to know about it."""

    name: Role
    #: States a worker of this role picks up from, in queue priority order (To Improve before To Do).
    start_labels: tuple[State, ...]
    #: The state an issue is in while a worker of this role works on it.
    active_label: State
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
    #: Whether a review stage after this role lets its gated results accept an unmerged change (DEV done:
    #: the review comes before the merge). Unless ``changes.mustBeMerged`` says otherwise.
    review_defers_merge: bool = False
    #: Results after which devclaw merges the issue's change, when the project's ``review.merge`` says so.
    merges_on: tuple[Result, ...] = ()
    #: Whether the worker's task names the issue's change (its branch and diff), when there is one.
    sees_change: bool = False
    #: How the fix instructions frame this role's words when its result sends work back to DEV.
    feedback_frame: str = ""

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
        review_defers_merge=True,
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
        change_gated=("pass",),
        sees_change=True,
        feedback_frame="The tester's words",
    ),
    # Only in the workflow of a project whose review policy is "agent" (REVIEW_STAGE).
    "reviewer": RoleSpec(
        name="reviewer",
        start_labels=(Label.TO_REVIEW,),
        active_label=Label.REVIEWING,
        pickup_event=Event.REVIEW_PICKUP,
        results={"approve": Event.REVIEW_APPROVE, "reject": Event.REVIEW_REJECT, "refine": Event.REVIEW_REFINE},
        announcements={
            "approve": "👍 REVIEW APPROVED #{id}{summary}. Moved to QA queue.",
            "reject": "✋ REVIEW REJECTED #{id}{summary}. Sent back to DEV.",
            "refine": "🤔 REVIEW REFINE #{id}{summary}. Awaiting human decision.",
        },
        task=(
            "Review the change for #{id} against the issue: read its diff, do not change it. Reply with one "
            "line: APPROVE: <why it is right>, REJECT: <what must change>, or REFINE: <the question a human "
            "must decide>."
        ),
        emoji="👀",
        merges_on=("approve",),
        sees_change=True,
        feedback_frame="The reviewer's words",
    ),
}


@dataclass(frozen=True)
class Workflow:
    """One project's workflow: its states (in precedence order), moves, roles and queues."""

    states: Mapping[State, StateSpec]
    transitions: Mapping[State, Mapping[Event, State]]
    #: The roles that pick up work in this workflow, with their rows.
    roles: Mapping[Role, RoleSpec]
    #: queue_status's queues, in priority order: (result key, state).
    queues: tuple[tuple[str, State], ...]
    #: The issue's open/closed state that goes with an event, written in the same request as the label.
    issue_state_after: Mapping[Event, IssueState]
    #: Where a new issue starts (``devclaw issue create`` without ``--label``).
    initial: State = Label.PLANNING
    #: The review policy this workflow was built for ("skip": no review stage).
    review: str = "skip"

    def label(self, state: State) -> str:
        """The tracker label of ``state``."""
        return self.states[state].label

    @property
    def labels(self) -> frozenset[str]:
        """Every label this workflow owns; any other label on an issue is left alone."""
        return frozenset(spec.label for spec in self.states.values())

    def state_of(self, labels: Iterable[str]) -> State | None:
        """The issue's state: the first state, in table order, whose label it carries."""
        return next(iter(self.states_on(labels)), None)

    def states_on(self, labels: Iterable[str]) -> list[State]:
        """Every state whose label the issue carries, in table order: more than one is a conflict."""
        present = set(labels)
        return [state for state, spec in self.states.items() if spec.label in present]

    def relabel(self, labels: tuple[str, ...], target: State) -> tuple[str, ...]:
        """``labels`` with every workflow label replaced by ``target``'s; other labels kept, in order."""
        owned = self.labels
        return (*(name for name in labels if name not in owned), self.label(target))

    def next(self, state: State | None, event: Event) -> State:
        """The state after ``event``; raises ``WorkflowError`` for a move the table does not allow."""
        if state is None:
            raise WorkflowError(f'Cannot apply "{event}": the issue has no workflow label')
        moves = self.transitions.get(state, {})
        if event not in moves:
            allowed = ", ".join(str(e) for e in moves) or "none (final state)"
            raise WorkflowError(
                f'Cannot apply "{event}" to an issue on "{self.label(state)}"; allowed from there: {allowed}'
            )
        return moves[event]

    def issue_state(self, event: Event, target: State, now: IssueState) -> IssueState | None:
        """The open/closed state to write with a move (None: leave it). A closed issue that moves on to a state
        where work goes on is reopened: a host closes an issue when a change that closes it is merged."""
        after = self.issue_state_after.get(event)
        if after == "closed" and not self.transitions.get(target):
            return after  # closed only where the work ends: a project may redirect QA pass to a person
        if after == "open" or (now == "closed" and self.transitions.get(target)):
            return "open"
        return None

    def role(self, name: Role) -> RoleSpec:
        """The row of ``name`` in this workflow; a ``WorkflowError`` naming its roles for any other name."""
        try:
            return self.roles[name]
        except KeyError:
            raise WorkflowError(
                f'This project has no "{name}" role; its roles: {", ".join(self.roles)}'
                + (' (a "reviewer" works only with review policy "agent")' if name in ROLES else "")
            ) from None

    def active_role(self, state: State | None) -> Role | None:
        """The role whose workers work on issues in ``state``."""
        return next((name for name, spec in self.roles.items() if spec.active_label == state), None)

    def priority(self, role: Role) -> tuple[State, ...]:
        """The states ``role`` picks up from, in queue priority order."""
        starts = self.role(role).start_labels
        return tuple(state for _, state in self.queues if state in starts)

    def waiting_for_a_person(self) -> tuple[State, ...]:
        """States only a person moves an issue out of: Refining (and any extra such state), then Planning."""
        held = [state for state, moves in self.transitions.items() if set(moves) == {Event.HUMAN}]
        return tuple(sorted(held, key=lambda state: state == self.initial))

    def parse(self, text: str) -> State:
        """A state from user text: its name or its label, matched without regard to case."""
        wanted = text.strip().lower()
        for state, spec in self.states.items():
            if wanted in (state.lower(), spec.label.lower()):
                return state
        names = ", ".join(spec.label for spec in self.states.values())
        raise WorkflowError(f'"{text}" is not a workflow label; use one of: {names}')

    def human_move(self, state: State | None, target: State, *, force: bool = False) -> State:
        """Check a move made by a person (``devclaw issue label``)."""
        if force or state is None or state == target:
            return target
        if self.transitions.get(state, {}).get(Event.HUMAN) == target:
            return target
        allowed = "; ".join(
            f"{self.label(origin)} -> {self.label(moves[Event.HUMAN])}"
            for origin, moves in self.transitions.items()
            if Event.HUMAN in moves
        )
        raise WorkflowError(
            f'Moving an issue from "{self.label(state)}" to "{self.label(target)}" by hand is not a workflow '
            f"move (people move {allowed}); pass --force to do it anyway"
        )


DEFAULT = Workflow(
    states={
        Label.PLANNING: StateSpec(Label.PLANNING, "#95a5a6"),
        Label.TO_DO: StateSpec(Label.TO_DO, "#428bca"),
        Label.DOING: StateSpec(Label.DOING, "#f0ad4e"),
        Label.TO_TEST: StateSpec(Label.TO_TEST, "#5bc0de"),
        Label.TESTING: StateSpec(Label.TESTING, "#9b59b6"),
        Label.DONE: StateSpec(Label.DONE, "#5cb85c"),
        Label.TO_IMPROVE: StateSpec(Label.TO_IMPROVE, "#d9534f"),
        Label.REFINING: StateSpec(Label.REFINING, "#f39c12"),
    },
    transitions={
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
    },
    roles={name: ROLES[name] for name in ("dev", "qa")},
    queues=(("toImprove", Label.TO_IMPROVE), ("toTest", Label.TO_TEST), ("toDo", Label.TO_DO)),
    issue_state_after={Event.QA_PASS: "closed", Event.QA_FAIL: "open"},
)

ReviewPolicy = Literal["skip", "human", "agent"]
REVIEW_POLICIES: tuple[ReviewPolicy, ...] = get_args(ReviewPolicy)

#: The rows a review policy adds: DEV done goes to To Review; a change closed unmerged rejects the issue (closed,
#: in Rejected). "human": the tick moves an approved (merged) change on to To Test, and sends changes requested
#: or a conflict back to To Improve. "agent": a reviewer picks it up (Reviewing) and approves, rejects or asks
#: a person; a change a person merged meanwhile goes on to To Test.
_REVIEW_STATES: dict[str, dict[State, StateSpec]] = {
    "human": {
        Label.TO_REVIEW: StateSpec(Label.TO_REVIEW, "#0e8a16"),
        Label.REJECTED: StateSpec(Label.REJECTED, "#b60205"),
    },
    "agent": {
        Label.TO_REVIEW: StateSpec(Label.TO_REVIEW, "#0e8a16"),
        Label.REVIEWING: StateSpec(Label.REVIEWING, "#1d76db"),
        Label.REJECTED: StateSpec(Label.REJECTED, "#b60205"),
    },
}
_REVIEW_MOVES: dict[str, dict[State, dict[Event, State]]] = {
    "human": {
        Label.DOING: {Event.DEV_DONE: Label.TO_REVIEW},
        Label.TO_REVIEW: {
            Event.CHANGE_APPROVED: Label.TO_TEST,
            Event.CHANGES_REQUESTED: Label.TO_IMPROVE,
            Event.CHANGE_CONFLICT: Label.TO_IMPROVE,
            Event.CHANGE_CLOSED: Label.REJECTED,
        },
        Label.REJECTED: {},
    },
    "agent": {
        Label.DOING: {Event.DEV_DONE: Label.TO_REVIEW},
        Label.TO_REVIEW: {
            Event.REVIEW_PICKUP: Label.REVIEWING,
            Event.CHANGE_APPROVED: Label.TO_TEST,
            Event.CHANGE_CLOSED: Label.REJECTED,
        },
        Label.REVIEWING: {
            Event.REVIEW_APPROVE: Label.TO_TEST,
            Event.REVIEW_REJECT: Label.TO_IMPROVE,
            Event.REVIEW_REFINE: Label.REFINING,
            Event.CHANGE_APPROVED: Label.TO_TEST,
            Event.CHANGE_CLOSED: Label.REJECTED,
            Event.REVERT: Label.TO_REVIEW,
            Event.STUCK: Label.REFINING,
        },
        Label.REJECTED: {},
    },
}
_REVIEWED_DEV = replace(
    ROLES["dev"],
    announcements={"done": "✅ DEV done #{id}{summary}. Moved to the review queue."},
    task=(
        "Work on a branch from {base_branch} and open a merge/pull request that closes #{id}; do not merge it, "
        "it is reviewed first. When it is ready for review, reply with one line: DONE: <what you changed>."
    ),
)


def with_review(base: Workflow, policy: str) -> Workflow:
    """``base`` with the review stage for ``policy``: its states, moves, and (for "agent") the reviewer."""
    if policy == "skip":
        return base
    transitions = {state: dict(moves) for state, moves in base.transitions.items()}
    for state, moves in _REVIEW_MOVES[policy].items():
        transitions.setdefault(state, {}).update(moves)
    roles = {**base.roles, "dev": _REVIEWED_DEV}
    if policy == "agent":
        roles["reviewer"] = ROLES["reviewer"]
    queues = (("toReview", Label.TO_REVIEW), *base.queues)
    return replace(
        base,
        states={**base.states, **_REVIEW_STATES[policy]},
        transitions=transitions,
        roles=roles,
        queues=queues,
        issue_state_after={**base.issue_state_after, Event.CHANGE_CLOSED: "closed"},
        review=policy,
    )


#: Every result any role has, in table order: the ``result`` parameter's vocabulary.
RESULTS: tuple[Result, ...] = tuple(dict.fromkeys(r for spec in ROLES.values() for r in spec.results))


_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
#: An extra state's colour when its settings give none.
EXTRA_COLOUR = "#ededed"


def customised(
    base: Workflow,
    states: Mapping[State, tuple[str | None, str | None]],
    transitions: Mapping[State, Mapping[str, State]],
) -> Workflow:
    """``base`` with a project's settings over it: ``states`` maps a state to (label, colour) (renames
    and recolours a state of ``base``, or adds one), ``transitions`` adds or redirects moves.

    Raises ``WorkflowError`` naming the setting: the tools rely on every state of ``base`` and on its roles'
    moves, so an extra state is one a person decides (its only move out is ``human``) or a final one.
    """
    specs = dict(base.states)
    for state, (label, colour) in states.items():
        where = f"workflow.states.{state}"
        if state != state.strip() or not state:
            raise WorkflowError(f"{where}: a state's name cannot be empty or start or end with spaces")
        if colour is not None and not _COLOUR.fullmatch(colour):
            raise WorkflowError(f'{where}.colour: "{colour}" is not a colour; write it as #rrggbb, e.g. #1d76db')
        if label is not None and not label.strip():
            raise WorkflowError(f"{where}.label: a label cannot be empty")
        known = specs.get(state)
        specs[state] = StateSpec(
            label=(label.strip() if label else None) or (known.label if known else state),
            colour=colour or (known.colour if known else EXTRA_COLOUR),
        )
    _unique_labels(specs, states)
    moves = {state: dict(row) for state, row in base.transitions.items()}
    for state, row in transitions.items():
        if state not in specs:
            raise WorkflowError(f'workflow.transitions.{state}: no state "{state}"; states: {", ".join(specs)}')
        for name, target in row.items():
            where = f"workflow.transitions.{state}.{name}"
            event = _event(name, where)
            if target not in specs:
                raise WorkflowError(f'{where}: no state "{target}"; states: {", ".join(specs)}')
            if state not in base.states and event != Event.HUMAN:
                raise WorkflowError(f'{where}: "{state}" is an extra state, which only a person moves on; use "human"')
            _check_redirect(base, state, event, target, where)
            moves.setdefault(state, {})[event] = target
    for state in specs.keys() - base.states.keys():
        moves.setdefault(state, {})
        if not any(state in row.values() for row in moves.values()):
            raise WorkflowError(
                f'workflow.states.{state}: nothing moves an issue into "{state}"; add a move to it under '
                f"workflow.transitions"
            )
    return replace(base, states=specs, transitions=moves)


def _check_redirect(base: Workflow, state: State, event: Event, target: State, where: str) -> None:
    """The tools rely on each role's moves: a move of a built-in state may be redirected (or a person's move
    added), but no pickup may go elsewhere than its role's active state, and no other move may lead into
    one (no worker would be on the issue)."""
    if state in base.states and event != Event.HUMAN and event not in base.transitions.get(state, {}):
        allowed = ", ".join(base.transitions.get(state, {})) or "none"
        raise WorkflowError(f'{where}: "{event}" is not a move of "{state}" (its moves: {allowed}, and "human")')
    for role in base.roles.values():
        if event == role.pickup_event and target != role.active_label:
            raise WorkflowError(f'{where}: a {role.name} pickup goes to "{role.active_label}", where its worker works')
        if target == role.active_label and event != role.pickup_event:
            raise WorkflowError(
                f'{where}: only a {role.name} pickup moves an issue into "{target}" (a worker must be on it)'
            )


def _event(name: str, where: str) -> Event:
    try:
        return Event(name)
    except ValueError:
        raise WorkflowError(f'{where}: "{name}" is not an event; events: {", ".join(Event)}') from None


def _unique_labels(specs: Mapping[State, StateSpec], changed: Iterable[State]) -> None:
    for state in changed:
        label = specs[state].label.lower()  # trackers compare labels without regard to case
        other = next((name for name, spec in specs.items() if name != state and spec.label.lower() == label), None)
        if other is not None:
            raise WorkflowError(
                f'workflow.states.{state}.label: "{specs[state].label}" is already the label of "{other}"; '
                "each state needs its own label"
            )
