"""Decide, then apply: the one code path that changes the tracker, projects.json or audit.log.

Every mutation (each mutating tool, each health fix, ``project add``/``edit``/``remove``, ``issue
label``) is a *decision*: a function that reads (projects.json, the tracker) and returns a ``Plan`` —
the move to make with the issue as it was read, the worker slots' new values, the counters, the audit
records and the result to answer with. It writes nothing. ``apply`` performs any plan, always in the
same order:

    1. intent      projects.json records the move it is about to make (plans with a move on a network
                   tracker, whose reply can be lost; the embedded tracker's move is one transaction)
    2. tracker     the move, in one write; a lost reply is settled by re-reading the issue
    3. git pull    DEV done only: before the commit, so its outcome is on the commit's audit line
    4. commit      projects.json: slots, counters and configuration changed, the intent removed
    5. comment     the loop brake's comment on the issue (one request, never retried)
    6. audit       the plan's lines, whole, in commit order, before the project lock is released

``mutate`` runs a decision and its apply under the project's lock (one per project: a call on project A
never waits for project B's tracker). projects.json itself is locked only for each short read-modify-
write of steps 1 and 4, which replaces this project's entry and nothing else.

A move whose outcome is unknown (the reply was lost and the issue cannot be re-read) leaves its intent:
the next call on the project, or ``session_health``, re-reads the issue and finishes the commit (the
move landed) or drops it (it did not). Until then the project refuses other mutations, so nothing is
decided from a state that may be out of date.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import filelock
from pydantic import BaseModel

from devclaw.errors import DevclawError, NotFoundError, StateError, TrackerError, WorkflowError
from devclaw.faults import checkpoint
from devclaw.git import pull_ff_only
from devclaw.state import Intent, Project, ProjectsFile, SlotChange, Worker
from devclaw.trackers.base import Issue, Tracker
from devclaw.workflow import IssueState, State
from devclaw.workspace import Workspace

#: A plan's result: the tool result model (any pydantic model) the call answers with.
R = TypeVar("R", bound=BaseModel)

#: The caller's deadline (``time.time()`` seconds), set by ``devclaw serve`` from the request: a
#: mutation whose deadline has passed is not started, and no lock is waited for past it.
#: How often a waiting call retries a project lock held by another process.
POLL_SECONDS = 0.005

DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("devclaw_deadline", default=None)


@dataclass(frozen=True)
class Move:
    """One tracker write: ``issue`` (as the decision read it) to ``target``, opened or closed by ``state``."""

    issue: Issue
    target: State
    state: IssueState | None = None

    @property
    def transition(self) -> str:
        return f"{self.issue.label or 'none'} → {self.target}"


@dataclass(frozen=True)
class Record:
    """One audit line: its event and fields (``ts`` and ``event`` are added when it is written)."""

    event: str
    fields: dict[str, Any]


@dataclass
class Plan(Generic[R]):
    """What a decision wants done. ``apply`` is the only code that performs it."""

    tool: str
    group_id: str
    result: R
    move: Move | None = None
    slots: list[SlotChange] = field(default_factory=list)
    #: Issue id -> its new QA fail count.
    qa_fails: dict[str, int] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    #: DEV done: the checkout to ``git pull --ff-only`` before the commit.
    pull_repo: str | None = None
    #: A comment to add to the moved issue after the commit (the loop brake's explanation), and the
    #: result field that says whether it was added.
    comment: str | None = None
    comment_field: str = "loopBrakeComment"
    #: ``project add``/``edit``: the project's new entry; ``remove``: the entry goes.
    project: Project | None = None
    remove_project: bool = False
    #: Create the workflow labels the tracker lacks (``project add``); the names go in ``labelsCreated``.
    ensure_labels: bool = False

    @property
    def changes_anything(self) -> bool:
        return bool(self.move or self.slots or self.qa_fails or self.project or self.remove_project or self.records)


@dataclass
class Applied(Generic[R]):
    """What ``apply`` did beyond the plan: outcomes that only the effects can tell."""

    result: R
    #: Fields learned while applying, set on the result and on the plan's first audit record.
    outcome: dict[str, Any] = field(default_factory=dict)


class LostReply(TrackerError):
    """The tracker may have applied the move: its reply was lost and the issue could not be re-read."""


# --- locks ---------------------------------------------------------------------------------------------

_PROCESS_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_PROCESS_GUARD = threading.Lock()


def _process_lock(ws: Workspace, group_id: str) -> threading.Lock:
    with _PROCESS_GUARD:
        return _PROCESS_LOCKS.setdefault((str(ws.root), group_id), threading.Lock())


def _lock_file(ws: Workspace, group_id: str) -> str:
    # Group ids are user text: a readable, safe part plus a hash keeps one file per project.
    safe = re.sub(r"[^0-9A-Za-z_-]", "_", group_id)[:40]
    digest = hashlib.sha256(group_id.encode()).hexdigest()[:12]
    return str(ws.memory / "locks" / f"project{safe}-{digest}.lock")


def _wait_budget(ws: Workspace, what: str) -> float:
    timeout = ws.store.lock_timeout
    deadline = DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.time()
    if left <= 0:
        raise StateError(f"{what} was not started: the caller's deadline had already passed; nothing was changed")
    return min(timeout, left)


@contextlib.contextmanager
def project_lock(ws: Workspace, group_id: str) -> Iterator[None]:
    """The project's lock, across threads (serve) and processes (the CLI): every wait is bounded."""
    budget = _wait_budget(ws, f"A change to project {group_id}")
    thread_lock = _process_lock(ws, group_id)
    started = time.monotonic()
    if not thread_lock.acquire(timeout=budget):
        raise StateError(_busy(group_id, budget))
    try:
        file_lock = _acquire_file_lock(ws, group_id, max(0.0, budget - (time.monotonic() - started)), budget)
        try:
            yield
        finally:
            file_lock.release()
    finally:
        thread_lock.release()


