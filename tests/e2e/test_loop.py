"""The work loop in a real OpenClaw gateway: issues go To Do -> Done with no orchestrator turn.

One gateway with the loop on (tick every 5 s), a scripted model answering as DEV and QA workers, and a fake
Telegram Bot API for the announcements. The tests run in file order on the same gateway; the last one
SIGKILLs it mid-run and starts it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devclaw.trackers.local import LocalTracker

from .conftest import devclaw
from .fake_model import FakeModel
from .fake_telegram import BOT_TOKEN, FakeTelegram
from .gateway import Gateway, _alive, stage_plugin
from .install import OpenClawInstall

pytestmark = pytest.mark.e2e

MAIN, EDGE = "-1001000000001", "-1001000000002"  # EDGE has announce: false
GATED = "-1001000000003"  # changes.required: DEV done needs a merged merge request; announce: false
CHANGE_URL = "https://git.example/acme/gated/-/merge_requests/7"
USAGE = {
    "prompt_tokens": 1234,
    "completion_tokens": 56,
    "total_tokens": 1290,
    "prompt_tokens_details": {"cached_tokens": 200},
}
PER_REQUEST = {"input": 1034, "output": 56, "cacheRead": 200, "cacheWrite": 0}  # input excludes the cached part
PRICE = {"input": 3, "output": 15, "cacheRead": 0.3, "cacheWrite": 3.75}  # USD per 1M tokens
COST_PER_REQUEST = sum(PER_REQUEST[key] * PRICE[key] for key in PER_REQUEST) / 1e6
TASK = re.compile(r"(DEV|QA) task for project (\S+): issue #(\d+) — (.*)")
WAIT = 420.0  # bounds a hang only: two busy cores can make a worker run take many seconds


def user_texts(body: dict[str, Any]) -> list[str]:
    texts = []
    for message in body.get("messages", []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        text = (
            "".join(p.get("text", "") for p in content if isinstance(p, dict))
            if isinstance(content, list)
            else str(content or "")
        )
        if not text.lstrip().startswith("<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT"):
            texts.append(text)
    return texts


class Workers:
    """The scripted workers: DONE for DEV, PASS for QA, except where an issue title asks otherwise:
    "[qa-fail-once]" fails QA the first time, "[no-verdict]" never states one, "[hang]" blocks the first run,
    "[needs-mr]" links its merge request (``link``) only once told its DONE was not accepted."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.link: Callable[[str], None] | None = None
        self.hung: set[str] = set()
        self.failed: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> str | None:
        texts = user_texts(body)
        last = texts[-1] if texts else ""
        found = TASK.search(last)
        if found is None:
            return "I have no task."
        role, project, issue, title = found.groups()
        key = f"{project}#{issue}"
        if "[no-verdict]" in title:
            return "I had a look at it and made some notes."
        if role == "DEV":
            if "[hang]" in title and "interrupted" not in last:
                with self._lock:
                    first = key not in self.hung
                    self.hung.add(key)
                if first:
                    self.release.wait(timeout=180)
            if "[needs-mr]" in title and "not accepted" in last and self.link is not None:
                self.link(issue)  # the worker does the step the refusal named
            return f"DONE: implemented {title.strip()}"
        with self._lock:
            fail = "[qa-fail-once]" in title and key not in self.failed
            self.failed.add(key)
        return "FAIL: the button does nothing" if fail else f"PASS: verified {title.strip()}"


def requests_mentioning(model: FakeModel, *fragments: str) -> list[str]:
    """The last real user message of every request that contains all ``fragments``."""
    found = []
    for body in list(model.requests):
        texts = user_texts(body)
        if texts and all(fragment in texts[-1] for fragment in fragments):
            found.append(texts[-1])
    return found


def announced(text: str) -> tuple[str, str, int]:
    """What an announcement is about: ("pickup" | "complete", role, issue)."""
    found = re.search(r"\b(DEV|QA)\b.*?#(\d+)", text)
    assert found, text
    kind = "pickup" if re.search(r"\b(Spawning|Sending)\b", text) else "complete"
    return kind, found.group(1), int(found.group(2))


