"""``devclaw observe`` as a real subprocess: every endpoint, the access rules, no tracker request per page
view, tracker failures shown as such, and no token in any answer."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from devclaw.audit import AuditLog
from devclaw.state import Project, TrackerConfig
from devclaw.workspace import Workspace
from tests.fakes import FakeGitLab, FakeServer
from tests.observe_helpers import Observer, devclaw, make_demo, project, wait_for

GROUP = "-1001234567890"
PAGES = ("/", "/timeline", "/analytics", "/triage")
APIS = ("/api/state", "/api/events?after=0", "/api/cost", "/api/timeline", "/api/analytics")
ACCESS_TOKEN = "observe-access-token-0123456789"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo(tmp_path_factory.mktemp("observe") / "demo")


@pytest.fixture
def workspace(demo: Path, tmp_path: Path) -> Path:
    # Each test gets its own copy of the demo: some of them move issues.
    root = tmp_path / "ws"
    subprocess.run(["cp", "-a", str(demo), str(root)], check=True)
    return root


@pytest.fixture
def observer(workspace: Path) -> Iterator[Observer]:
    with Observer(workspace, "--refresh", "3600") as running:
        running.history_read()
        wait_for(lambda: project(running.state(), GROUP)["queues"]["readAt"], "the first queue read")
        yield running


def test_every_page_and_endpoint_answers(observer: Observer) -> None:
    for path in (*PAGES, *APIS, "/static/observe.js", "/static/observe.css"):
        answer = observer.get(path)
        assert answer.status == 200, (path, answer.text[:300])
    for path in PAGES:
        assert "devclaw observe" in observer.get(path).text
        fragment = observer.get(f"{path}?fragment=1").text
        assert "<html" not in fragment  # only the content, for the page's live update


def test_state_shows_projects_workers_queues_and_health(observer: Observer) -> None:
    webapp = project(observer.state(), GROUP)
    assert webapp["name"] == "webapp"
    assert [(w["role"], w["slot"], w["active"]) for w in webapp["workers"]] == [("dev", 0, False), ("qa", 0, False)]
    queues = webapp["queues"]
    assert queues["error"] is None and queues["ageSeconds"] is not None
    # The demo ends with #3 back on To Do (its worker died) and #2 on Refining (QA asked a person).
    assert [i["id"] for i in queues["issues"]["To Do"]] == [3]
    assert [(i["id"], i["loopBrake"]) for i in queues["issues"]["Refining"]] == [(2, False)]
    assert queues["counts"] == {"To Improve": 0, "To Test": 0, "To Do": 1, "Refining": 1, "Planning": 0}
    assert webapp["health"]["fixed"] == [{"type": "zombie_session", "groupId": GROUP, "role": "dev", "issue": 3}]
    assert "queues read" in observer.get("/").text


def test_a_pickup_from_the_cli_shows_without_a_tracker_read(observer: Observer, workspace: Path) -> None:
    reads = project(observer.state(), GROUP)["queues"]["trackerReads"]
    devclaw(workspace, "call", "task_pickup", json.dumps({"issueId": 3, "role": "dev", "projectGroupId": GROUP}))

    def picked() -> Any:
        webapp = project(observer.state(), GROUP)
        dev = webapp["workers"][0]
        return webapp if dev["active"] and dev["issueId"] == 3 else None

    webapp = wait_for(picked, "the dev worker on #3")
    dev = webapp["workers"][0]
    assert dev["issueTitle"] == "Redesign session storage" and dev["model"] == "opus" and dev["inGrace"] is True
    wait_for(lambda: not project(observer.state(), GROUP)["queues"]["issues"]["To Do"], "#3 to leave To Do")
    assert project(observer.state(), GROUP)["queues"]["trackerReads"] == reads  # followed from the audit log


def test_events_after_returns_only_newer_records(observer: Observer, workspace: Path) -> None:
    everything = observer.get("/api/events?after=0").json()
    total = len(AuditLog(workspace / "memory" / "audit.log").files()[-1].read_text().splitlines())
    assert [e["seq"] for e in everything["events"]] == list(range(1, total + 1))
    assert everything["latest"] == total and everything["last"] == total
    tail = observer.get(f"/api/events?after={total - 2}").json()
    assert [e["seq"] for e in tail["events"]] == [total - 1, total]
    assert tail["events"][-1]["event"] == "health_check"
    assert observer.get(f"/api/events?after={total}").json()["events"] == []
    assert observer.get("/api/events?after=2&limit=3").json()["last"] == 5
    for bad in ("after=x", "after=-1", "limit=0"):
        answer = observer.get(f"/api/events?{bad}")
        assert answer.status == 400 and answer.json()["error"]["type"] == "invalid_input"


def test_timeline_and_analytics_endpoints(observer: Observer) -> None:
    timeline = observer.get("/api/timeline?project=webapp&role=qa").json()
    assert {i["issue"] for i in timeline["issues"]} == {1, 2}
    first = next(i for i in timeline["issues"] if i["issue"] == 1)
    assert first["done"] and first["cycleSeconds"] > 0 and first["qaFails"] == 1
    assert [s["stage"] for s in first["stages"]] == [
        "in dev",
        "waiting for QA",
        "in QA",
        "back for fixes",
        "in dev",
        "waiting for QA",
        "in QA",
    ]
    assert observer.get("/api/timeline?since=2999-01-01").json()["issues"] == []
    assert observer.get("/api/timeline?since=yesterday").status == 400
    assert observer.get("/timeline?role=boss").status == 400
    day = observer.get("/api/analytics").json()["perDay"][0]
    assert (day["done"], day["qaFail"], day["qaRefine"], day["loopBrakes"]) == (1, 1, 1, 0)
    assert day["qaFailRate"] == pytest.approx(1 / 3)


def test_cost_is_empty_with_a_note_until_usage_is_recorded(observer: Observer, workspace: Path) -> None:
    cost = observer.get("/api/cost").json()
    assert cost["recorded"] is False and "no token usage recorded yet" in cost["note"].lower()
    assert "No token usage recorded yet" in observer.get("/analytics").text
    log = AuditLog(workspace / "memory" / "audit.log")
    for role, model, usage in (
        (
            "dev",
            "anthropic/claude-opus-4-5",
            {"input": 1000, "output": 200, "cacheRead": 50, "cacheWrite": 5, "cost": 0.25},
        ),
        (
            "qa",
            "github-copilot/grok-code-fast-1",
            {"input": 300, "output": 40, "cacheRead": 0, "cacheWrite": 0, "cost": None},
        ),
    ):
        log.append(
            "task_complete",
            project="webapp",
            groupId=GROUP,
            issue=3,
            role=role,
            result="done",
            labelTransition="Doing → To Test",
            model=model,
            usage=usage,
        )
    cost = wait_for(lambda: (c := observer.get("/api/cost").json())["recorded"] and c, "usage to be read")
    assert cost["total"] == {
        "tasks": 2,
        "input": 1300,
        "output": 240,
        "cacheRead": 50,
        "cacheWrite": 5,
        "cost": 0.25,
        "tasksWithoutCost": 1,
    }
    assert [(r["key"], r["cost"]) for r in cost["byModel"]] == [
        ("anthropic/claude-opus-4-5", 0.25),
        ("github-copilot/grok-code-fast-1", 0.0),
    ]
    assert [r["key"] for r in cost["byRole"]] == ["dev", "qa"]
    assert cost["byProject"][0]["key"] == "webapp" and cost["byTask"][0]["issue"] == 3
    page = observer.get("/analytics").text
    assert "Cost by model" in page and "No token usage recorded yet" not in page


def _page_csrf(observer: Observer) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', observer.get("/triage").text)
    assert match, "the triage page carries a CSRF token"
    return match.group(1)


def _form_post(observer: Observer, fields: dict[str, str], **headers: str) -> Any:
    return observer.request(
        "POST",
        "/api/send-to-todo",
        body=urlencode(fields).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
    )


def test_send_to_todo_is_the_human_move_with_its_audit_line(observer: Observer, workspace: Path) -> None:
    fields = {"csrf": _page_csrf(observer), "groupId": GROUP, "issueId": "2"}
    answer = _form_post(observer, fields, Origin=observer.url)
    assert answer.status == 303 and answer.headers["location"].startswith("/triage?notice=")
    assert devclaw(workspace, "issue", "show", GROUP, "2")["labels"] == ["To Do"]
    lines = [json.loads(line) for line in (workspace / "memory" / "audit.log").read_text().splitlines()]
    assert [line for line in lines if line["event"] == "issue_label"] == [
        {
            "ts": lines[-1]["ts"],
            "event": "issue_label",
            "project": "webapp",
            "groupId": GROUP,
            "issue": 2,
            "labelTransition": "Refining → To Do",
            "forced": False,
        }
    ]
    queues = project(observer.state(), GROUP)["queues"]["issues"]
    assert queues["Refining"] == [] and [i["id"] for i in queues["To Do"]] == [2, 3]
    # A move the workflow does not allow (Done -> To Do) is refused, shown, and writes nothing.
    again = _form_post(observer, {**fields, "issueId": "1"}, Origin=observer.url)
    assert again.status == 303 and "failed=1" in again.headers["location"]
    assert devclaw(workspace, "issue", "show", GROUP, "1")["labels"] == ["Done"]
    assert len((workspace / "memory" / "audit.log").read_text().splitlines()) == len(lines)


def test_send_to_todo_needs_a_same_origin_csrf_token(observer: Observer, workspace: Path) -> None:
    csrf = _page_csrf(observer)
    for fields, headers in (
        ({"groupId": GROUP, "issueId": "2"}, {"Origin": observer.url}),  # no CSRF token
        ({"csrf": "guessed", "groupId": GROUP, "issueId": "2"}, {"Origin": observer.url}),
        ({"csrf": csrf, "groupId": GROUP, "issueId": "2"}, {"Origin": "http://evil.example"}),
        ({"csrf": csrf, "groupId": GROUP, "issueId": "2"}, {}),  # neither Origin nor Sec-Fetch-Site
    ):
        assert _form_post(observer, fields, **headers).status == 403, (fields, headers)
    assert devclaw(workspace, "issue", "show", GROUP, "2")["labels"] == ["Refining"]
    answer = observer.request(
        "POST",
        "/api/send-to-todo",
        body=json.dumps({"groupId": GROUP, "issueId": 2}).encode(),
        headers={"Content-Type": "application/json", "Origin": observer.url, "X-CSRF-Token": csrf},
    )
    assert answer.status == 200 and answer.json()["issue"]["labels"] == ["To Do"]
    missing = observer.request(
        "POST",
        "/api/send-to-todo",
        body=json.dumps({"groupId": GROUP, "issueId": 99}).encode(),
        headers={"Content-Type": "application/json", "Origin": observer.url, "X-CSRF-Token": csrf},
    )
    assert missing.status == 404 and missing.json()["error"]["type"] == "not_found"


def test_a_foreign_host_name_is_refused_on_loopback(observer: Observer) -> None:
    # A web page that rebinds its own DNS name to 127.0.0.1 sends its own name as Host.
    assert observer.get("/api/state", Host="attacker.example").status == 400
    assert observer.get("/api/state", Host="localhost").status == 200


def test_the_stream_pushes_a_change(observer: Observer, workspace: Path) -> None:
    parts = urlsplit(observer.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=20)
    conn.request("GET", "/api/stream")
    reply = conn.getresponse()
    assert reply.status == 200 and reply.getheader("content-type", "").startswith("text/event-stream")
    seen: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            line = reply.readline().decode().strip()
            seen.append(line)
            if line == "event: change":
                done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_for(lambda: "event: hello" in seen, "the stream's hello")
    AuditLog(workspace / "memory" / "audit.log").append("queue_status", projectCount=1)
    assert done.wait(20), seen
    conn.close()


def test_a_non_loopback_host_needs_a_token(workspace: Path) -> None:
    for args, env, message in (
        (["--host", "0.0.0.0"], {}, "Refusing to serve on 0.0.0.0 without an access token"),
        (["--host", "192.0.2.1", "--token-env", "OBS_TOKEN"], {"OBS_TOKEN": ""}, "the variable is not set"),
        (["--token-env", "OBS_TOKEN"], {"OBS_TOKEN": "short"}, "is shorter than 16 characters"),
        (["--refresh", "0"], {}, "--refresh must be a positive number"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "devclaw", "observe", "--workspace", str(workspace), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **env},
        )
        assert done.returncode in (1, 2), done
        assert message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_with_a_token_every_request_needs_it(workspace: Path) -> None:
    with Observer(workspace, "--token-env", "OBS_TOKEN", env={"OBS_TOKEN": ACCESS_TOKEN}) as observer:
        for path in (*PAGES, *APIS, "/api/stream", "/static/observe.js"):
            assert observer.get(path).status == 401, path
            assert observer.get(path, Authorization="Bearer wrong-token-0123456789").status == 401, path
        assert observer.get("/api/state", Authorization=f"Bearer {ACCESS_TOKEN}").status == 200
        traded = observer.get(f"/triage?token={ACCESS_TOKEN}")
        assert traded.status == 303 and traded.headers["location"] == "/triage"
        cookie = traded.headers["set-cookie"].split(";")[0]
        assert "httponly" in traded.headers["set-cookie"].lower()
        page = observer.get("/triage", Cookie=cookie)
        assert page.status == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        fields = {"groupId": GROUP, "issueId": "2"}
        # The cookie alone never authorises the write; the token in the header does.
        assert _form_post(observer, fields, Cookie=cookie, Origin=observer.url).status == 403
        moved = observer.request(
            "POST",
            "/api/send-to-todo",
            body=json.dumps({"groupId": GROUP, "issueId": 2}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {ACCESS_TOKEN}"},
        )
        assert moved.status == 200, moved.text
        for path in (*PAGES, *APIS):
            assert ACCESS_TOKEN not in observer.get(path, Cookie=cookie).text


@pytest.fixture
def remote_workspace(tmp_path: Path) -> Iterator[tuple[Path, FakeGitLab, FakeServer, str]]:
    """Two GitLab projects: one on a fake server on 127.0.0.1, one whose server is down."""
    fake = FakeGitLab("acme/api")
    fake.project.add("Add rate limiting", ["To Do"])
    fake.project.add("Flaky login test", ["To Test"])
    fake.project.add("Which cache?", ["Refining"])
    with FakeServer(fake) as down:
        down_url = down.url  # the port is free again once the server is gone
    with FakeServer(fake) as server:
        ws = Workspace(tmp_path / "remote")
        with ws.store.locked() as state:
            state.projects["-1001"] = Project(
                name="api", tracker=TrackerConfig(provider="gitlab", path="acme/api", base_url=server.url)
            )
            state.projects["-1002"] = Project(
                name="down", tracker=TrackerConfig(provider="gitlab", path="acme/down", base_url=down_url)
            )
            ws.store.write(state)
        yield ws.root, fake, server, down_url


def test_page_views_make_no_tracker_request(remote_workspace: tuple[Path, FakeGitLab, FakeServer, str]) -> None:
    root, fake, _, _ = remote_workspace
    with Observer(root, "--refresh", "3600", env={"GITLAB_TOKEN": fake.token}) as observer:
        wait_for(lambda: project(observer.state(), "-1001")["queues"]["readAt"], "the first read of the api project")
        wait_for(lambda: project(observer.state(), "-1002")["queues"]["error"], "the down project's failure")
        before = fake.count()
        assert before >= 1
        for _ in range(5):
            for path in (*PAGES, *APIS):
                assert observer.get(path).status == 200
        assert fake.count() == before, [r.path for r in fake.log[before:]]
        api = project(observer.state(), "-1001")["queues"]
        assert api["trackerReads"] == 1
        assert api["counts"] == {"To Improve": 0, "To Test": 1, "To Do": 1, "Refining": 1, "Planning": 0}


def test_a_tracker_that_cannot_be_read_is_never_an_empty_queue(
    remote_workspace: tuple[Path, FakeGitLab, FakeServer, str],
) -> None:
    root, fake, _, down_url = remote_workspace
    with Observer(root, "--refresh", "3600", env={"GITLAB_TOKEN": fake.token}) as observer:
        down = wait_for(lambda: (p := project(observer.state(), "-1002"))["queues"]["error"] and p, "the failure")
        assert down["queues"]["issues"] is None and down["queues"]["counts"] is None
        assert down_url in down["queues"]["error"]
        assert "tracker cannot be read" in observer.get("/").text
        assert "tracker cannot be read" in observer.get("/triage").text


def test_no_answer_contains_a_tracker_token(remote_workspace: tuple[Path, FakeGitLab, FakeServer, str]) -> None:
    root, fake, _, _ = remote_workspace
    with Observer(root, "--refresh", "3600", env={"GITLAB_TOKEN": fake.token}) as observer:
        wait_for(lambda: project(observer.state(), "-1001")["queues"]["readAt"], "the first read")
        wait_for(lambda: project(observer.state(), "-1002")["queues"]["error"], "the down project's failure")
        AuditLog(root / "memory" / "audit.log").append("error", tool="task_pickup", message=f"oops {fake.token}")
        wait_for(lambda: observer.state()["auditRecords"] == 1, "the audit line")
        bodies = {path: observer.get(path).text for path in (*PAGES, *APIS, "/?fragment=1", "/triage?fragment=1")}
        assert all(fake.token not in body for body in bodies.values()), [
            p for p, b in bodies.items() if fake.token in b
        ]
        assert "oops ***" in bodies["/api/events?after=0"]  # the line is shown, its secret masked


def test_docs_name_every_page_and_endpoint() -> None:
    from devclaw.observe.app import Site

    doc = (Path(__file__).resolve().parent.parent / "docs" / "OBSERVATORY.md").read_text()
    paths = [route.path for route in Site.__new__(Site).routes() if route.path != "/static"]
    named = [path for path in paths if re.search(rf"[ `(]{re.escape(path)}[`?) ]", doc)]
    assert named == paths


REFRESH = 2.0


def test_queues_are_read_at_most_once_per_refresh_window(
    remote_workspace: tuple[Path, FakeGitLab, FakeServer, str],
) -> None:
    root, fake, _, _ = remote_workspace
    with Observer(root, "--refresh", str(REFRESH), env={"GITLAB_TOKEN": fake.token}) as observer:
        seen: dict[int, str] = {}  # trackerReads -> readAt of that read

        def reads() -> int:
            for path in PAGES:  # page views all along: none of them may add a read
                assert observer.get(path).status == 200
            queues = project(observer.state(), "-1001")["queues"]
            if queues["readAt"] is not None:
                seen.setdefault(queues["trackerReads"], queues["readAt"])
            return int(queues["trackerReads"])

        wait_for(lambda: reads() >= 4, "four reads of the api project", timeout=60)
        per_read = [r.path for r in fake.log if r.method == "GET"]
        assert len(per_read) == reads() * len(set(per_read)), per_read  # one listing a read, nothing else
        first, last = min(seen), max(seen)
        span = _seconds(seen[last]) - _seconds(seen[first])
        # Reads start at least REFRESH apart (a loaded machine only spaces them more); readAt has whole seconds.
        assert span >= (last - first) * REFRESH - 1, seen


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def test_open_hands_the_address_to_the_browser(workspace: Path, tmp_path: Path) -> None:
    # Python's webbrowser runs $BROWSER with the address: a script that writes down what it was given.
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {opened}\n')
    browser.chmod(0o755)
    with Observer(workspace, "--open", env={"BROWSER": str(browser)}) as observer:
        wait_for(lambda: opened.exists() and opened.read_text(), "the browser to be started")
        assert opened.read_text().splitlines() == [observer.url + "/"]
        assert observer.get("/").status == 200


def test_a_log_that_cannot_be_read_is_said_and_the_board_still_shows(workspace: Path) -> None:
    log = workspace / "memory" / "audit.log"
    log.unlink()
    log.mkdir()  # opening it fails, even for root
    with Observer(workspace, "--refresh", "3600") as observer:
        history = wait_for(lambda: observer.state()["history"]["error"] and observer.state()["history"], "the error")
        assert history["ready"] is False and str(log) in history["error"]
        wait_for(lambda: project(observer.state(), GROUP)["queues"]["readAt"], "the first queue read")
        page = observer.get("/").text
        assert "the audit log cannot be read" in page and "queues read" in page


def test_a_projects_own_workflow_is_what_the_board_and_triage_show(workspace: Path, tmp_path: Path) -> None:
    custom = tmp_path / "workflow.json"
    custom.write_text(json.dumps({
        "states": {"To Do": {"label": "Backlog"}, "Blocked": {}},
        "transitions": {"Testing": {"qa_refine": "Blocked"}, "Blocked": {"human": "To Do"}},
    }))  # fmt: skip
    # The demo's #3 is on "To Do", which the new workflow renames: out of the way first, then back under the
    # project's new name for it (Planning -> To Do is a person's move). #2 waits for a person on Blocked.
    devclaw(workspace, "issue", "label", GROUP, "3", "Planning", "--force")
    devclaw(workspace, "project", "edit", GROUP, "--workflow", str(custom))
    devclaw(workspace, "issue", "label", GROUP, "3", "Backlog")
    devclaw(workspace, "issue", "label", GROUP, "2", "Blocked", "--force")
    with Observer(workspace, "--refresh", "3600") as running:
        wait_for(lambda: project(running.state(), GROUP)["queues"]["readAt"], "the first queue read")
        queues = project(running.state(), GROUP)["queues"]
        assert queues["labels"]["To Do"] == "Backlog" and queues["labels"]["Blocked"] == "Blocked"
        assert [i["id"] for i in queues["issues"]["To Do"]] == [3]
        assert [i["id"] for i in queues["issues"]["Blocked"]] == [2]
        assert list(queues["counts"]) == ["To Improve", "To Test", "To Do", "Refining", "Blocked", "Planning"]
        live = running.get("/").text
        assert re.search(r"<h3>Backlog <span", live) and re.search(r"<h3>Blocked <span", live)
        triage = running.get("/triage").text
        assert "#2" in triage and "Blocked" in triage
        # Its "send on" button is the person's move the project's workflow gives Blocked: to To Do, "Backlog".
        answer = _form_post(
            running, {"csrf": _page_csrf(running), "groupId": GROUP, "issueId": "2"}, Origin=running.url
        )
        assert answer.status == 303 and "moved%20to%20Backlog" in answer.headers["location"].replace("+", "%20")
        assert devclaw(workspace, "issue", "show", GROUP, "2")["labels"] == ["Backlog"]