def _acquire_file_lock(ws: Workspace, group_id: str, timeout: float, budget: float) -> filelock.BaseFileLock:
    try:
        lock = filelock.FileLock(_lock_file(ws, group_id))
        try:
            lock.acquire(timeout=timeout, poll_interval=POLL_SECONDS)
        except FileNotFoundError:  # the locks folder is made once, not checked on every call
            (ws.memory / "locks").mkdir(parents=True, exist_ok=True)
            lock.acquire(timeout=timeout, poll_interval=POLL_SECONDS)
    except filelock.Timeout:
        raise StateError(_busy(group_id, budget)) from None
    except OSError as exc:
        raise StateError(f"Cannot lock project {group_id} in {ws.memory}: {exc.strerror or exc}") from exc
    return lock


def _busy(group_id: str, waited: float) -> str:
    return (
        f"Project {group_id} is busy with another devclaw call (waited {waited:g} s); nothing was changed. "
        "Try again, or raise DEVCLAW_LOCK_TIMEOUT if calls are slow"
    )


# --- running a decision --------------------------------------------------------------------------------


def mutate(
    ws: Workspace, group_id: str, decide: Callable[[ProjectsFile], Plan[R]], *, dry_run: bool = False
) -> Applied[R]:
    """Settle the project's pending moves, run ``decide`` on the current state and apply its plan, all
    under the project's lock. With ``dry_run`` the plan's result is returned and nothing is written."""
    with project_lock(ws, group_id):
        state = ws.store.read()
        if group_id in state.projects and state.projects[group_id].intents:
            resolve_intents(ws, group_id)
            state = ws.store.read()
        plan = decide(state)
        if dry_run:
            return Applied(plan.result.model_copy(update={"dry_run": True}))
        if not plan.changes_anything:
            return Applied(plan.result)  # a repeated call: the answer, and nothing to write
        return apply(ws, plan)


