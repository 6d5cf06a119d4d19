"""``devclaw demo``: the whole pipeline on the embedded tracker, in a fresh workspace, in seconds."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from devclaw.commands.board import render
from devclaw.commands.issue import link_change
from devclaw.errors import DevclawError, InputError
from devclaw.registry import register_project
from devclaw.state import ChangeSettings, Project
from devclaw.tools import call_tool
from devclaw.tools.queue import collect_queues
from devclaw.workflow import Label
from devclaw.workspace import Workspace

GROUP = "-1001234567890"
DEV_SESSION = "agent:devclaw:subagent:7f3c2a10-dev"
QA_SESSION = "agent:devclaw:subagent:91be44d2-qa"
ISSUES = (
    ("Add login page", "A login form with email and password, posting to /api/login."),
    ("Fix typo in footer", "The footer says 'Copyrigth'."),
    ("Redesign session storage", "Move sessions from cookies to the database; a system-wide change."),
)


def register(sub: Any) -> None:
    demo = sub.add_parser("demo", help="play the whole pipeline on the embedded tracker")
    demo.set_defaults(handler=run_demo)
    # --workspace (before or after `demo`) picks the folder: it must be empty or new. Default: a new
    # temporary folder, removed again if the demo fails.


def run_demo(ws: Workspace, args: argparse.Namespace) -> int:
    if args.workspace:
        root = demo_folder(Path(args.workspace))
        Demo(Workspace(root)).play()
        return 0
    root = Path(tempfile.mkdtemp(prefix="devclaw-demo-"))
    try:
        Demo(Workspace(root)).play()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)  # ours: nothing of the user's is in it
        raise
    return 0


def demo_folder(chosen: Path) -> Path:
    """The folder the demo may play in: new, or existing and empty. Never a real workspace."""
    try:
        root = chosen.expanduser().resolve()
    except RuntimeError:
        raise InputError(f"Cannot expand {chosen}") from None
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise InputError(
            f"{root} is not empty: the demo registers its own project and issues and would mix them with "
            f"what is there. Give it a new or empty folder, e.g. `devclaw demo --workspace /tmp/try-devclaw`, "
            f"or no --workspace for a temporary one"
        )
    return root


class Demo:
    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.sessions = 0

    def say(self, text: str) -> None:
        print(text, flush=True)

    def call(self, tool: str, **params: Any) -> dict[str, Any]:
        result = call_tool(self.ws, tool, {"projectGroupId": GROUP, **params} if tool != "session_health" else params)
        if "announcement" in result:
            self.say(f"    [group] {result['announcement']}")
        return result

    def play(self) -> None:
        ws = self.ws
        self.say(f"devclaw demo in {ws.root}\n")
        ws.create()
        # changes.required: DEV done needs a merged merge request, as on GitLab and GitHub by default.
        project = Project(name="webapp", group_name="Dev - Webapp", changes=ChangeSettings(required=True))
        register_project(ws, GROUP, project)
        tracker = ws.tracker(ws.store.read().project(GROUP))
        for title, description in ISSUES:
            tracker.create_issue(title, description, (tracker.workflow.label(Label.TO_DO),))
        self.say(
            "1. Project 'webapp' registered on the embedded tracker, with 3 issues in To Do; DEV done needs a "
            "merged merge request (changes.required)."
        )
        self.first_issue_round_trip()
        self.refine()
        self.zombie()
        self.say("\nThe board now:\n")
        projects = ws.store.read().projects
        self.say("\n\n".join(render(row, ws, projects.get(row.group_id)) for row in collect_queues(ws)))
        self.say(f"\nFiles:\n  {ws.store.path}\n  {ws.audit.path}\n  {ws.memory / 'tracker.sqlite3'}")
        self.say(f"\nTry:  jq -c 'select(.event==\"task_pickup\")' {ws.audit.path}")
        self.say(f"      devclaw --workspace {ws.root} audit --issue 1")

    def first_issue_round_trip(self) -> None:
        self.say("\n2. DEV picks up #1; a new session is spawned and confirmed:")
        pickup = self.call("task_pickup", issueId=1, role="dev")
        self.say(f"    model {pickup['model']} ({pickup['modelReason']}); {pickup['labelTransition']}")
        self.call("task_pickup_confirm", role="dev", sessionId=DEV_SESSION)
        try:
            self.call("task_pickup", issueId=2, role="dev")
        except DevclawError as exc:
            self.say(f"    a second DEV pickup is refused: {exc.message}")
        try:
            self.call("task_complete", role="dev", result="done", summary="Login form with validation")
        except DevclawError as exc:
            self.say(f"    DEV done before a merge request is refused: {exc.message}")
        self.merged(1, "feature/login", 1)
        done = self.call("task_complete", role="dev", result="done", summary="Login form with validation")
        self.say(f"    accepted with changeUrl {done['changeUrl']} ({done['changeState']})")
        self.say("\n3. QA tests #1 (its task names the merge request) and finds a bug:")
        qa = self.call("task_pickup", issueId=1, role="qa")
        self.say("    " + next(line for line in qa["taskMessage"].splitlines() if line.startswith("Change:")))
        self.call("task_pickup_confirm", role="qa", sessionId=QA_SESSION)
        fail = self.call("task_complete", role="qa", result="fail", summary="Redirect after login is broken")
        self.say(f"    devFixInstructions: {fail['devFixInstructions']}")
        self.say("\n4. DEV fixes #1 in the same session; QA passes it:")
        again = self.call("task_pickup", issueId=1, role="dev")
        self.say(f"    sessionAction {again['sessionAction']} -> {again['sessionId']}")
        self.merged(1, "fix/login-redirect", 2)
        self.call("task_complete", role="dev", result="done", summary="Redirect fixed")
        self.call("task_pickup", issueId=1, role="qa")
        self.call("task_complete", role="qa", result="pass")

    def merged(self, issue: int, branch: str, number: int) -> None:
        """The merge request DEV opened and got merged, linked as ``devclaw issue link-mr`` does."""
        url = f"https://git.example/webapp/-/merge_requests/{number}"
        link_change(self.ws, GROUP, issue, url, state="merged", source_branch=branch, author="dev-bot")
        self.say(f"    $ devclaw issue link-mr {GROUP} {issue} {url} --state merged --source-branch {branch}")

    def pickup(self, issue: int, role: str) -> dict[str, Any]:
        """A pickup the way the orchestrator does it: a spawn is followed by its confirm."""
        result = self.call("task_pickup", issueId=issue, role=role)
        if result["sessionAction"] == "spawn":
            self.sessions += 1
            self.call("task_pickup_confirm", role=role, sessionId=f"agent:devclaw:subagent:{self.sessions:08x}-{role}")
        return result

    def refine(self) -> None:
        self.say("\n5. #2 goes through DEV; QA needs a human decision:")
        self.pickup(2, "dev")
        self.merged(2, "fix/footer-typo", 3)
        self.call("task_complete", role="dev", result="done", summary="Typo fixed")
        self.call("task_pickup", issueId=2, role="qa")
        self.call("task_complete", role="qa", result="refine", summary="Unclear whether the year should be dynamic")

    def zombie(self) -> None:
        self.say("\n6. DEV picks up #3, then its session dies:")
        self.pickup(3, "dev")
        later = replace(self.ws, clock=lambda: self.ws.clock() + timedelta(minutes=10))
        self.say("    ten minutes later, sessions_list shows only the QA session; session_health repairs it:")
        health = call_tool(later, "session_health", {"activeSessions": [QA_SESSION], "autoFix": True})
        for issue in health["issues"]:
            fixed = "fixed" if issue.get("fixed") else "not fixed"
            reverted = ", label reverted to To Do" if issue.get("labelReverted") else ""
            self.say(f"    {issue['severity']} {issue['type']}: {issue['message']} ({fixed}{reverted})")
