"""The change gate: a result the workflow table marks ``change_gated`` (DEV "done", QA "pass") needs the
issue's merge request or pull request, as the project's ``changes`` settings say: so no issue reaches Done
through devclaw with an unmerged change where merging is required.

``gate_change`` is a read inside the completion's decision: it refuses (``ChangeRequiredError``, a ``WorkflowError``, before anything
is written) or returns the change the result names. With ``changes.required`` false it makes no request
and names no change. Which change counts, when an issue has several: a merged one, else an open ready one,
else an open draft, else a closed one; the newest of its kind.
"""

from __future__ import annotations

from devclaw.errors import ChangeRequiredError
from devclaw.state import Project
from devclaw.trackers.base import ChangeRequest, Issue, Tracker
from devclaw.workflow import RoleSpec

_PREFERENCE = ("merged", "ready", "draft", "closed")


def chosen_change(changes: tuple[ChangeRequest, ...]) -> ChangeRequest | None:
    """The change that speaks for the issue (see the module docstring); None when there is none."""

    def kind(change: ChangeRequest) -> str:
        if change.state == "open":
            return "draft" if change.draft else "ready"
        return change.state

    ranked = sorted(changes, key=lambda change: _PREFERENCE.index(kind(change)))
    best = [change for change in ranked if kind(change) == kind(ranked[0])] if ranked else []
    return best[-1] if best else None


def gate_change(
    tracker: Tracker, project: Project, group_id: str, issue: Issue, spec: RoleSpec, result: str
) -> ChangeRequest | None:
    """The issue's change when the project requires one; refuses ``spec``'s ``result`` without it, with a
    closed one, or with an unmerged one where it must be merged (``Project.must_be_merged``). Costs
    ``tracker.changes_for`` when required, else nothing."""
    if not project.changes_required:
        return None
    change = chosen_change(tracker.changes_for(issue.id))
    next_step = _NextStep(tracker, project, group_id, issue)
    if change is None:
        where = "closes or mentions it" if next_step.url else "is linked to it"
        found = f"no {tracker.change_noun} {where}"
        raise ChangeRequiredError(_refusal(issue, project, spec, result, found, next_step.open()))
    if change.state == "closed" or (project.must_be_merged(spec) and change.state != "merged"):
        found = f"its {tracker.change_noun} {change.url} is {_describe(change)}, not merged"
        step = next_step.reopen(change) if change.state == "closed" else next_step.merge(change)
        raise ChangeRequiredError(_refusal(issue, project, spec, result, found, step))
    return change


def _refusal(issue: Issue, project: Project, spec: RoleSpec, result: str, found: str, step: str) -> str:
    return (
        f'{spec.title} "{result}" refused for issue #{issue.id} on {project.name}: {found}. Next: {step}; then '
        f"call task_complete again. Nothing was changed (the issue stays on {spec.active_label}, the worker "
        "stays active)"
    )


class _NextStep:
    """The exact next step, with the project's base branch and its host's page for a new change (the
    embedded tracker has none: its changes are linked with ``devclaw issue link-mr``)."""

    def __init__(self, tracker: Tracker, project: Project, group_id: str, issue: Issue) -> None:
        self.noun, self.base, self.group_id, self.issue_id = (
            tracker.change_noun,
            project.base_branch,
            group_id,
            issue.id,
        )
        self.url = tracker.new_change_url(self.base)

    def open(self) -> str:
        if self.url:
            return (
                f'push the work to a branch, open a {self.noun} into "{self.base}" that says "Closes '
                f'#{self.issue_id}" ({self.url}) and get it merged'
            )
        return (
            f'open a {self.noun} into "{self.base}" where the code is hosted, get it merged and link it: '
            f"devclaw issue link-mr {self.group_id} {self.issue_id} URL --target-branch {self.base} --state merged"
        )

    def reopen(self, change: ChangeRequest) -> str:
        return f"reopen {change.url} and get it merged, or " + self.open()

    def merge(self, change: ChangeRequest) -> str:
        step = f'get it merged into "{change.target_branch or self.base}"'
        if not self.url:
            step += (
                f", then record that: devclaw issue link-mr {self.group_id} {self.issue_id} {change.url} --state merged"
            )
        return step


def _describe(change: ChangeRequest) -> str:
    words = [change.state + (" (draft)" if change.draft else "")]
    if change.state == "open":
        words.append(f"{change.approvals} approval{'s' if change.approvals != 1 else ''}")
        if change.mergeable is False:
            words.append("cannot be merged as it is (conflicts)")
    return ", ".join(words)