def apply(ws: Workspace, plan: Plan[R]) -> Applied[R]:
    """Perform ``plan`` (see the module docstring for the order). Call it holding the project's lock."""
    applied: Applied[R] = Applied(plan.result)
    checkpoint("after_validation")
    intent = _intent(ws, plan) if plan.move is not None else None
    if intent is not None:
        tracker = _tracker(ws, plan)
        if tracker.replies_can_be_lost:
            ws.store.update(lambda state: _with_project(state, plan.group_id, lambda p: _add_intent(p, intent)))
            checkpoint("after_intent")
        _move(ws, plan, intent, tracker)
        checkpoint("after_tracker_write")
    if plan.ensure_labels:
        applied.outcome["labelsCreated"] = _ensure_labels(ws, plan)
    if plan.pull_repo is not None:
        applied.outcome["gitPull"] = pull_ff_only(plan.pull_repo)
    _commit(ws, plan, intent)
    checkpoint("after_state_commit")
    if plan.comment is not None and plan.move is not None:
        applied.outcome[plan.comment_field] = _comment(ws, plan)
    audit_error = _append_records(ws, plan.group_id, plan.records, applied.outcome)
    if applied.outcome:
        applied.result = applied.result.model_copy(update=_result_fields(applied.result, applied.outcome))
    if audit_error is not None:
        applied.result = applied.result.model_copy(update={"audit_error": audit_error})
    return applied


def _result_fields(result: BaseModel, outcome: dict[str, Any]) -> dict[str, Any]:
    by_alias = {info.alias or name: name for name, info in type(result).model_fields.items()}
    return {by_alias[key]: value for key, value in outcome.items() if key in by_alias}


# --- the steps -----------------------------------------------------------------------------------------


def _intent(ws: Workspace, plan: Plan[Any]) -> Intent:
    assert plan.move is not None
    return Intent(
        id=f"{random.getrandbits(48):012x}",  # seeded per process; uuid4 costs a getrandom syscall a call
        created_at=ws.now_iso(),
        tool=plan.tool,
        issue_id=plan.move.issue.id,
        from_label=plan.move.issue.label,
        to_label=plan.move.target,
        slots=plan.slots,
        qa_fails=plan.qa_fails,
        records=[{"event": r.event, **r.fields} for r in plan.records],
    )


def _add_intent(project: Project, intent: Intent) -> Project:
    return project.model_copy(update={"intents": [*project.intents, intent]})


def _tracker(ws: Workspace, plan: Plan[Any]) -> Tracker:
    return ws.tracker(plan.project or ws.store.read().project(plan.group_id))


def _ensure_labels(ws: Workspace, plan: Plan[Any]) -> list[str]:
    try:
        return _tracker(ws, plan).ensure_labels()
    except TrackerError as exc:  # a label may have been made; the same call again keeps what exists
        raise TrackerError(
            f"{exc}. The project was not registered, and labels created so far stay; run the same command "
            "again (labels that exist are kept, the missing ones created)"
        ) from exc


def _move(ws: Workspace, plan: Plan[Any], intent: Intent, tracker: Tracker) -> None:
    assert plan.move is not None
    move = plan.move
    if not tracker.replies_can_be_lost:
        tracker.move_issue(move.issue, move.target, move.state)  # one local transaction: done, or nothing
        return
    try:
        tracker.move_issue(move.issue, move.target, move.state)
        return
    except WorkflowError:
        _drop_intent(ws, plan.group_id, intent.id)  # refused before writing (the label moved): nothing landed
        raise
    except TrackerError as exc:
        failure = exc
    landed = _landed(tracker, intent)
    if landed is True:
        return  # the reply was lost, the move was not: carry on as if it had answered
    if landed is False:
        _drop_intent(ws, plan.group_id, intent.id)
        raise failure
    raise LostReply(
        f"{failure.message}. The tracker may have applied the move of issue #{move.issue.id} to "
        f'"{move.target}" anyway; devclaw recorded it and will reconcile it on the next call on this '
        "project or the next session_health (or retry this same call: it converges)",
        status=failure.status,
    ) from failure


