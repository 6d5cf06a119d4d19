"""``devclaw issue create|show|label|list``: the people's side of the tracker, on every provider."""

from __future__ import annotations

import argparse
from typing import Any

from devclaw.cli import print_json
from devclaw.state import Project
from devclaw.trackers import Tracker
from devclaw.workflow import current_label, human_move, parse_label
from devclaw.workspace import Workspace


def register(sub: Any) -> None:
    issue = sub.add_parser("issue", help="create, show, move and list issues").add_subparsers(
        dest="issue_command", metavar="ACTION", required=True
    )
    create = issue.add_parser("create", help="create an issue; prints it as JSON")
    create.add_argument("group_id", metavar="GROUP_ID")
    create.add_argument("--title", required=True)
    create.add_argument("--description", default="")
    create.add_argument("--label", help="initial workflow label (e.g. 'To Do')")
    create.set_defaults(handler=run_create)
    show = issue.add_parser("show", help="one issue as JSON")
    show.add_argument("group_id", metavar="GROUP_ID")
    show.add_argument("issue_id", metavar="ID", type=int)
    show.set_defaults(handler=run_show)
    label = issue.add_parser("label", help="move an issue to a workflow label (Planning/Refining -> To Do)")
    label.add_argument("group_id", metavar="GROUP_ID")
    label.add_argument("issue_id", metavar="ID", type=int)
    label.add_argument("label", metavar="LABEL")
    label.add_argument("--force", action="store_true", help="allow a move the workflow does not have")
    label.set_defaults(handler=run_label)
    listing = issue.add_parser("list", help="open issues as JSON, oldest first")
    listing.add_argument("group_id", metavar="GROUP_ID")
    listing.add_argument("--label", help="only issues with this workflow label")
    listing.set_defaults(handler=run_list)


def _open(ws: Workspace, group_id: str) -> tuple[Project, Tracker]:
    project = ws.store.read().project(group_id)
    return project, ws.tracker(project)


def run_create(ws: Workspace, args: argparse.Namespace) -> int:
    labels = (parse_label(args.label).value,) if args.label else ()
    _, tracker = _open(ws, args.group_id)
    print_json(tracker.create_issue(args.title, args.description, labels).as_json())
    return 0


def run_show(ws: Workspace, args: argparse.Namespace) -> int:
    _, tracker = _open(ws, args.group_id)
    print_json(tracker.get_issue(args.issue_id).as_json())
    return 0


def run_label(ws: Workspace, args: argparse.Namespace) -> int:
    print_json(label_issue(ws, args.group_id, args.issue_id, args.label, force=args.force))
    return 0


def label_issue(ws: Workspace, group_id: str, issue_id: int, label: str, *, force: bool = False) -> dict[str, Any]:
    """The human move (Planning/Refining -> To Do; anything else with ``force``): the one code path for
    ``devclaw issue label`` and every other front end that lets a person move an issue. Returns the issue."""
    target = parse_label(label)
    project, tracker = _open(ws, group_id)
    issue = tracker.get_issue(issue_id)
    human_move(current_label(issue.labels), target, force=force)
    moved = tracker.move_issue(issue, target)
    ws.audit.append(
        "issue_label",
        project=project.name,
        groupId=group_id,
        issue=issue.id,
        labelTransition=f"{issue.label or 'none'} → {target}",
        forced=force,
    )
    return moved.as_json()


def run_list(ws: Workspace, args: argparse.Namespace) -> int:
    _, tracker = _open(ws, args.group_id)
    label = parse_label(args.label) if args.label else None
    print_json([issue.as_json() for issue in tracker.list_issues(label)])
    return 0
