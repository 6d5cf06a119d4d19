"""``devclaw project add|edit|remove|list``: register a project (its tracker gets the workflow labels),
change only the fields given, remove one that has no work in progress."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import json5
from pydantic import ValidationError

from devclaw.cli import print_json, print_warning
from devclaw.commands.doctor import _git
from devclaw.commands.table import Table
from devclaw.errors import InputError
from devclaw.inputs import normalize_group_id
from devclaw.registry import register_project, remove_project
from devclaw.state import ChangeSettings, Project, TrackerConfig, WorkflowSettings, describe_invalid
from devclaw.workflow import REVIEW_POLICIES, Role
from devclaw.workspace import Workspace

# option -> (Project field, help); tracker options are kept apart because they live in `tracker`.
_PROJECT_OPTIONS = {
    "name": ("name", "the project's name (in announcements and the audit log)"),
    "group_name": ("group_name", "the Telegram group's title"),
    "repo": ("repo", "the project's git checkout (stored as an absolute path)"),
    "base_branch": ("base_branch", "the branch DEV work starts from (default main)"),
    "deploy_branch": ("deploy_branch", "the branch that is deployed (default main)"),
    "deploy_url": ("deploy_url", "where the deployed project can be seen"),
}
_TRACKER_OPTIONS = {
    "path": ("path", 'tracker path: "group/project", "owner/name", or the embedded tracker\'s name'),
    "base_url": ("base_url", "tracker URL (self-hosted GitLab, GitHub Enterprise API root)"),
    "token_env": ("token_env", "environment variable holding the token"),
}
# option -> (ChangeSettings field, help): what DEV "done" needs (see docs/CONFIGURATION.md).
_CHANGE_OPTIONS = {
    "changes_required": ("required", "DEV done needs a merge/pull request for the issue "
                                     "(default: yes on gitlab/github, no on local)"),
    "must_be_merged": ("must_be_merged", "that merge/pull request must be merged (default yes)"),
}  # fmt: skip


def register(sub: Any) -> None:
    project = sub.add_parser("project", help="register, change, remove and list projects").add_subparsers(
        dest="project_command", metavar="ACTION", required=True
    )
    add = project.add_parser("add", help="register a new project; prints it as JSON")
    _options(add, adding=True)
    add.set_defaults(handler=run_add, json_output=True)
    edit = project.add_parser("edit", help="change only the given fields of a project; prints it as JSON")
    _options(edit, adding=False)
    edit.set_defaults(handler=run_edit, json_output=True)
    remove = project.add_parser("remove", help="unregister a project (its tracker and issues are kept)")
    remove.add_argument("group_id", metavar="GROUP_ID", help="the project's group id")
    remove.add_argument("--force", action="store_true", help="remove it even while a worker is active")
    remove.set_defaults(handler=run_remove, json_output=True)
    listing = project.add_parser("list", help="the registered projects, as a table (or JSON)")
    listing.add_argument("--json", action="store_true", help="print every project's full entry as JSON")
    listing.set_defaults(handler=run_list)


def _options(parser: argparse.ArgumentParser, *, adding: bool) -> None:
    parser.add_argument("group_id", metavar="GROUP_ID", help="the project's Telegram group id, e.g. -1001234567890")
    parser.add_argument("--name", required=adding, help=_PROJECT_OPTIONS["name"][1])
    parser.add_argument("--provider", choices=("local", "gitlab", "github"),
                        help="the tracker: local (embedded, the default), gitlab or github")  # fmt: skip
    for option, (_, text) in {**_PROJECT_OPTIONS, **_TRACKER_OPTIONS}.items():
        if option != "name":
            parser.add_argument("--" + option.replace("_", "-"), dest=option, help=text)
    for option, (_, text) in _CHANGE_OPTIONS.items():
        flag = option.replace("_", "-")
        parser.add_argument("--" + flag, dest=option, action=argparse.BooleanOptionalAction, default=None, help=text)
    parser.add_argument("--review", dest="review_policy", choices=REVIEW_POLICIES,
                        help="the review stage between DEV done and QA: skip (none, the default), human (people "
                             "review the merge/pull request), agent (a reviewer worker); see docs/WORKFLOW.md")  # fmt: skip
    parser.add_argument("--review-merge", dest="review_merge", action=argparse.BooleanOptionalAction, default=None,
                        help="with --review human: devclaw merges an approved change (default: a person does)")  # fmt: skip
    parser.add_argument("--workflow", dest="workflow_file", metavar="FILE",
                        help="a JSON file with the project's own states and moves (docs/WORKFLOW.md)")  # fmt: skip


def run_add(ws: Workspace, args: argparse.Namespace) -> int:
    group_id = normalize_group_id(args.group_id)
    fields = _given(args)
    project = _validated(
        {
            **fields["project"],
            "tracker": TrackerConfig(**fields["tracker"]).model_dump(),
            "changes": ChangeSettings(**fields["changes"]).model_dump(),
            "review": fields["review"],
            **({"workflow": fields["workflow"]} if "workflow" in fields else {}),
        }
    )
    ws.create().require_writable()
    print_json({"success": True, "workspace": str(ws.root), **register_project(ws, group_id, project)})
    return 0


def run_edit(ws: Workspace, args: argparse.Namespace) -> int:
    group_id = normalize_group_id(args.group_id)
    fields = _given(args)
    if not any(fields.values()):
        raise InputError("Nothing to change: give at least one option, e.g. --repo DIR (see `devclaw project edit -h`)")
    ws.require_writable()
    current = ws.store.read().project(group_id)
    tracker = current.tracker.model_copy(update=fields["tracker"])
    if tracker.provider != current.tracker.provider and "path" not in fields["tracker"]:
        tracker.path = None  # the old path named a project on another tracker
    changes = current.changes.model_copy(update=fields["changes"])
    data = current.model_copy(update={**fields["project"], "tracker": tracker, "changes": changes}).model_dump()
    data["review"] = {**data["review"], **fields["review"]}
    if "workflow" in fields:
        data["workflow"] = fields["workflow"]
    project = _validated(data)
    busy = [role for role, _, worker in current.every_worker() if worker.active and role not in project.roles]
    if busy:
        raise InputError(
            f"A {busy[0]} worker of {current.name} is active, and the new review policy has no {busy[0]} role: "
            "let it finish (or free it with session_health) before changing the policy"
        )
    if current.tracker.identity() == project.tracker.identity():
        _check_nothing_stranded(ws, group_id, current, project)
    print_json({"success": True, **register_project(ws, group_id, project, update=True)})
    return 0


def _check_nothing_stranded(ws: Workspace, group_id: str, current: Project, new: Project) -> None:
    """Refuse a workflow change that would leave issues on a label the project no longer owns (a state gone
    with its review stage, a renamed label): devclaw would stop seeing them. One listing per such state."""
    before, after = current.effective_workflow(), new.effective_workflow()
    dropped = [s for s in before.states if s not in after.states or after.label(s) != before.label(s)]
    tracker = ws.tracker(current)
    for state in dropped:
        found = [f"#{issue.id}" for issue in tracker.list_issues(state)]
        if found:
            which = f"Issue {found[0]} is" if len(found) == 1 else f"Issues {', '.join(found[:10])} are"
            raise InputError(
                f'{which} on "{before.label(state)}" in {current.name}, which this change takes out of the '
                f"workflow; nothing was changed. Let any worker on them finish, move them out first (devclaw "
                f"issue label {group_id} ISSUE Planning --force), make the change, then move them back"
            )


def _validated(data: dict[str, Any]) -> Project:
    try:
        return Project.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"Invalid project settings: {describe_invalid(exc)}") from None


def _workflow_file(text: str) -> dict[str, Any]:
    """``--workflow FILE``: the ``workflow`` section, read and checked as projects.json would be."""
    try:
        data = json5.loads(Path(text).expanduser().read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"--workflow {text}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise InputError(f"--workflow {text}: not JSON ({str(exc).replace('<string>', text)})") from None
    try:
        return WorkflowSettings.model_validate(data).model_dump(mode="json", by_alias=True)
    except ValidationError as exc:
        raise InputError(f"--workflow {text}: {describe_invalid(exc, prefix='workflow')}") from None


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line (None means not given), ``--repo`` made absolute."""
    project = {field: getattr(args, option) for option, (field, _) in _PROJECT_OPTIONS.items()
               if getattr(args, option) is not None}  # fmt: skip
    tracker = {field: getattr(args, option) for option, (field, _) in _TRACKER_OPTIONS.items()
               if getattr(args, option) is not None}  # fmt: skip
    changes = {field: getattr(args, option) for option, (field, _) in _CHANGE_OPTIONS.items()
               if getattr(args, option) is not None}  # fmt: skip
    review: dict[str, Any] = {}
    if args.review_policy is not None:
        review["policy"] = args.review_policy
    if args.review_merge is not None:
        review["merge"] = args.review_merge
    if args.provider is not None:
        tracker["provider"] = args.provider
    if "name" in project and not project["name"].strip():
        raise InputError("--name must not be empty")
    if project.get("repo"):
        project["repo"] = absolute_repo(project["repo"])
    given: dict[str, Any] = {"project": project, "tracker": tracker, "changes": changes, "review": review}
    if args.workflow_file is not None:
        given["workflow"] = _workflow_file(args.workflow_file)
    return given