def _landed(tracker: Tracker, intent: Intent) -> bool | None:
    """Whether the intended move is on the tracker: True, False, or None when the issue cannot be read."""
    try:
        issue = tracker.get_issue(intent.issue_id)
    except NotFoundError:
        return False
    except DevclawError:
        return None
    return issue.label == intent.to_label


def _drop_intent(ws: Workspace, group_id: str, intent_id: str) -> None:
    def drop(project: Project) -> Project:
        return project.model_copy(update={"intents": [i for i in project.intents if i.id != intent_id]})

    ws.store.update(lambda state: _with_project(state, group_id, drop))


def _commit(ws: Workspace, plan: Plan[Any], intent: Intent | None) -> None:
    try:
        ws.store.update(lambda state: _committed(state, plan, intent))
    except DevclawError as exc:
        if plan.move is None:
            raise
        raise _undo(ws, plan, exc) from exc


def _committed(state: ProjectsFile, plan: Plan[Any], intent: Intent | None) -> ProjectsFile:
    if plan.remove_project:
        return state.model_copy(update={"projects": {g: p for g, p in state.projects.items() if g != plan.group_id}})
    if plan.project is not None:
        return state.model_copy(update={"projects": {**state.projects, plan.group_id: plan.project}})
    new = _with_project(state, plan.group_id, lambda p: _changed(p, plan.slots, plan.qa_fails, intent))
    check_caps(new, plan.slots)
    return new


def _changed(project: Project, slots: list[SlotChange], qa_fails: dict[str, int], intent: Intent | None) -> Project:
    workers = {role: list(found) for role, found in project.workers.items()}
    for change in slots:
        found = workers.setdefault(change.role, [Worker()])
        while len(found) <= change.slot:
            found.append(Worker())
        found[change.slot] = change.worker
    intents = [i for i in project.intents if intent is None or i.id != intent.id]
    return project.model_copy(
        update={"workers": workers, "qa_fails": {**project.qa_fails, **qa_fails}, "intents": intents}
    )


def check_caps(state: ProjectsFile, slots: list[SlotChange]) -> None:
    """Refuse a commit that would make more workers active than the workspace allows."""
    roles = {change.role for change in slots if change.worker.active}
    if not roles:
        return
    if state.max_active_workers is not None and state.active_count() > state.max_active_workers:
        raise WorkflowError(
            f"maxActiveWorkers is {state.max_active_workers} and that many workers are active already; "
            "wait for one to finish (or raise maxActiveWorkers in projects.json)"
        )
    for role in roles:
        cap = state.max_active_workers_per_role.get(role)
        if cap is not None and state.active_count(role) > cap:
            raise WorkflowError(
                f"maxActiveWorkersPerRole.{role} is {cap} and that many {role.upper()} workers are active "
                "already; wait for one to finish (or raise the cap in projects.json)"
            )


def _undo(ws: Workspace, plan: Plan[Any], failure: DevclawError) -> DevclawError:
    """The commit failed after the tracker moved: put the label back, and say what happened to both."""
    assert plan.move is not None
    move = plan.move
    tracker = _tracker(ws, plan)
    labels = tracker.workflow.relabel(move.issue.labels, move.target)
    moved = replace(move.issue, state=move.state or move.issue.state, labels=labels, label=move.target)
    back = move.issue.label
    try:
        if back is None:
            raise WorkflowError("the issue had no workflow label to go back to")
        tracker.move_issue(moved, back, move.issue.state if move.state else None)
    except DevclawError as undo_exc:
        kind = type(failure) if isinstance(failure, WorkflowError) else StateError
        return kind(
            f'{failure.message}. Issue #{move.issue.id} was moved to "{move.target}" and moving it back to '
            f'"{back}" failed too ({undo_exc.message}): run session_health with autoFix to repair'
        )
    with contextlib.suppress(DevclawError):
        # Best effort: if projects.json cannot be written at all, the intent stays and is dropped on the
        # next call (the issue is back where it was, so it did not land).
        ws.store.update(lambda state: _with_project(state, plan.group_id, lambda p: _without_intents_of(p, move)))
    kind = type(failure) if isinstance(failure, WorkflowError) else StateError
    return kind(f'{failure.message}. The label move was undone: issue #{move.issue.id} is on "{back}" again')


