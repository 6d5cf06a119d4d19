"""``devclaw workflow [GROUP_ID]``: a project's effective workflow (or the built-in one) as a Markdown table,
the same text docs/WORKFLOW.md embeds (tests/test_workflow_doc.py keeps the two equal)."""

from __future__ import annotations

import argparse
from typing import Any

from devclaw.inputs import normalize_group_id
from devclaw.workflow import DEFAULT, REVIEW_POLICIES, Workflow, with_review
from devclaw.workspace import Workspace


def register(sub: Any) -> None:
    shown = sub.add_parser("workflow", help="a project's workflow (states, labels, moves) as a Markdown table")
    shown.add_argument("group_id", nargs="?", metavar="GROUP_ID", help="this project's (default: the built-in one)")
    shown.add_argument("--review", choices=REVIEW_POLICIES, help="the built-in workflow with this review stage")
    shown.set_defaults(handler=run_workflow)


def run_workflow(ws: Workspace, args: argparse.Namespace) -> int:
    if args.group_id is not None:
        workflow = ws.require_existing().store.read().project(normalize_group_id(args.group_id)).effective_workflow()
    else:
        workflow = with_review(DEFAULT, args.review or "skip")
    print(markdown_table(workflow))
    return 0


def markdown_table(workflow: Workflow) -> str:
    """One row per state, in precedence order: its label and colour, who moves an issue on, and each move."""
    rows = ["| state | label | colour | who moves it on | moves (event → state) |", "|---|---|---|---|---|"]
    for state, spec in workflow.states.items():
        moves = workflow.transitions.get(state, {})
        shown = "; ".join(f"`{event}` → {target}" for event, target in moves.items()) or "none (final)"
        rows.append(f"| {state} | {spec.label} | `{spec.colour}` | {_who(workflow, state)} | {shown} |")
    return "\n".join(rows)


def _who(workflow: Workflow, state: str) -> str:
    starts = [name for name, spec in workflow.roles.items() if state in spec.start_labels]
    active = workflow.active_role(state)
    if active is not None:
        return f"a {active} worker, working on it"
    if starts:
        return " or ".join(starts) + " (picks it up)"
    if state in workflow.waiting_for_a_person():
        return "a person"
    if not workflow.transitions.get(state):
        return "nobody"
    return "the tick (the change's review)" if workflow.review == "human" else "devclaw"