def wait_for(condition: Callable[[], Any], timeout: float = WAIT, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.5)


def audit(ws: Path, event: str | None = None) -> list[dict[str, Any]]:
    path = ws / "memory" / "audit.log"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return [r for r in records if event is None or r["event"] == event]


@pytest.fixture(scope="module")
def workers() -> Workers:
    return Workers()


@pytest.fixture(scope="module")
def worker_model(workers: Workers) -> Iterator[FakeModel]:
    model = FakeModel([], responder=workers, usage=USAGE)
    model.start()
    yield model
    workers.release.set()
    model.stop()


@pytest.fixture(scope="module")
def telegram() -> Iterator[FakeTelegram]:
    fake = FakeTelegram()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def loop_ws(e2e_root: Path) -> Path:
    ws = e2e_root / "loop-workspace"
    ws.mkdir()
    devclaw(ws, "project", "add", MAIN, "--name", "webapp", "--provider", "local")
    devclaw(ws, "project", "add", EDGE, "--name", "edge", "--provider", "local")
    state_path = ws / "memory" / "projects.json"
    state = json.loads(state_path.read_text())
    state["models"] = {alias: "fake/fake-model-b" for alias in ("haiku", "sonnet", "opus", "grok")}
    state["health"] = {**state.get("health", {}), "graceMinutes": 0}  # a deleted session is judged at once
    state_path.write_text(json.dumps(state, indent=2))
    for title in ("Add login page", "Add logout button [qa-fail-once]", "Fix typo in footer"):
        devclaw(ws, "issue", "create", MAIN, "--title", title, "--label", "To Do")
    return ws


@pytest.fixture(scope="module")
def loop_gateway(
    openclaw_install: OpenClawInstall, e2e_root: Path, loop_ws: Path, worker_model: FakeModel, telegram: FakeTelegram
) -> Iterator[Gateway]:
    plugin = stage_plugin(e2e_root / "plugin-loop" / "devclaw")
    loop = {"enabled": True, "tickSeconds": 5, "maxRedispatch": 2,
            "projects": {EDGE: {"announce": False}, GATED: {"announce": False}}}  # fmt: skip
    model_cost = [{"id": m, "name": m, "cost": PRICE} for m in ("fake-model", "fake-model-b")]
    config = {
        "agents": {"defaults": {"workspace": str(loop_ws), "model": {"primary": "fake/fake-model"}}},
        "models": {"providers": {"fake": {"baseUrl": worker_model.base_url, "apiKey": "not-a-real-key",
                                          "api": "openai-completions", "models": model_cost}}},
        "tools": {"toolSearch": False},
        "plugins": {
            "allow": ["devclaw", "telegram"],
            "load": {"paths": [str(plugin)]},
            "entries": {
                "devclaw": {
                    "enabled": True,
                    "config": {"python": sys.executable, "workspace": str(loop_ws), "loop": loop},
                    "subagent": {"allowModelOverride": True, "allowedModels": ["fake/fake-model-b"]},
                },
                "telegram": {"enabled": True},
            },
        },
        "channels": {"telegram": {"enabled": True, "botToken": BOT_TOKEN, "apiRoot": telegram.url,
                                  "groupPolicy": "allowlist", "linkPreview": False,
                                  "groups": {MAIN: {"requireMention": True}, EDGE: {"requireMention": True}}}},
        "bindings": [{"agentId": "main", "match": {"channel": "telegram", "accountId": "default"}}],
    }  # fmt: skip
    with Gateway(openclaw_install, e2e_root / "gateway-loop", config).running() as gw:
        yield gw


def tracker(ws: Path, name: str) -> LocalTracker:
    return LocalTracker(ws / "memory" / "tracker.sqlite3", name)


def session_key(group: str, role: str) -> str:
    return f"agent:main:subagent:devclaw-{group.lstrip('-')}-{role}-0"


