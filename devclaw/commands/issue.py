"""``devclaw issue create|show|label|list|link-mr``: the people's side of the tracker, on every provider
(``link-mr`` on the embedded tracker, whose merge requests live elsewhere)."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from pydantic import BaseModel

from devclaw.cli import print_json
from devclaw.commands.table import Table
from devclaw.engine import Move, Plan, Record, mutate
from devclaw.errors import InputError
from devclaw.inputs import normalize_group_id
from devclaw.state import Project, ProjectsFile
from devclaw.trackers import Tracker
from devclaw.trackers.base import CHANGE_STATES, ChangeRequest
from devclaw.trackers.local import LocalTracker
from devclaw.workflow import Event, State
from devclaw.workspace import Workspace


def register(sub: Any) -> None:
    issue = sub.add_parser("issue", help="create, show, move and list issues").add_subparsers(
        dest="issue_command", metavar="ACTION", required=True
    )
    create = issue.add_parser("create", help="create an issue; prints it as JSON")
    create.add_argument("group_id", metavar="GROUP_ID", help=_GROUP_HELP)
    create.add_argument("--title", required=True, help="the issue's title (one line)")
    create.add_argument("--description", default="", help="the issue's text")
    create.add_argument("--label", help="initial workflow label (default Planning: a human moves it to To Do)")
    create.set_defaults(handler=run_create, json_output=True)
    show = issue.add_parser("show", help="one issue as JSON")
    show.add_argument("group_id", metavar="GROUP_ID", help=_GROUP_HELP)
    show.add_argument("issue_id", metavar="ID", type=int, help="the issue number")
    show.set_defaults(handler=run_show, json_output=True)
    label = issue.add_parser("label", help="move an issue to a workflow label (Planning/Refining -> To Do)")
    label.add_argument("group_id", metavar="GROUP_ID", help=_GROUP_HELP)
    label.add_argument("issue_id", metavar="ID", type=int, help="the issue number")
    label.add_argument("label", metavar="LABEL", help="the workflow label to move it to, e.g. 'To Do'")
    label.add_argument("--force", action="store_true", help="allow a move the workflow does not have")
    label.set_defaults(handler=run_label, json_output=True)
    listing = issue.add_parser("list", help="open issues, oldest first, as a table (or JSON)")
    listing.add_argument("group_id", metavar="GROUP_ID", help=_GROUP_HELP)
    listing.add_argument("--label", help="only issues with this workflow label")
    listing.add_argument("--json", action="store_true", help="print the issues as JSON")
    listing.set_defaults(handler=run_list)
    link = issue.add_parser(
        "link-mr", help="link a merge request to an issue of the embedded tracker (again: update it)"
    )
    link.add_argument("group_id", metavar="GROUP_ID", help=_GROUP_HELP)
    link.add_argument("issue_id", metavar="ID", type=int, help="the issue number")
    link.add_argument("url", metavar="URL", help="the merge request's http(s) URL")
    link.add_argument("--state", choices=CHANGE_STATES, default="open", help="its state (default open)")
    link.add_argument("--source-branch", default="", help="the branch it merges")
    link.add_argument("--target-branch", help="the branch it merges into (default: the project's base branch)")
    link.add_argument("--draft", action="store_true", help="it is a draft")
    link.add_argument("--author", default="", help="who opened it")
    link.set_defaults(handler=run_link_mr, json_output=True)


_GROUP_HELP = "the project's group id"


def _open(ws: Workspace, group_id: str, *, writing: bool = False) -> tuple[Project, Tracker]:
    if writing:
        ws.require_writable()
    else:
        ws.require_existing()
    project = ws.store.read().project(normalize_group_id(group_id))
    return project, ws.tracker(project)


def run_create(ws: Workspace, args: argparse.Namespace) -> int:
    title = " ".join(args.title.split())
    if not title:
        raise InputError("--title must not be empty")
    _, tracker = _open(ws, args.group_id, writing=True)
    workflow = tracker.workflow
    state = workflow.parse(args.label) if args.label else workflow.initial
    created = tracker.create_issue(title, args.description, (workflow.label(state),))
    if not args.label:
        ready = workflow.label(workflow.next(state, Event.HUMAN))
        print(
            f"devclaw: issue #{created.id} is on {workflow.label(state)}; when it is ready: "
            f"devclaw issue label {args.group_id.strip()} {created.id} '{ready}'",
            file=sys.stderr,
        )
    print_json(created.as_json())
    return 0


def run_show(ws: Workspace, args: argparse.Namespace) -> int:
    _, tracker = _open(ws, args.group_id)
    print_json(tracker.get_issue(args.issue_id).as_json())
    return 0


def run_label(ws: Workspace, args: argparse.Namespace) -> int:
    print_json(label_issue(ws, args.group_id, args.issue_id, args.label, force=args.force))
    return 0


def label_issue(
    ws: Workspace, group_id: str, issue_id: int, label: str | None, *, force: bool = False
) -> dict[str, Any]:
    """The human move (Planning/Refining -> To Do; anything else with ``force``): the one code path for
    ``devclaw issue label`` and every other front end that lets a person move an issue. ``label`` None: the
    person's move from where the issue is, as the project's workflow says. Returns the issue."""
    group_id = normalize_group_id(group_id)
    _, tracker = _open(ws, group_id, writing=True)
    target = tracker.workflow.parse(label) if label is not None else None
    decide = lambda state: decide_label(ws, state, group_id, issue_id, target, force)  # noqa: E731
    mutate(ws, group_id, decide)
    return ws.tracker(ws.store.read().project(group_id)).get_issue(issue_id).as_json()


class LabelResult(BaseModel):
    issue_id: int
    label_transition: str


def decide_label(
    ws: Workspace, state: ProjectsFile, group_id: str, issue_id: int, target: State | None, force: bool
) -> Plan[LabelResult]:
    project = state.project(group_id)
    tracker = ws.tracker(project)
    issue = tracker.get_issue(issue_id)
    if target is None:
        target = tracker.workflow.next(issue.label, Event.HUMAN)
    tracker.workflow.human_move(issue.label, target, force=force)
    if issue.label == target:  # already there (a retry whose first try landed): nothing to do, nothing to log
        return Plan(
            tool="issue_label",
            group_id=group_id,
            result=LabelResult(issue_id=issue.id, label_transition=f"{target} (already)"),
        )
    move = Move(issue, target)
    record = Record(
        "issue_label",
        {
            "project": project.name,
            "groupId": group_id,
            "issue": issue.id,
            "labelTransition": move.transition,
            "forced": force,
        },
    )
    result = LabelResult(issue_id=issue.id, label_transition=move.transition)
    return Plan(tool="issue_label", group_id=group_id, result=result, move=move, records=[record])


def run_list(ws: Workspace, args: argparse.Namespace) -> int:
    _, tracker = _open(ws, args.group_id)
    label = tracker.workflow.parse(args.label) if args.label else None
    issues = tracker.list_issues(label)
    if args.json:
        print_json([issue.as_json() for issue in issues])
        return 0
    if not issues:
        print("No open issues" + (f" on {tracker.workflow.label(label)}" if label else "") + ".")
        return 0
    table = Table(("id", "label", "title"))
    for issue in issues:
        table.add(f"#{issue.id}", tracker.workflow.label(issue.label) if issue.label else "-", issue.title)
    print(table.render())
    return 0


# A branch name as git allows it, loosely: no spaces or control characters, no "..", not starting with "-".
_BRANCH = re.compile(r"^(?!-)(?!.*\.\.)[^\s\x00-\x1f\x7f~^:?*\[\\]{1,255}$")
_URL = re.compile(r"^https?://[^\s/@]+(/\S*)?$")


def run_link_mr(ws: Workspace, args: argparse.Namespace) -> int:
    linked = link_change(
        ws, args.group_id, args.issue_id, args.url, state=args.state, source_branch=args.source_branch,
        target_branch=args.target_branch, draft=args.draft, author=args.author,
    )  # fmt: skip
    print_json({"success": True, "issueId": args.issue_id, "change": linked.as_json()})
    return 0


def link_change(
    ws: Workspace,
    group_id: str,
    issue_id: int,
    url: str,
    *,
    state: str = "open",
    source_branch: str = "",
    target_branch: str | None = None,
    draft: bool = False,
    author: str = "",
) -> ChangeRequest:
    """Link a merge request to an issue of the embedded tracker (``devclaw issue link-mr``); the same URL
    again updates it. Every input is checked before the one write: a bad one changes nothing."""
    project, tracker = _open(ws, group_id, writing=True)
    if not isinstance(tracker, LocalTracker):
        raise InputError(
            f"link-mr is for the embedded tracker; {project.name} is on {project.tracker.provider}, where devclaw "
            f'finds the {tracker.change_noun} by itself: say "Closes #{issue_id}" in its description'
        )
    if state not in CHANGE_STATES:
        raise InputError(f"--state {state!r} is not one of {', '.join(CHANGE_STATES)}; nothing was changed")
    change = ChangeRequest(
        number=0,
        url=_checked(url, _URL, "URL", "an http(s) URL without credentials, e.g. https://git.example/app/pull/3"),
        state=state,  # checked above
        draft=draft,
        author=" ".join(author.split())[:100],
        source_branch=_checked(source_branch, _BRANCH, "--source-branch", "a branch name") if source_branch else "",
        target_branch=_checked(target_branch or project.base_branch, _BRANCH, "--target-branch", "a branch name"),
    )
    return tracker.link_change(issue_id, change)


def _checked(value: str, pattern: re.Pattern[str], name: str, wanted: str) -> str:
    if len(value) > 2000 or not pattern.match(value):
        raise InputError(f"{name} {value[:200]!r} is not {wanted}; nothing was changed")
    return value