def absolute_repo(text: str) -> str:
    """``--repo`` as it must be stored: expanded and absolute (the gateway runs in another folder).
    A folder that does not exist, or is not a git checkout, is only a warning: it may be cloned later."""
    try:
        expanded = Path(text).expanduser()
    except RuntimeError:  # "~someone" with no such user, or no home directory at all
        user = text[1:].split("/", 1)[0]
        raise InputError(f"--repo {text!r}: cannot expand ~{user} (no such user or home directory)") from None
    path = Path(os.path.normpath(expanded.absolute()))
    if not path.is_dir():
        print_warning(f"{path} does not exist (yet); devclaw pulls there after DEV work")
    elif _git(str(path), "rev-parse", "--is-inside-work-tree") != "true":
        print_warning(f"{path} is not a git checkout; devclaw pulls there after DEV work")
    return str(path)


def run_remove(ws: Workspace, args: argparse.Namespace) -> int:
    ws.require_writable()
    print_json(remove_project(ws, normalize_group_id(args.group_id), force=args.force))
    return 0


def run_list(ws: Workspace, args: argparse.Namespace) -> int:
    state = ws.require_existing().store.read()
    if args.json:
        print_json({gid: p.model_dump(mode="json", by_alias=True) for gid, p in state.projects.items()})
        return 0
    if not state.projects:
        print(f"No projects in {ws.store.path}. Register one with: devclaw project add GROUP_ID --name NAME")
        return 0
    table = Table(("group id", "name", "tracker", "repo", "DEV", "QA"))
    for gid, p in state.projects.items():
        tracker = f"{p.tracker.provider}:{p.tracker.path or p.name}"
        table.add(gid, p.name, tracker, p.repo or "-", _worker_cell(p, "dev"), _worker_cell(p, "qa"))
    print(table.render())
    return 0


def _worker_cell(project: Project, role: Role) -> str:
    worker = project.worker(role)
    return f"#{worker.issue_id}" if worker.active else "idle"