def test_three_issues_go_to_done_with_no_orchestrator_turn(
    loop_gateway: Gateway, loop_ws: Path, worker_model: FakeModel, telegram: FakeTelegram
) -> None:
    board = tracker(loop_ws, "webapp")
    wait_for(lambda: all(board.get_issue(n).labels == ("Done",) for n in (1, 2, 3)), what="three issues Done")
    assert all(board.get_issue(n).state == "closed" for n in (1, 2, 3))

    completes = [r for r in audit(loop_ws, "task_complete") if r["groupId"] == MAIN]
    by_issue = {n: [(r["role"], r["result"]) for r in completes if r["issue"] == n] for n in (1, 2, 3)}
    assert by_issue[2] == [("dev", "done"), ("qa", "fail"), ("dev", "done"), ("qa", "pass")]
    assert by_issue[1] == by_issue[3] == [("dev", "done"), ("qa", "pass")]
    fix = [r for r in audit(loop_ws, "task_pickup") if r["issue"] == 2 and r["role"] == "dev"][-1]
    assert fix["labelTransition"] == "To Improve → Doing"
    assert requests_mentioning(worker_model, "DEV task for project webapp: issue #2", "the button does nothing")

    # Nothing but worker runs reached the model: every request carries a devclaw task.
    assert worker_model.requests and all(TASK.search(" ".join(user_texts(b))) for b in worker_model.requests)
    assert {b["model"] for b in worker_model.requests} == {"fake-model-b"}  # the selected model, overridden

    # The tokens on the audit lines are what the fake model reported, run by run.
    runs = 0
    for line in completes:
        n = line["usage"]["input"] // PER_REQUEST["input"]
        assert n >= 1 and {k: line["usage"][k] for k in PER_REQUEST} == {k: v * n for k, v in PER_REQUEST.items()}
        assert line["usage"]["cost"] == pytest.approx(n * COST_PER_REQUEST)
        assert line["model"] == "fake/fake-model-b"
        runs += n
    assert runs == len(requests_mentioning(worker_model, "task for project webapp"))

    # Each announcement reached the group once: one per pickup and per completion.
    pickups = [r for r in audit(loop_ws, "task_pickup") if r["groupId"] == MAIN]
    assert len(pickups) + len(completes) == 16

    def sent_to_main() -> list[dict[str, Any]]:
        return [m for m in telegram.sent() if str(m["chat_id"]) == MAIN]

    # The last announcement is posted just after its label moved: wait for it, then check none came twice.
    wait_for(lambda: len(sent_to_main()) >= 16, timeout=60, what="16 announcements")
    sent = sent_to_main()
    expected = Counter([("pickup", r["role"].upper(), r["issue"]) for r in pickups] +
                       [("complete", r["role"].upper(), r["issue"]) for r in completes])  # fmt: skip
    assert Counter(announced(m["text"]) for m in sent) == expected
    assert any(m["text"].startswith("🎉 QA PASS #2") for m in sent)
    confirms = {r["sessionId"] for r in audit(loop_ws, "task_pickup_confirm") if r["groupId"] == MAIN}
    assert confirms == {session_key(MAIN, "dev"), session_key(MAIN, "qa")}

    status = loop_gateway.result("loop_status", {})
    assert status["enabled"] is True and status["running"] is True and status["modelOverride"] is True
    assert status["announceChannel"] is True and status["lastTick"]["ok"] is True


def test_a_reply_with_no_verdict_gets_one_follow_up_then_refining(
    loop_gateway: Gateway, loop_ws: Path, worker_model: FakeModel, telegram: FakeTelegram
) -> None:
    issue = devclaw(loop_ws, "issue", "create", EDGE, "--title", "[no-verdict] Investigate flaky build",
                    "--label", "To Do")["id"]  # fmt: skip
    board = tracker(loop_ws, "edge")
    wait_for(lambda: board.get_issue(issue).labels == ("Refining",), what="no-verdict issue on Refining")
    first_line = f"DEV task for project edge: issue #{issue}"
    assert len(requests_mentioning(worker_model, first_line, "stated no verdict")) == 1
    [comment] = wait_for(lambda: board.comments(issue), timeout=60, what="the comment")  # added after the move
    assert "no verdict" in comment
    [release] = [r for r in audit(loop_ws, "task_release") if r["issue"] == issue]
    assert release["to"] == "refining"
    assert [m for m in telegram.sent() if str(m["chat_id"]) == EDGE] == []  # announce: false