def _without_intents_of(project: Project, move: Move) -> Project:
    return project.model_copy(update={"intents": [i for i in project.intents if i.issue_id != move.issue.id]})


def _comment(ws: Workspace, plan: Plan[Any]) -> str:
    assert plan.move is not None and plan.comment is not None
    try:
        _tracker(ws, plan).add_comment(plan.move.issue.id, plan.comment)
    except DevclawError as exc:
        return f"warning: the comment could not be added: {exc.message}"
    return "added"


def _append_records(ws: Workspace, group_id: str, records: list[Record], outcome: dict[str, Any]) -> str | None:
    """Append the plan's lines; a failure is reported (and kept in projects.json to be written later)."""
    lines = [{"event": r.event, **r.fields} for r in records]
    if lines and outcome:
        lines[0].update(outcome)
    for index, line in enumerate(lines):
        try:
            ws.audit.append(line["event"], **{k: v for k, v in line.items() if k != "event"})
        except DevclawError as exc:
            _keep_gap(ws, group_id, lines[index:])
            return (
                f"{exc.message}. The change was made; its audit line was not written. devclaw doctor and "
                "session_health report the gap, and session_health with autoFix writes it once the log is "
                "writable again"
            )
    return None


def _keep_gap(ws: Workspace, group_id: str, lines: list[dict[str, Any]]) -> None:
    def keep(project: Project) -> Project:
        return project.model_copy(update={"audit_gaps": [*project.audit_gaps, *lines]})

    with contextlib.suppress(DevclawError):
        ws.store.update(lambda state: _with_project(state, group_id, keep))


def _with_project(state: ProjectsFile, group_id: str, change: Callable[[Project], Project]) -> ProjectsFile:
    project = state.projects.get(group_id)
    if project is None:
        raise NotFoundError(f"Project {group_id} was removed while devclaw was working on it; nothing was changed")
    return state.model_copy(update={"projects": {**state.projects, group_id: change(project)}})


# --- settling moves whose reply was lost ---------------------------------------------------------------


@dataclass(frozen=True)
class Settled:
    """What became of one pending move: ``landed`` (committed now), ``dropped``, or ``unknown``."""

    intent: Intent
    outcome: str


def resolve_intents(ws: Workspace, group_id: str) -> list[Settled]:
    """Settle every pending move of the project by re-reading its issue. Call it holding the project's
    lock. A move that cannot be settled (the tracker is still unreachable) stops the caller: deciding
    anything else from a state that may be out of date would be worse than waiting."""
    project = ws.store.read().projects.get(group_id)
    if project is None or not project.intents:
        return []
    tracker = ws.tracker(project)
    settled = []
    for intent in project.intents:
        landed = _landed(tracker, intent)
        if landed is None:
            raise TrackerError(
                f'An earlier move of issue #{intent.issue_id} on {project.name} (to "{intent.to_label}", by '
                f"{intent.tool}) may or may not have reached the tracker, which cannot be read now; nothing "
                "was changed. Try again when the tracker answers"
            )
        settled.append(_settle(ws, group_id, intent, landed))
    return settled


def _settle(ws: Workspace, group_id: str, intent: Intent, landed: bool) -> Settled:
    if not landed:
        _drop_intent(ws, group_id, intent.id)
        return Settled(intent, "dropped")
    ws.store.update(
        lambda state: _with_project(state, group_id, lambda p: _changed(p, intent.slots, intent.qa_fails, intent))
    )
    records = [Record(str(line["event"]), {k: v for k, v in line.items() if k != "event"}) for line in intent.records]
    _append_records(ws, group_id, records, {"reconciled": True})
    return Settled(intent, "landed")
