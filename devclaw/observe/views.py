"""What each page and API answer shows, as plain JSON-able dicts: the templates render these and the
API returns them, so the two never disagree. Nothing here reads a file or a tracker."""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from devclaw.observe.board import QueueSnapshot, shown_queues, worker_rows
from devclaw.observe.history import STAGE_NAMES, DayStats, IssueHistory, UsageTotals, parse_ts
from devclaw.observe.live import Observatory
from devclaw.state import Project
from devclaw.workflow import Event, Label

NO_USAGE_NOTE = (
    "No token usage recorded yet: the work loop records it on each task_complete line "
    "(usage and model), and this page fills in as soon as one is written."
)
TIMELINE_LIMIT = 200
TOP_TASKS = 50


def iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def state_view(obs: Observatory, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    return {
        "version": obs.version,
        "generatedAt": iso(now),
        "workspace": str(obs.ws.root),
        "stateError": obs.state_error,
        "refreshSeconds": obs.settings.refresh,
        "auditRecords": obs.history.seq,
        "history": obs.history_progress(),
        "health": _health(obs.history.last_health, None, now),
        "projects": [project_view(obs, gid, project, now) for gid, project in obs.state.projects.items()],
    }


def project_view(obs: Observatory, group_id: str, project: Project, now: float) -> dict[str, Any]:
    snapshot = obs.board.snapshot(group_id)
    return {
        "groupId": group_id,
        "name": project.name,
        "provider": project.tracker.provider,
        "workers": [
            _worker(obs, group_id, row.role, row.slot, row.worker, snapshot, now) for row in worker_rows(project)
        ],
        "queues": _queues(obs, group_id, project, snapshot, now),
        "health": _health(obs.history.last_health, group_id, now),
    }


def _worker(
    obs: Observatory, group_id: str, role: str, slot: int, worker: Any, snapshot: QueueSnapshot, now: float
) -> dict[str, Any]:
    issue_id = _number(worker.issue_id) if worker.active else None
    item = snapshot.find(issue_id) if issue_id is not None else None
    known = obs.history.issues.get((group_id, issue_id)) if issue_id is not None else None
    started = parse_ts(worker.start_time)
    grace = obs.state.health.grace_minutes * 60
    return {
        "role": role,
        "slot": slot,
        "active": worker.active,
        "issueId": issue_id,
        "issueTitle": item.title if item else (known.title if known else None),
        "issueUrl": item.url if item else None,
        "model": worker.model,
        "sessionId": worker.session_id,
        "startTime": worker.start_time,
        "elapsedSeconds": round(now - started) if worker.active and started is not None else None,
        "inGrace": bool(worker.active and started is not None and now - started < grace),
    }


def _number(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _queues(obs: Observatory, group_id: str, project: Project, snapshot: QueueSnapshot, now: float) -> dict[str, Any]:
    lists: dict[str, Any] | None = None
    workflow = project.effective_workflow()
    if snapshot.issues is not None:
        lists = {}
        for state in shown_queues(workflow):
            items = []
            for item in snapshot.issues.get(state, []):
                known = obs.history.issues.get((group_id, item.id))
                entry = {"id": item.id, "title": item.title, "url": item.url}
                if state == Label.REFINING:
                    entry["loopBrake"] = bool(known and known.braked)
                items.append(entry)
            lists[state] = items
    return {
        "labels": {state: workflow.label(state) for state in shown_queues(workflow)},
        "readAt": iso(snapshot.fetched_at),
        "ageSeconds": round(now - snapshot.fetched_at) if snapshot.fetched_at is not None else None,
        "error": snapshot.error,
        "errorAt": iso(snapshot.error_at),
        "trackerReads": snapshot.reads,
        "counts": {label: len(items) for label, items in lists.items()} if lists is not None else None,
        "issues": lists,
    }


def _health(record: dict[str, Any] | None, group_id: str | None, now: float) -> dict[str, Any] | None:
    if record is None:
        return None
    fixed = [entry for entry in record.get("fixed") or [] if isinstance(entry, dict)]
    if group_id is not None:
        fixed = [entry for entry in fixed if entry.get("groupId") == group_id]
    at = parse_ts(record.get("ts"))
    return {
        "ts": record.get("ts"),
        "ageSeconds": round(now - at) if at is not None else None,
        "issuesFound": record.get("issuesFound"),
        "fixesApplied": record.get("fixesApplied"),
        "autoFix": record.get("autoFix"),
        "fixed": fixed,
    }


# --- Timeline -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineFilter:
    project: str | None = None  # a group id or a project name
    role: str | None = None
    since: date | None = None
    until: date | None = None

    def keeps(self, issue: IssueHistory) -> bool:
        if self.project and self.project not in (issue.group_id, issue.project):
            return False
        if self.role and self.role not in issue.roles:
            return False
        days = [datetime.fromtimestamp(at, UTC).date() for at in issue.move_times]
        if self.since and not any(day >= self.since for day in days):
            return False
        return not (self.until and not any(day <= self.until for day in days))


def timeline_view(obs: Observatory, chosen: TimelineFilter, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    issues = [issue for issue in obs.history.issues.values() if issue.move_times and chosen.keeps(issue)]
    issues.sort(key=lambda issue: issue.last_move_at or 0.0, reverse=True)
    return {
        "matching": len(issues),
        "shown": min(len(issues), TIMELINE_LIMIT),
        "projects": sorted({issue.project for issue in obs.history.issues.values()}),
        "issues": [_issue_timeline(issue, now) for issue in issues[:TIMELINE_LIMIT]],
    }


def _issue_timeline(issue: IssueHistory, now: float) -> dict[str, Any]:
    stages = issue.stages()
    total = sum(stage.seconds(now) for stage in stages) or 1.0
    return {
        "groupId": issue.group_id,
        "project": issue.project,
        "issue": issue.issue,
        "title": issue.title,
        "roles": sorted(issue.roles),
        "done": issue.done_at is not None,
        "cycleSeconds": issue.cycle_seconds,
        "qaFails": issue.qa_fails,
        "stages": [
            {
                "label": stage.label,
                "stage": stage.name,
                "start": iso(stage.start),
                "end": iso(stage.end),
                "seconds": round(stage.seconds(now), 3),
                "share": stage.seconds(now) / total,
            }
            for stage in stages
        ],
    }


# --- Analytics and cost ---------------------------------------------------------------------------


def analytics_view(obs: Observatory) -> dict[str, Any]:
    rows = [_day_row(day, project, stats) for (day, project), stats in sorted(obs.history.days.items())]
    totals: dict[str, DayStats] = {}
    for (day, _), stats in obs.history.days.items():
        into = totals.setdefault(day, DayStats())
        into.done += stats.done
        into.qa_pass += stats.qa_pass
        into.qa_fail += stats.qa_fail
        into.qa_refine += stats.qa_refine
        into.loop_brakes += stats.loop_brakes
        into.cycle_seconds.extend(stats.cycle_seconds)
    return {
        "perDayAndProject": rows,
        "perDay": [_day_row(day, None, stats) for day, stats in sorted(totals.items())],
        "stageNames": STAGE_NAMES,
    }


def _day_row(day: str, project: str | None, stats: DayStats) -> dict[str, Any]:
    return {
        "day": day,
        "project": project,
        "done": stats.done,
        "qaPass": stats.qa_pass,
        "qaFail": stats.qa_fail,
        "qaRefine": stats.qa_refine,
        "qaFailRate": stats.qa_fail_rate,
        "loopBrakes": stats.loop_brakes,
        "medianCycleSeconds": stats.median_cycle_seconds,
    }


def cost_view(obs: Observatory) -> dict[str, Any]:
    usage = obs.history.usage
    recorded = usage.total.tasks > 0
    tasks = [issue for issue in obs.history.issues.values() if issue.usage is not None]
    top = heapq.nlargest(TOP_TASKS, tasks, key=lambda issue: _costliest(issue.usage))
    return {
        "recorded": recorded,
        "note": None if recorded else NO_USAGE_NOTE,
        "total": usage.total.as_json(),
        "byRole": _table(usage.by_role),
        "byModel": _table(usage.by_model),
        "byProject": _table(usage.by_project),
        "byDay": [{"key": day, **totals.as_json()} for day, totals in sorted(usage.by_day.items())],
        "byTask": [
            {"groupId": i.group_id, "project": i.project, "issue": i.issue, **i.usage.as_json()}
            for i in top
            if i.usage is not None
        ],
        "tasksWithUsage": len(tasks),
    }


def _costliest(totals: UsageTotals | None) -> tuple[float, int]:
    return (totals.cost, totals.input + totals.output) if totals is not None else (0.0, 0)


def _table(table: dict[str, UsageTotals]) -> list[dict[str, Any]]:
    ordered = sorted(table.items(), key=lambda kv: _costliest(kv[1]), reverse=True)
    return [{"key": key, **totals.as_json()} for key, totals in ordered]


# --- Triage ---------------------------------------------------------------------------------------


def triage_view(obs: Observatory) -> dict[str, Any]:
    waiting = []
    errors = []
    for group_id, project in obs.state.projects.items():
        snapshot = obs.board.snapshot(group_id)
        if snapshot.error is not None:
            errors.append({"groupId": group_id, "project": project.name, "error": snapshot.error})
        workflow = project.effective_workflow()
        for label in workflow.waiting_for_a_person():
            for item in (snapshot.issues or {}).get(label, []):
                known = obs.history.issues.get((group_id, item.id))
                waiting.append(
                    {
                        "groupId": group_id,
                        "project": project.name,
                        "issue": item.id,
                        "title": item.title,
                        "url": item.url,
                        "label": workflow.label(label),
                        "sendTo": workflow.label(workflow.next(label, Event.HUMAN)),
                        "reason": _reason(label, known, item.description),
                        "loopBrake": bool(known and known.braked),
                    }
                )
    return {"issues": waiting, "errors": errors}


def _reason(label: str, known: IssueHistory | None, description: str) -> str:
    if label == Label.PLANNING:
        return description or "Planned: waiting for a person to approve it."
    if label != Label.REFINING:
        return description or f"On {label}: waiting for a person."
    if known is None:
        return "Moved to Refining outside the audit log (no QA feedback recorded)."
    if known.braked:
        return (
            f"Loop brake: it failed QA {known.qa_fails} times, so it went to Refining instead of To Improve. "
            f"Last QA feedback: {known.last_feedback or '(none)'}"
        )
    return f"QA asked for a decision: {known.last_feedback or '(no summary given)'}"