def test_a_done_refused_for_want_of_a_merged_change_goes_back_to_the_worker(
    loop_gateway: Gateway, loop_ws: Path, worker_model: FakeModel, workers: Workers
) -> None:
    devclaw(loop_ws, "project", "add", GATED, "--name", "gated", "--provider", "local", "--changes-required")
    workers.link = lambda issue: devclaw(loop_ws, "issue", "link-mr", GATED, issue, CHANGE_URL, "--state", "merged")
    linked = devclaw(loop_ws, "issue", "create", GATED, "--title", "[needs-mr] Add export", "--label", "To Do")["id"]
    never = devclaw(loop_ws, "issue", "create", GATED, "--title", "Add import", "--label", "To Do")["id"]
    board = tracker(loop_ws, "gated")
    wait_for(lambda: board.get_issue(linked).labels == ("Done",), what="the linked issue Done")
    wait_for(lambda: board.get_issue(never).labels == ("Refining",), what="the unlinked issue on Refining")

    def asked(issue: int) -> list[str]:
        return requests_mentioning(worker_model, f"DEV task for project gated: issue #{issue}", "not accepted")

    # Linked after the first refusal: one follow-up carried the refusal's next step, then DONE went through.
    [follow_up] = asked(linked)
    assert f'DEV "done" refused for issue #{linked} on gated' in follow_up and "devclaw issue link-mr" in follow_up
    [done] = [r for r in audit(loop_ws, "task_complete") if r["groupId"] == GATED and r["role"] == "dev"]
    assert (done["issue"], done["changeUrl"], done["changeState"]) == (linked, CHANGE_URL, "merged")
    assert requests_mentioning(worker_model, f"QA task for project gated: issue #{linked}", CHANGE_URL)

    # Never linked: asked twice, then Refining, saying why.
    assert len(asked(never)) == 2
    [release] = [r for r in audit(loop_ws, "task_release") if r["issue"] == never and r["groupId"] == GATED]
    assert release["to"] == "refining" and "the dev verdict was refused 3 times" in release["reason"]


def test_a_worker_run_aborted_mid_run_is_sent_again_once(
    loop_gateway: Gateway, loop_ws: Path, worker_model: FakeModel, workers: Workers
) -> None:
    issue = devclaw(loop_ws, "issue", "create", EDGE, "--title", "[hang] Rewrite the importer", "--label", "To Do")[
        "id"
    ]
    wait_for(lambda: f"edge#{issue}" in workers.hung, what="the worker run to be busy")
    key = session_key(EDGE, "dev")
    # Abort the run, as a person stopping a stuck worker would (a session deleted outright is the next test).
    done = loop_gateway.cli("gateway", "call", "sessions.abort", "--json", "--timeout", "120000", "--params",
                            json.dumps({"key": key, "agentId": "main"}))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    # An aborted run is an interrupted one: sent again once into the same session, then it completes.
    board = tracker(loop_ws, "edge")
    wait_for(lambda: board.get_issue(issue).labels == ("Done",), what="aborted-run issue Done")
    first_line = f"DEV task for project edge: issue #{issue}"
    assert len(requests_mentioning(worker_model, first_line, "was interrupted")) == 1
    pickups = [r for r in audit(loop_ws, "task_pickup") if r["groupId"] == EDGE and r["issue"] == issue]
    assert [r["role"] for r in pickups] == ["dev", "qa"]


