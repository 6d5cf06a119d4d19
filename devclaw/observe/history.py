"""What the audit log says, digested one record at a time: issue timelines, daily analytics, token usage,
triage reasons, the last health check and a window of recent events.

``History.add_line`` is called once per line, as the feed reads it; every query reads these digests and
never the log. Only the lines of the events digested here (``DIGESTED``) are parsed as they are read;
every other line is only counted and kept, as written, in the window of recent events, and parsed when
``/api/events`` asks for it. Token usage is read from ``task_complete`` records that carry
``usage: {input, output, cacheRead, cacheWrite, cost}`` and ``model``; records without it count for
nothing here.
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
from array import array
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from sys import intern
from typing import Any

from devclaw.workflow import Label

#: How each built-in workflow state reads as a stage of an issue's life (an extra state reads as its name).
STAGE_NAMES: dict[str, str] = {
    Label.PLANNING.value: "planning",
    Label.TO_DO.value: "queued",
    Label.DOING.value: "in dev",
    Label.TO_TEST.value: "waiting for QA",
    Label.TESTING.value: "in QA",
    Label.TO_IMPROVE.value: "back for fixes",
    Label.REFINING.value: "waiting for a person",
    Label.TO_REVIEW.value: "waiting for review",
    Label.REVIEWING.value: "in review",
}
EVENT_WINDOW = 10_000
#: The records that move an issue (the others, such as a refused call's ``error``, do not).
ISSUE_EVENTS = frozenset({"task_pickup", "task_complete", "issue_label"})
#: A byte search that finds every line of a digested event (and rarely another, which parsing then
#: drops): json.loads costs more than the rest of the digest, and most lines of a big log need none.
DIGESTED = re.compile(rb"task_pickup|task_complete|issue_label|health_check")


def parse_ts(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


@dataclass(slots=True)
class Transition:
    at: float
    source: str
    target: str
    role: str  # "" for a person's move
    event: str


@dataclass(slots=True)
class Stage:
    label: str
    name: str
    start: float
    end: float | None  # None: the issue is still there

    def seconds(self, now: float) -> float:
        return (self.end if self.end is not None else now) - self.start


#: Each distinct kind of move, (source, target, role, event), once for the whole process: a million
#: lines hold a handful of them, so an issue keeps a number per move instead of a record.
_MOVE_KINDS: list[tuple[str, str, str, str]] = []
_MOVE_KIND_NUMBERS: dict[tuple[str, str, str, str], int] = {}


def _move_kind(kind: tuple[str, str, str, str]) -> int:
    number = _MOVE_KIND_NUMBERS.get(kind)
    if number is None:
        number = _MOVE_KIND_NUMBERS[kind] = len(_MOVE_KINDS)
        _MOVE_KINDS.append(kind)
    return number


@dataclass(slots=True)
class IssueHistory:
    """One issue's moves, packed (a time and a kind number each: about 12 bytes a move, where a record
    would take over a hundred), and the few figures the pages need."""

    group_id: str
    project: str
    issue: int
    title: str = ""
    move_times: array[float] = field(default_factory=lambda: array("d"))
    move_kinds: array[int] = field(default_factory=lambda: array("I"))
    first_pickup: float | None = None
    done_at: float | None = None
    qa_fails: int = 0
    last_feedback: str | None = None
    braked: bool = False
    usage: UsageTotals | None = None  # the tokens and cost of its tasks, once one records them

    def add_move(self, at: float, source: str, target: str, role: str, event: str) -> None:
        self.move_times.append(at)
        self.move_kinds.append(_move_kind((source, target, role, event)))

    @property
    def transitions(self) -> list[Transition]:
        return [Transition(at, *_MOVE_KINDS[kind]) for at, kind in zip(self.move_times, self.move_kinds, strict=True)]

    @property
    def last_move_at(self) -> float | None:
        return self.move_times[-1] if self.move_times else None

    @property
    def roles(self) -> set[str]:
        return {role for kind in set(self.move_kinds) if (role := _MOVE_KINDS[kind][2])}

    @property
    def cycle_seconds(self) -> float | None:
        if self.first_pickup is None or self.done_at is None:
            return None
        return self.done_at - self.first_pickup

    def stages(self) -> list[Stage]:
        """Each stretch the issue sat on one label, between two moves (the last one still open)."""
        stages = []
        moves = self.transitions
        for current, following in zip(moves, [*moves[1:], None], strict=True):
            if current.target not in STAGE_NAMES:
                continue  # Done: the end, not a stage
            end = following.at if following is not None else None
            stages.append(Stage(current.target, STAGE_NAMES[current.target], current.at, end))
        return stages


@dataclass(slots=True)
class DayStats:
    done: int = 0
    qa_pass: int = 0
    qa_fail: int = 0
    qa_refine: int = 0
    loop_brakes: int = 0
    cycle_seconds: list[float] = field(default_factory=list)

    @property
    def qa_fail_rate(self) -> float | None:
        judged = self.qa_pass + self.qa_fail + self.qa_refine
        return self.qa_fail / judged if judged else None

    @property
    def median_cycle_seconds(self) -> float | None:
        return statistics.median(self.cycle_seconds) if self.cycle_seconds else None


@dataclass(slots=True)
class UsageTotals:
    tasks: int = 0
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cost: float = 0.0
    cost_missing: int = 0  # tasks whose usage had no cost

    def add(self, counts: tuple[int, int, int, int], cost: float | None) -> None:
        self.tasks += 1
        self.input += counts[0]
        self.output += counts[1]
        self.cache_read += counts[2]
        self.cache_write += counts[3]
        if cost is None:
            self.cost_missing += 1
        else:
            self.cost += cost

    def merge(self, other: UsageTotals) -> None:
        self.tasks += other.tasks
        self.input += other.input
        self.output += other.output
        self.cache_read += other.cache_read
        self.cache_write += other.cache_write
        self.cost += other.cost
        self.cost_missing += other.cost_missing

    def as_json(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks,
            "input": self.input,
            "output": self.output,
            "cacheRead": self.cache_read,
            "cacheWrite": self.cache_write,
            "cost": round(self.cost, 6),
            "tasksWithoutCost": self.cost_missing,
        }


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


@dataclass
class Usage:
    total: UsageTotals = field(default_factory=UsageTotals)
    by_role: dict[str, UsageTotals] = field(default_factory=dict)
    by_model: dict[str, UsageTotals] = field(default_factory=dict)
    by_project: dict[str, UsageTotals] = field(default_factory=dict)
    by_day: dict[str, UsageTotals] = field(default_factory=dict)

    def add(self, record: dict[str, Any], usage: dict[str, Any], day: str) -> UsageTotals:
        """Count one task's usage in every table; the task's own totals (for its issue to add up)."""
        project = str(record.get("project") or record.get("groupId") or "?")
        keys: list[tuple[dict[Any, UsageTotals], Any]] = [
            (self.by_role, str(record.get("role") or "?")),
            (self.by_model, str(record.get("model") or "unknown model")),
            (self.by_project, project),
            (self.by_day, day),
        ]
        counts = (
            _count(usage.get("input")),
            _count(usage.get("output")),
            _count(usage.get("cacheRead")),
            _count(usage.get("cacheWrite")),
        )
        cost = usage.get("cost")
        price = float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else None
        self.total.add(counts, price)
        for table, key in keys:
            totals = table.get(key)
            if totals is None:
                totals = table[key] = UsageTotals()
            totals.add(counts, price)
        task = UsageTotals()
        task.add(counts, price)
        return task


class History:
    def __init__(self, *, window: int = EVENT_WINDOW) -> None:
        self.issues: dict[tuple[str, int], IssueHistory] = {}
        self.days: dict[tuple[str, str], DayStats] = {}  # (day, project name)
        self.usage = Usage()
        self.last_health: dict[str, Any] | None = None
        self.events: deque[tuple[int, bytes]] = deque(maxlen=window)  # (seq, the line as written)
        self.seq = 0

    def add_line(self, line: bytes) -> dict[str, Any] | None:
        """Count and keep one line of the log; the record, if it is one this history digests."""
        if not line.startswith(b"{"):
            return None  # not a record (a blank or damaged line): the log's readers all skip such lines
        self.seq += 1
        self.events.append((self.seq, line))
        if DIGESTED.search(line) is None:
            return None
        record = _record(line)
        if record is not None:
            self._digest(record)
        return record

    def add(self, record: dict[str, Any]) -> None:
        """As ``add_line``, for a record already parsed."""
        self.add_line(json.dumps(record, ensure_ascii=False).encode())

    def _digest(self, record: dict[str, Any]) -> None:
        event = record.get("event")
        group_id = record.get("groupId")
        if event == "health_check":
            self.last_health = record
            return
        at = parse_ts(record.get("ts"))
        issue_id = record.get("issue")
        if event not in ISSUE_EVENTS or at is None or not isinstance(group_id, str) or not isinstance(issue_id, int):
            return
        issue = self._issue(group_id, issue_id, record)
        if event == "task_pickup":
            self._pickup(issue, record, at)
        elif event == "task_complete":
            self._complete(issue, record, at)
        elif event == "issue_label":
            self._move(issue, record, at, role="")

    def _issue(self, group_id: str, issue_id: int, record: dict[str, Any]) -> IssueHistory:
        key = (intern(group_id), issue_id)  # one copy of each group id, whatever the number of issues
        issue = self.issues.get(key)
        if issue is None:
            issue = self.issues[key] = IssueHistory(key[0], key[0], issue_id)
        if isinstance(record.get("project"), str):
            # The name as of the latest record (a project can be renamed); one copy of each name.
            issue.project = intern(record["project"])
        return issue

    def _pickup(self, issue: IssueHistory, record: dict[str, Any], at: float) -> None:
        if isinstance(record.get("issueTitle"), str):
            issue.title = record["issueTitle"]
        if record.get("role") == "dev" and issue.first_pickup is None:
            issue.first_pickup = at
        self._move(issue, record, at, role=str(record.get("role") or ""))

    def _complete(self, issue: IssueHistory, record: dict[str, Any], at: float) -> None:
        self._move(issue, record, at, role=str(record.get("role") or ""))
        day = str(record.get("ts"))[:10]  # the UTC date: every ts devclaw writes is UTC
        stats = self.days.setdefault((day, issue.project), DayStats())
        result = record.get("result")
        if isinstance(record.get("usage"), dict):
            task = self.usage.add(record, record["usage"], day)
            if issue.usage is None:
                issue.usage = task
            else:
                issue.usage.merge(task)
        if record.get("role") != "qa":
            return
        summary = record.get("summary")
        if result == "pass":
            stats.qa_pass += 1
            stats.done += 1
            issue.done_at = at
            if issue.cycle_seconds is not None:
                stats.cycle_seconds.append(issue.cycle_seconds)
        elif result in ("fail", "refine"):
            stats.qa_fail += result == "fail"
            stats.qa_refine += result == "refine"
            issue.qa_fails += result == "fail"
            issue.last_feedback = summary if isinstance(summary, str) else issue.last_feedback
            issue.braked = record.get("loopBrake") is True
            stats.loop_brakes += issue.braked

    def _move(self, issue: IssueHistory, record: dict[str, Any], at: float, *, role: str) -> None:
        move = record.get("labelTransition")
        if not isinstance(move, str) or " → " not in move:
            return
        source, target = move.split(" → ", 1)
        issue.add_move(at, source, target, role, str(record.get("event")))

    def events_after(self, after: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
        if not self.events or after >= self.seq:
            return []
        first = self.events[0][0]
        found = []
        for seq, line in itertools.islice(self.events, max(0, after + 1 - first), None):
            record = _record(line)
            if record is not None:
                found.append((seq, record))
                if len(found) == limit:
                    break
        return found


def _record(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None  # damaged: skipped, as every reader of the log does
    return record if isinstance(record, dict) else None
