"""``devclaw project add|list``: register a project and make sure its tracker has the workflow labels."""

from __future__ import annotations

import argparse
from typing import Any

from devclaw.cli import print_json
from devclaw.registry import register_project
from devclaw.state import Project, TrackerConfig
from devclaw.workspace import Workspace


def register(sub: Any) -> None:
    project = sub.add_parser("project", help="register and list projects").add_subparsers(
        dest="project_command", metavar="ACTION", required=True
    )
    add = project.add_parser("add", help="register a project (or update its configuration)")
    add.add_argument("group_id", metavar="GROUP_ID", help="the project's Telegram group id, e.g. -1001234567890")
    add.add_argument("--name", required=True)
    add.add_argument("--provider", choices=("local", "gitlab", "github"), default="local")
    add.add_argument("--path", help='tracker path: "group/project", "owner/name" or a local name')
    add.add_argument("--repo", default="", help="the project's git checkout")
    add.add_argument("--base-url", help="tracker URL (self-hosted GitLab, GitHub Enterprise API root)")
    add.add_argument("--token-env", help="environment variable holding the token")
    add.add_argument("--group-name", default="", help="the Telegram group's title")
    add.add_argument("--base-branch", default="main")
    add.add_argument("--deploy-branch", default="main")
    add.add_argument("--deploy-url", default="")
    add.set_defaults(handler=run_add)
    listing = project.add_parser("list", help="the registered projects as JSON")
    listing.set_defaults(handler=run_list)


def run_add(ws: Workspace, args: argparse.Namespace) -> int:
    tracker_config = TrackerConfig(
        provider=args.provider, path=args.path, base_url=args.base_url, token_env=args.token_env
    )
    project = Project(
        name=args.name,
        group_name=args.group_name,
        repo=args.repo,
        base_branch=args.base_branch,
        deploy_branch=args.deploy_branch,
        deploy_url=args.deploy_url,
        tracker=tracker_config,
    )
    print_json({"success": True, **register_project(ws, args.group_id, project)})
    return 0


def run_list(ws: Workspace, args: argparse.Namespace) -> int:
    state = ws.store.read()
    print_json({gid: p.model_dump(mode="json", by_alias=True) for gid, p in state.projects.items()})
    return 0