def confirmed_worker(ws: Path, group: str, role: str, issue: int) -> dict[str, Any] | None:
    state = json.loads((ws / "memory" / "projects.json").read_text())
    for slot in state["projects"][group]["workers"].get(role) or []:
        if slot.get("active") and slot.get("issueId") == issue and slot.get("sessionId"):
            return dict(slot)
    return None


def test_a_worker_whose_session_is_deleted_mid_run_goes_back_to_its_queue_and_runs_again(
    loop_gateway: Gateway, loop_ws: Path, worker_model: FakeModel, workers: Workers
) -> None:
    issue = devclaw(loop_ws, "issue", "create", EDGE, "--title", "[hang] Rebuild the search index",
                    "--label", "To Do")["id"]  # fmt: skip
    wait_for(lambda: f"edge#{issue}" in workers.hung, what="the worker run to be busy")
    key = session_key(EDGE, "dev")
    wait_for(lambda: confirmed_worker(loop_ws, EDGE, "dev", issue), what="the worker's session to be confirmed")
    done = loop_gateway.cli("sessions", "delete", key, "--yes", "--json")
    assert done.returncode == 0, done.stdout + done.stderr

    # The run ends without its session; the next tick's reconcile finds the worker's session gone, returns
    # the issue to To Do, and the same tick spawns it again in a new session (same key, a new transcript).
    board = tracker(loop_ws, "edge")
    wait_for(lambda: board.get_issue(issue).labels == ("Done",), what="deleted-session issue Done")
    [fix] = [r for r in audit(loop_ws, "health_fix") if r["issue"] == issue]
    assert (fix["type"], fix["role"], fix["sessionId"]) == ("zombie_session", "dev", key)
    assert fix["labelTransition"] == "Doing → To Do"
    pickups = [r for r in audit(loop_ws, "task_pickup") if r["groupId"] == EDGE and r["issue"] == issue]
    assert [(r["role"], r["labelTransition"]) for r in pickups] == [
        ("dev", "To Do → Doing"), ("dev", "To Do → Doing"), ("qa", "To Test → Testing")
    ]  # fmt: skip
    assert [r for r in audit(loop_ws, "task_release") if r["issue"] == issue] == []
    first_line = f"DEV task for project edge: issue #{issue}"
    assert requests_mentioning(worker_model, first_line, "was interrupted") == []  # spawned anew, not resent
    completes = [r for r in audit(loop_ws, "task_complete") if r["groupId"] == EDGE and r["issue"] == issue]
    assert [(r["role"], r["result"]) for r in completes] == [("dev", "done"), ("qa", "pass")]


def kill9(gateway: Gateway) -> None:
    """A crash: SIGKILL the gateway and, by PID, everything it started."""
    assert gateway.process is not None
    children = list(gateway._refresh_descendants())
    gateway.process.kill()
    gateway.process.wait(timeout=30)
    for pid in children:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_gateway_killed_mid_run_redispatches_once_after_restart(
    loop_gateway: Gateway, loop_ws: Path, worker_model: FakeModel, workers: Workers
) -> None:
    issue = devclaw(loop_ws, "issue", "create", EDGE, "--title", "[hang] Migrate the settings page",
                    "--label", "To Do")["id"]  # fmt: skip
    wait_for(lambda: f"edge#{issue}" in workers.hung, what="the worker run to be busy")
    in_flight = json.loads((loop_ws / "memory" / "loop.json").read_text())["inFlight"]
    assert [r["issueId"] for r in in_flight] == [issue]
    kill9(loop_gateway)
    loop_gateway.start()
    board = tracker(loop_ws, "edge")
    wait_for(lambda: board.get_issue(issue).labels == ("Done",), what="killed-run issue Done")
    first_line = f"DEV task for project edge: issue #{issue}"
    assert len(requests_mentioning(worker_model, first_line, "was interrupted")) == 1
    pickups = [r for r in audit(loop_ws, "task_pickup") if r["groupId"] == EDGE and r["issue"] == issue]
    assert [r["role"] for r in pickups] == ["dev", "qa"]  # the same task went on, no second pickup
