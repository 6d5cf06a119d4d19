"""``devclaw doctor``: real files, real git checkouts, the embedded tracker and the GitLab fake."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from devclaw.cli import main
from devclaw.workspace import Workspace
from tests.conftest import GROUP, OTHER_GROUP, add_local_project
from tests.fakes import GITLAB_URL, FakeGitLab, mount_responses


def doctor(ws: Workspace, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["--workspace", str(ws.root), "doctor", *extra])
    return code, capsys.readouterr().out


def findings(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code, out = doctor(ws, capsys, "--json")
    return code, json.loads(out)


def git_checkout(path: Path, origin: str | None = None) -> str:
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    if origin:
        subprocess.run(["git", "-C", str(path), "remote", "add", "origin", origin], check=True)
    return str(path)


def test_a_healthy_workspace(ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_local_project(ws, repo=git_checkout(tmp_path / "webapp"))
    code, out = doctor(ws, capsys)
    assert code == 0
    assert out.splitlines()[-1] == "everything is fine"
    assert "  ok    labels        all 8 workflow labels present" in out
    assert f"webapp ({GROUP})" in out


def test_warnings_do_not_fail(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    add_local_project(ws)
    code, data = findings(ws, capsys)
    assert code == 0 and data["ok"] is True
    assert [(f["check"], f["status"]) for f in data["findings"]] == [
        ("projects.json", "ok"), ("audit log", "ok"), ("work loop", "ok"), ("audit lines", "ok"), ("tracker", "ok"),
        ("labels", "ok"), ("repo", "warning"),
    ]  # fmt: skip


def test_an_unreadable_projects_json(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    ws.store.path.write_text('{"version": 1, "projects": {"x": {}}')
    code, out = doctor(ws, capsys)
    assert code == 1
    assert "ERROR projects.json" in out and "devclaw state rebuild" in out
    assert out.splitlines()[-1] == "1 error(s), 0 warning(s)"


def test_audit_log_not_writable(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    add_local_project(ws)
    ws.audit.path.unlink()
    ws.audit.path.mkdir()  # even root cannot append to a directory
    code, data = findings(ws, capsys)
    assert code == 1
    (audit,) = [f for f in data["findings"] if f["check"] == "audit log"]
    assert audit["status"] == "error" and "is not writable" in audit["message"]


def test_missing_labels_are_created_and_reported(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    add_local_project(ws)
    import sqlite3

    with sqlite3.connect(ws.memory / "tracker.sqlite3") as conn:
        conn.execute("DELETE FROM labels WHERE name IN ('Refining', 'Planning')")
    code, data = findings(ws, capsys)
    (labels,) = [f for f in data["findings"] if f["check"] == "labels"]
    assert code == 0 and labels == {"scope": GROUP, "check": "labels", "status": "warning",
                                    "message": "2 were missing and were created: Planning, Refining"}  # fmt: skip
    assert [f["status"] for f in findings(ws, capsys)[1]["findings"] if f["check"] == "labels"] == ["ok"]


def remote_project(ws: Workspace, repo: str, token_env: str = "FAKE_GITLAB_TOKEN") -> None:
    tracker = {"provider": "gitlab", "path": "acme/webapp", "baseUrl": GITLAB_URL, "tokenEnv": token_env}
    projects = {OTHER_GROUP: {"name": "webapp", "repo": repo, "tracker": tracker}}
    ws.store.path.write_text(json.dumps({"version": 1, "projects": projects}))


def test_gitlab_project_with_the_right_remote(
    ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeGitLab("acme/webapp")
    monkeypatch.setenv("FAKE_GITLAB_TOKEN", fake.token)
    remote_project(ws, git_checkout(tmp_path / "repo", "git@gitlab.example:acme/webapp.git"))
    with mount_responses(fake, GITLAB_URL):
        code, data = findings(ws, capsys)
    statuses = {f["check"]: (f["status"], f["message"]) for f in data["findings"]}
    assert code == 0
    assert statuses["tracker"] == ("ok", "gitlab acme/webapp: reachable, token accepted")
    assert statuses["labels"][0] == "warning" and len(fake.project.labels) == 8
    assert statuses["repo"] == ("ok", f"{tmp_path / 'repo'} is a git checkout of acme/webapp")


def test_gitlab_refused_token_and_wrong_remote(
    ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeGitLab("acme/webapp")
    monkeypatch.setenv("FAKE_GITLAB_TOKEN", "glpat-wrong-token-value")
    remote_project(ws, git_checkout(tmp_path / "repo", "https://gitlab.example/acme/other.git"))
    with mount_responses(fake, GITLAB_URL):
        code, out = doctor(ws, capsys)
    assert code == 1
    assert "ERROR tracker" in out and "glpat-wrong-token-value" not in out
    assert "ERROR repo          origin of" in out and "is acme/other, not the tracker's acme/webapp" in out
    assert not fake.project.labels  # a refused token creates nothing


def test_repo_that_is_not_a_checkout(ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "plain").mkdir()
    add_local_project(ws, repo=str(tmp_path / "plain"))
    code, data = findings(ws, capsys)
    assert code == 1 and data["findings"][-1]["message"] == f"{tmp_path / 'plain'} is not a git checkout"


def test_missing_token_variable(ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    remote_project(ws, "", token_env="NO_SUCH_VARIABLE")
    code, data = findings(ws, capsys)
    (tracker,) = [f for f in data["findings"] if f["check"] == "tracker"]
    assert code == 1 and "NO_SUCH_VARIABLE" in tracker["message"]


def test_torn_audit_lines_shared_trackers_and_pending_work_are_reported(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    add_local_project(ws)
    with ws.audit.path.open("ab") as log:
        log.write(b'{"ts": "2026-12-01T00:00:00Z", "event": "task_pi')  # a line cut short by a full disk
    data = json.loads(ws.store.path.read_text())
    twin = {**data["projects"][GROUP], "name": "twin"}
    data["projects"]["-100555"] = twin  # by hand: project add refuses a second project on one tracker
    data["projects"][GROUP]["auditGaps"] = [{"event": "task_pickup", "issue": 1}]
    ws.store.path.write_text(json.dumps(data))
    code, report = findings(ws, capsys)
    by_check = {(f["scope"], f["check"]): f for f in report["findings"]}
    assert by_check[("workspace", "audit lines")]["status"] == "warning"
    assert "1 torn or unreadable line" in by_check[("workspace", "audit lines")]["message"]
    assert by_check[(GROUP, "audit gap")]["status"] == "warning"
    shared = [f for f in report["findings"] if f["check"] == "tracker" and f["status"] == "error"]
    assert len(shared) == 1 and "also the tracker of project" in shared[0]["message"] and code == 1
