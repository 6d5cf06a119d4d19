"""The plugin publishes exactly what the Python models define: one source of truth for tools and schemas.

index.js is loaded by Node with a stand-in for the host's ``api`` (the host itself runs in tests/e2e);
its tools then run against a real ``devclaw serve``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devclaw.workspace import Workspace

from .conftest import GROUP, new_issue

REPO = Path(__file__).resolve().parents[1]
MANIFEST = json.loads((REPO / "openclaw.plugin.json").read_text())
PACKAGE = json.loads((REPO / "package.json").read_text())

# Registers the plugin with a recording api, builds every tool with a run context, then runs the calls
# given on argv[1] (JSON [[tool, params], ...]) and prints what the host would see. With `sessions`
# ({sessionKey: [message, ...]}) the api has a runtime whose getSessionMessages answers from it (an unknown
# key throws, as the host does).
NODE_HOST = """
import plugin from "./index.js";
const [calls, config, ctx, sessions] = JSON.parse(process.argv[1]);
const registered = [], services = [], warnings = [];
const runtime = sessions && { subagent: { async getSessionMessages({ sessionKey }) {
  if (!(sessionKey in sessions)) throw new Error(`no session ${sessionKey}`);
  return { messages: sessions[sessionKey] };
} } };
plugin.register({ pluginConfig: config, runtime, logger: { info() {}, warn: (m) => warnings.push(m), debug() {} },
  registerTool: (factory, opts) => registered.push({ factory, opts }),
  registerService: (service) => services.push(service) });
const tools = registered.map(({ factory }) => factory(ctx));
const outcomes = [];
for (const [name, params] of calls) {
  const tool = tools.find((t) => t.name === name);
  try { outcomes.push({ ok: await tool.execute("call-1", params) }); }
  catch (error) { outcomes.push({ error: { name: error.name, type: error.type, message: error.message } }); }
}
await Promise.all(services.map((service) => service.stop?.({})));
console.log(JSON.stringify({
  names: registered.map(({ opts }) => opts?.name),
  tools: tools.map(({ name, description, parameters }) => ({ name, description, parameters })),
  services: services.map((service) => service.id), outcomes, warnings }));
"""


def devclaw_tools() -> list[dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", "devclaw.cli", "tools"], capture_output=True, text=True, check=True)
    tools: list[dict[str, Any]] = json.loads(done.stdout)
    return tools


def node_host(
    calls: list[Any], config: dict[str, Any], ctx: dict[str, Any], sessions: dict[str, Any] | None = None
) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node (>= 20) must be on PATH to load index.js"
    done = subprocess.run(
        [node, "--input-type=module", "-e", NODE_HOST, json.dumps([calls, config, ctx, sessions])],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_manifest_declares_every_tool_in_both_profiles() -> None:
    names = [tool["name"] for tool in devclaw_tools()]
    assert MANIFEST["id"] == "devclaw"
    assert MANIFEST["contracts"]["tools"] == names
    assert MANIFEST["toolMetadata"] == {name: {"profiles": ["coding", "messaging"]} for name in names}
    assert MANIFEST["activation"] == {"onStartup": True}
    assert set(MANIFEST["configSchema"]["properties"]) == {"python", "workspace", "callTimeoutSeconds", "loop"}


def test_the_package_is_plain_esm_without_dependencies() -> None:
    assert PACKAGE["type"] == "module"
    assert PACKAGE["openclaw"] == {"extensions": ["./index.js"]}
    assert not {"dependencies", "devDependencies", "scripts"} & set(PACKAGE)
    for name in PACKAGE["files"]:
        assert (REPO / name).is_file(), name
    assert PACKAGE["version"] == MANIFEST["version"]


def test_the_committed_schemas_are_what_devclaw_tools_prints() -> None:
    assert json.loads((REPO / "openclaw.tools.json").read_text()) == devclaw_tools(), (
        "regenerate with: devclaw tools > openclaw.tools.json"
    )


def test_index_js_registers_exactly_what_devclaw_tools_prints() -> None:
    published = node_host([], {"python": sys.executable}, {"workspaceDir": "/nonexistent"})
    assert published["tools"] == devclaw_tools()
    assert published["names"] == MANIFEST["contracts"]["tools"]
    assert published["services"] == ["devclaw-bridge"]


def test_index_js_tools_run_devclaw_in_the_agent_workspace(ws: Workspace, project: Any, tracker: Any) -> None:
    new_issue(tracker)
    calls = [
        ["queue_status", {"projectGroupId": GROUP}],
        ["task_pickup", {"issueId": 1, "role": "qa", "projectGroupId": GROUP}],
        ["task_pickup", {"issueId": "one"}],
    ]
    outcome = node_host(calls, {"python": sys.executable}, {"workspaceDir": str(ws.root)})["outcomes"]

    queue = outcome[0]["ok"]
    assert queue["details"]["projects"][0]["queue"]["toDo"] == [{"id": 1, "title": "Add login page"}]
    compact = json.dumps(queue["details"], ensure_ascii=False, separators=(",", ":"))
    assert queue["content"] == [{"type": "text", "text": compact}]
    assert outcome[1]["error"]["name"] == "DevclawError" and outcome[1]["error"]["type"] == "workflow"
    errors = [r["message"] for r in ws.audit.records() if r["event"] == "error"]
    assert errors[:1] == [outcome[1]["error"]["message"]]
    assert outcome[2]["error"]["type"] == "invalid_input" and "issueId" in outcome[2]["error"]["message"]


def test_the_config_workspace_wins_over_the_agent_workspace(ws: Workspace, project: Any) -> None:
    config = {"python": sys.executable, "workspace": str(ws.root)}
    outcome = node_host([["queue_status", {}]], config, {"workspaceDir": "/nonexistent"})["outcomes"]
    assert [p["groupId"] for p in outcome[0]["ok"]["details"]["projects"]] == [GROUP]


def test_index_js_reports_a_call_timeout(ws: Workspace) -> None:
    config = {"python": sys.executable, "callTimeoutSeconds": 0.001}
    outcome = node_host([["queue_status", {}]], config, {"workspaceDir": str(ws.root)})["outcomes"]
    assert "did not answer within 0.001 s" in outcome[0]["error"]["message"]


def bare_python(folder: Path) -> str:
    """An interpreter that cannot import devclaw: the system Python, isolated (-I: no cwd, no site dirs)."""
    script = folder / "bare-python"
    script.write_text(f'#!/bin/sh\nexec {sys.base_prefix}/bin/python3 -I "$@"\n')
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize(
    ("python", "message"),
    [("/nonexistent/python", "could not run /nonexistent/python: no such file"), ("bare", "cannot import devclaw")],
)
def test_a_python_without_devclaw_is_explained_in_the_tool_result(
    ws: Workspace, tmp_path: Path, python: str, message: str
) -> None:
    # The agent reads devclaw's own message (what to set) instead of the host's "tool execution failed".
    python = bare_python(tmp_path) if python == "bare" else python
    outcome = node_host([["queue_status", {}]], {"python": python}, {"workspaceDir": str(ws.root)})["outcomes"]
    details = outcome[0]["ok"]["details"]
    assert details["success"] is False and details["error"]["type"] == "config"
    assert message in details["error"]["message"]
    assert "plugins.entries.devclaw.config.python" in details["error"]["message"]


def test_a_timed_out_mutation_says_it_may_still_complete_and_serve_is_not_killed(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devclaw.registry import register_project
    from devclaw.state import Project, TrackerConfig
    from tests.fakes import FakeGitLab, FakeServer

    fake = FakeGitLab("acme/webapp")
    monkeypatch.setenv("FAKE_TOKEN", fake.token)
    with FakeServer(fake) as server:
        config = TrackerConfig(provider="gitlab", path="acme/webapp", base_url=server.url, token_env="FAKE_TOKEN")
        register_project(ws, GROUP, Project(name="webapp", tracker=config))
        issue = fake.project.add("Task", labels=["To Do"])
        # The first call starts serve, so the pickup's deadline is not spent on the interpreter's start-up.
        # The pickup's label write lands at once; its reply comes long after the bridge stopped waiting.
        fake.stall(12, method="PUT")
        calls = [["queue_status", {}], ["task_pickup", {"issueId": issue, "role": "dev", "projectGroupId": GROUP}]]
        plugin_config = {"python": sys.executable, "callTimeoutSeconds": 6}
        outcome = node_host(calls, plugin_config, {"workspaceDir": str(ws.root)})["outcomes"]
    assert "ok" in outcome[0], outcome[0]
    message = outcome[1]["error"]["message"]
    assert "did not answer within 6 s" in message and "It may still complete" in message
    assert "retry the same call" in message
    # serve was not killed mid-mutation: it finished the pickup, and devclaw's files agree with the tracker.
    assert fake.project.issues[issue].labels == ["Doing"], [r.get("message") for r in ws.audit.records()]
    assert ws.store.read().project(GROUP).worker("dev").issue_id == issue
    assert [r["issue"] for r in ws.audit.records(event="task_pickup")] == [issue]


def assistant(at_ms: int, input_tokens: int, output: int, cost: float | None = None) -> dict[str, Any]:
    usage: dict[str, Any] = {"input": input_tokens, "output": output, "cacheRead": 1, "cacheWrite": 0}
    if cost is not None:
        usage["cost"] = {"total": cost}
    return {"role": "assistant", "content": [{"type": "text", "text": "ok"}], "usage": usage, "timestamp": at_ms,
            "provider": "fake", "model": "fake-model"}  # fmt: skip


def completions(ws: Workspace) -> list[dict[str, Any]]:
    return [r for r in ws.audit.records() if r["event"] == "task_complete"]


def test_a_manual_task_complete_counts_the_sessions_tokens_since_the_pickup(
    ws: Workspace, project: Any, tracker: Any
) -> None:
    from datetime import datetime

    issue = new_issue(tracker)
    session = "agent:main:subagent:manual-dev"
    pickup = {"issueId": issue, "role": "dev", "projectGroupId": GROUP}
    confirm = {"projectGroupId": GROUP, "role": "dev", "sessionId": session}
    node_host([["task_pickup", pickup], ["task_pickup_confirm", confirm]], {"python": sys.executable},
              {"workspaceDir": str(ws.root)})  # fmt: skip
    start = ws.store.read().project(GROUP).worker("dev").start_time
    assert start is not None
    picked = int(datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp() * 1000)
    # An earlier task's message in the same session, then this run's two, then a user message without usage.
    messages = [assistant(picked - 60000, 999, 999), assistant(picked + 10, 100, 7, 0.5),
                assistant(picked + 20, 50, 3, 0.25), {"role": "user", "content": "next", "timestamp": picked + 30}]  # fmt: skip
    done = {"role": "dev", "result": "done", "projectGroupId": GROUP}
    host = node_host([["task_complete", done]], {"python": sys.executable}, {"workspaceDir": str(ws.root)},
                     {session: messages})  # fmt: skip
    assert "ok" in host["outcomes"][0], host["outcomes"][0]
    [line] = completions(ws)
    assert line["usage"] == {"input": 150, "output": 10, "cacheRead": 2, "cacheWrite": 0, "cost": 0.75}
    assert line["model"] == "fake/fake-model" and host["warnings"] == []


def test_the_callers_usage_wins_and_an_unreadable_session_is_said_once(
    ws: Workspace, project: Any, tracker: Any
) -> None:
    first, second = new_issue(tracker), new_issue(tracker, "Second")
    two_dev = {GROUP: project.model_copy(update={"max_workers": {"dev": 2}})}
    ws.store.update(lambda state: state.model_copy(update={"projects": two_dev}))
    calls: list[Any] = []
    for n, issue in enumerate((first, second)):
        calls += [["task_pickup", {"issueId": issue, "role": "dev", "projectGroupId": GROUP}],
                  ["task_pickup_confirm", {"projectGroupId": GROUP, "role": "dev", "issueId": issue,
                                           "sessionId": f"agent:main:subagent:gone-{n}"}]]  # fmt: skip
    own = {"input": 5, "output": 6}
    calls += [
        ["task_complete", {"role": "dev", "result": "done", "projectGroupId": GROUP, "issueId": first, "usage": own}],
        ["task_complete", {"role": "dev", "result": "done", "projectGroupId": GROUP, "issueId": second}],
    ]
    sessions = {"agent:main:subagent:gone-0": [assistant(2**41, 100, 100)]}  # would count, but the caller's wins
    host = node_host(calls, {"python": sys.executable}, {"workspaceDir": str(ws.root)}, sessions)
    assert all("ok" in outcome for outcome in host["outcomes"]), host["outcomes"]
    by_issue = {line["issue"]: line.get("usage") for line in completions(ws)}
    assert by_issue[first] == {"input": 5, "output": 6, "cacheRead": 0, "cacheWrite": 0, "cost": None}
    assert by_issue[second] is None  # its session cannot be read: recorded without tokens
    [warning] = host["warnings"]
    assert "agent:main:subagent:gone-1" in warning and "without tokens" in warning


def test_loop_js_knows_every_roles_verdicts_as_the_workflow_table_spells_them() -> None:
    node = shutil.which("node")
    assert node, "node (>= 20) must be on PATH to load loop.js"
    script = 'import { VERDICTS } from "./loop.js"; console.log(JSON.stringify(VERDICTS));'
    done = subprocess.run([node, "--input-type=module", "-e", script], cwd=REPO, capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip
    from devclaw.workflow import ROLES

    assert json.loads(done.stdout) == {name: {r.upper(): r for r in spec.results} for name, spec in ROLES.items()}
