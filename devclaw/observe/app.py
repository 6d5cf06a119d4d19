"""The observatory's web application: four pages, the JSON API, server-sent events, and the access rules.

Access rules, checked before any route runs:

1. With a token (``--token-env VAR``; required for any host that is not loopback) every request needs it:
   ``Authorization: Bearer TOKEN``, or the cookie a browser gets by opening ``/?token=TOKEN`` once.
   Anything else is 401.
2. Without a token the server only binds loopback, and only answers requests whose ``Host`` is a loopback
   name (a web page elsewhere cannot reach it by rebinding a DNS name to 127.0.0.1).
3. The one write (``POST /api/send-to-todo``) needs the token in the ``Authorization`` header, or a
   same-origin request carrying the page's CSRF token (a cookie alone never authorises a write).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from devclaw.commands.issue import label_issue
from devclaw.errors import DevclawError, InputError, NotFoundError, error_payload
from devclaw.observe import charts
from devclaw.observe.history import parse_ts
from devclaw.observe.live import Observatory
from devclaw.observe.views import (
    TimelineFilter,
    analytics_view,
    cost_view,
    state_view,
    timeline_view,
    triage_view,
)
from devclaw.redact import redact
from devclaw.workflow import DEFAULT, ROLES, Label

HERE = Path(__file__).parent
COOKIE = "devclaw_observe"
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]
EVENTS_LIMIT = 1000
STREAM_HEARTBEAT = 15.0
PAGES = (
    ("live", "/", "Live"),
    ("timeline", "/timeline", "Timeline"),
    ("analytics", "/analytics", "Analytics"),
    ("triage", "/triage", "Triage"),
)
#: A time since something, the one text of the Live page that changes with the clock alone: a cached
#: page has each one worked out again for every answer (and the page's script keeps them ticking).
SINCE = re.compile(r'<span data-since="([^"<>]*)">[^<]*</span>')


class TokenGate:
    """Rule 1: with a token, nothing is answered without it."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        offered = request.query_params.get("token")
        if offered is not None and _same(offered, self.token):
            # Trade the token in the address for a cookie, and drop it from the address bar and history.
            clean = request.url.remove_query_params("token")
            response: Response = RedirectResponse(str(clean.replace(scheme="", netloc="")) or "/", status_code=303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            await response(scope, receive, send)
            return
        if not (_same(_bearer(request), self.token) or _same(request.cookies.get(COOKIE), self.token)):
            response = PlainTextResponse(
                "401: this observatory needs its access token (Authorization: Bearer TOKEN, or open /?token=TOKEN once)",
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def _same(offered: str | None, expected: str | None) -> bool:
    return offered is not None and expected is not None and hmac.compare_digest(offered.encode(), expected.encode())


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _times_since(html: str, now: float) -> str:
    def since(match: re.Match[str]) -> str:
        at = parse_ts(match[1])
        return match[0] if at is None else f'<span data-since="{match[1]}">{_duration(now - at)}</span>'

    return SINCE.sub(since, html)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def _templates() -> Environment:
    # Templates are files of the package: no need to stat them on every render (auto_reload).
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]), auto_reload=False
    )
    env.filters["duration"] = _duration
    env.filters["percent"] = _percent
    env.globals.update(pages=PAGES, roles=ROLES)
    return env


@dataclass(frozen=True)
class RenderedPage:
    key: tuple[Any, ...]  # what it was rendered from: the observatory's version and the history's progress
    html: str  # rendered and redacted
    expires_at: float  # when a badge worked out from the clock ("in grace") may first change


class Site:
    """The routes, over one ``Observatory``."""

    def __init__(self, obs: Observatory, token: str | None) -> None:
        self.obs = obs
        self.token = token
        self.csrf = secrets.token_urlsafe(32)
        self.env = _templates()
        self._live_pages: dict[bool, RenderedPage] = {}  # by fragment or whole page

    def routes(self) -> list[Route | Mount]:
        return [
            Route("/", self.live),
            Route("/timeline", self.timeline),
            Route("/analytics", self.analytics),
            Route("/triage", self.triage),
            Route("/api/state", self.api_state),
            Route("/api/events", self.api_events),
            Route("/api/cost", self.api_cost),
            Route("/api/timeline", self.api_timeline),
            Route("/api/analytics", self.api_analytics),
            Route("/api/stream", self.stream),
            Route("/api/send-to-todo", self.send_to_todo, methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]

    # --- pages --------------------------------------------------------------------------------

    def page(self, request: Request, name: str, *, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.render(request.query_params.get("fragment") == "1", name, **context)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def render(self, fragment: bool, name: str, **context: Any) -> str:
        template = self.env.get_template("content.html" if fragment else "page.html")
        html = template.render(
            page=name,
            body=f"{name}.html",
            csrf=self.csrf,
            version=self.obs.version,
            history=self.obs.history_progress(),
            **context,
        )
        return redact(html)

    async def live(self, request: Request) -> Response:
        # The page most looked at, and the costliest to render (every project's card): rendered once per
        # change of the observatory (projects.json, the log, a queue read), not once per view.
        fragment, now = request.query_params.get("fragment") == "1", time.time()
        key = (self.obs.version, *self.obs.history_progress().values())
        rendered = self._live_pages.get(fragment)
        if rendered is None or rendered.key != key or now >= rendered.expires_at:
            state = state_view(self.obs, now)
            html = self.render(fragment, "live", state=state)
            rendered = self._live_pages[fragment] = RenderedPage(key, html, self._grace_ends(state, now))
        return HTMLResponse(_times_since(rendered.html, now), headers={"Cache-Control": "no-store"})

    def _grace_ends(self, state: dict[str, Any], now: float) -> float:
        grace = self.obs.state.health.grace_minutes * 60
        ends = [
            now + grace - worker["elapsedSeconds"]
            for project in state["projects"]
            for worker in project["workers"]
            if worker["inGrace"]
        ]
        return min(ends, default=math.inf)

    async def timeline(self, request: Request) -> Response:
        try:
            chosen = _timeline_filter(request)
        except InputError as exc:
            return self.page(
                request, "timeline", error=exc.message, chosen=TimelineFilter(), data=None, query={}, status=400
            )
        query = {key: value for key, value in request.query_params.items() if key != "fragment"}
        return self.page(
            request, "timeline", chosen=chosen, data=timeline_view(self.obs, chosen), query=query, error=None
        )

    async def analytics(self, request: Request) -> Response:
        data, cost = analytics_view(self.obs), cost_view(self.obs)
        return self.page(request, "analytics", data=data, cost=cost, charts=_analytics_charts(data, cost))

    async def triage(self, request: Request) -> Response:
        notice = request.query_params.get("notice")
        return self.page(
            request,
            "triage",
            data=triage_view(self.obs),
            notice=notice,
            failed=request.query_params.get("failed") == "1",
        )

    # --- API ----------------------------------------------------------------------------------

    async def api_state(self, request: Request) -> Response:
        return _json(state_view(self.obs))

    async def api_events(self, request: Request) -> Response:
        try:
            after = int(request.query_params.get("after", "0"))
            limit = min(int(request.query_params.get("limit", str(EVENTS_LIMIT))), EVENTS_LIMIT)
        except ValueError:
            return _error(InputError("after and limit must be whole numbers (after: the last seq you have)"), 400)
        if after < 0 or limit < 1:
            return _error(InputError("after must be 0 or more and limit at least 1"), 400)
        history = self.obs.history
        events = history.events_after(after, limit)
        oldest = history.events[0][0] if history.events else history.seq + 1
        return _json(
            {
                "events": [{"seq": seq, **record} for seq, record in events],
                "last": events[-1][0] if events else min(after, history.seq),
                "latest": history.seq,
                "oldestAvailable": oldest,
                "missed": max(0, oldest - after - 1) if history.events else 0,
            }
        )

    async def api_cost(self, request: Request) -> Response:
        return _json(cost_view(self.obs))

    async def api_timeline(self, request: Request) -> Response:
        try:
            return _json(timeline_view(self.obs, _timeline_filter(request)))
        except InputError as exc:
            return _error(exc, 400)

    async def api_analytics(self, request: Request) -> Response:
        return _json(analytics_view(self.obs))

    async def stream(self, request: Request) -> Response:
        async def changes() -> AsyncIterator[dict[str, str]]:
            seen = self.obs.version
            yield {"event": "hello", "data": str(seen), "id": str(seen)}
            while True:
                version = await self.obs.wait_for_change(seen, STREAM_HEARTBEAT)
                if version > seen:
                    seen = version
                    yield {"event": "change", "data": str(seen), "id": str(seen)}

        return EventSourceResponse(changes(), ping=STREAM_HEARTBEAT, headers={"Cache-Control": "no-store"})

    async def send_to_todo(self, request: Request) -> Response:
        # An HTML form posts urlencoded fields (parsed here: Starlette's form parser needs one more package).
        is_form = request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
        fields: dict[str, Any] = (
            dict(parse_qsl((await request.body()).decode(errors="replace"))) if is_form else await _json_body(request)
        )
        if not self._may_write(request, fields):
            return _error(
                InputError("This action needs the access token, or a same-origin request with the page's CSRF token"),
                403,
            )
        try:
            group_id, issue_id = _target(fields)
            # The person's move from where the issue waits (To Do from Planning or Refining; a project's own
            # waiting state moves where its workflow says).
            moved = await asyncio.to_thread(label_issue, self.obs.ws, group_id, issue_id, None)
        except DevclawError as exc:
            if is_form:
                return _back_to_triage(error_payload(exc)["message"], failed=True)
            return _error(exc, 404 if isinstance(exc, NotFoundError) else 400 if isinstance(exc, InputError) else 409)
        snapshot, project = self.obs.board.snapshots.get(group_id), self.obs.state.projects.get(group_id)
        workflow = project.effective_workflow() if project is not None else DEFAULT
        target = workflow.state_of(moved["labels"]) or Label.TO_DO
        if snapshot is not None:
            snapshot.move(issue_id, target, workflow)
        self.obs.request_read(group_id)
        self.obs.bump()
        if is_form:
            return _back_to_triage(f"#{issue_id} moved to {workflow.label(target)}", failed=False)
        return _json({"success": True, "issue": moved})

    def _may_write(self, request: Request, fields: dict[str, Any]) -> bool:
        if self.token is not None and _same(_bearer(request), self.token):
            return True
        offered = fields.get("csrf") or request.headers.get("x-csrf-token")
        return _same_origin(request) and _same(offered if isinstance(offered, str) else None, self.csrf)


def _json(data: Any, status_code: int = 200) -> Response:
    """Every API answer: JSON with the value of every secret-looking variable of this process masked
    (audit lines are already masked when written; this holds even for a line written by something else)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return Response(
        redact(text), status_code=status_code, media_type="application/json", headers={"Cache-Control": "no-store"}
    )


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    host = request.headers.get("host")
    if origin is None:
        return request.headers.get("sec-fetch-site") == "same-origin"
    return host is not None and origin in (f"http://{host}", f"https://{host}")


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _target(fields: dict[str, Any]) -> tuple[str, int]:
    group_id, issue = fields.get("groupId"), fields.get("issueId")
    if not isinstance(group_id, str) or not group_id:
        raise InputError("groupId is required (the project's group id)")
    try:
        return group_id, int(str(issue))
    except ValueError:
        raise InputError(f"issueId must be a number, got {issue!r}") from None


def _back_to_triage(message: str, *, failed: bool) -> Response:
    query = urlencode({"notice": redact(message), **({"failed": "1"} if failed else {})})
    return RedirectResponse(f"/triage?{query}", status_code=303)


def _error(exc: DevclawError, status: int) -> Response:
    return _json({"success": False, "error": error_payload(exc)}, status_code=status)


def _timeline_filter(request: Request) -> TimelineFilter:
    params = request.query_params
    role = params.get("role") or None
    if role is not None and role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return TimelineFilter(
        project=params.get("project") or None,
        role=role,
        since=_day(params.get("since"), "since"),
        until=_day(params.get("until"), "until"),
    )


def _day(text: str | None, name: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{name} must be a date like 2026-11-20, got {text!r}") from None


def _analytics_charts(data: dict[str, Any], cost: dict[str, Any]) -> dict[str, str]:
    days = data["perDay"]
    labels = [row["day"] for row in days]
    found = {
        "throughput": charts.bars(
            "Issues done and QA verdicts per day",
            labels,
            {
                "done": [row["done"] for row in days],
                "QA fail": [row["qaFail"] for row in days],
                "QA refine": [row["qaRefine"] for row in days],
                "loop brakes": [row["loopBrakes"] for row in days],
            },
        ),
        "cycle": charts.line(
            "Median cycle time per day (minutes)",
            labels,
            {
                "median cycle time": [
                    None if row["medianCycleSeconds"] is None else round(row["medianCycleSeconds"] / 60, 1)
                    for row in days
                ],
            },
        ),
    }
    if cost["recorded"]:
        found["costByModel"] = charts.pie("Cost by model (USD)", {row["key"]: row["cost"] for row in cost["byModel"]})
        found["tokensByRole"] = charts.bars(
            "Tokens by role",
            [row["key"] for row in cost["byRole"]],
            {
                "input": [row["input"] for row in cost["byRole"]],
                "output": [row["output"] for row in cost["byRole"]],
                "cache read": [row["cacheRead"] for row in cost["byRole"]],
                "cache write": [row["cacheWrite"] for row in cost["byRole"]],
            },
            stacked=True,
        )
        found["costByDay"] = charts.bars(
            "Cost per day (USD)",
            [row["key"] for row in cost["byDay"]],
            {"cost": [row["cost"] for row in cost["byDay"]]},
        )
    return found


async def _internal_error(request: Request, exc: Exception) -> Response:
    return PlainTextResponse(redact(f"500: internal error ({type(exc).__name__}) in devclaw observe"), status_code=500)


def build_app(obs: Observatory, *, token: str | None, loopback: bool) -> Starlette:
    site = Site(obs, token)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        obs.start()
        yield
        await obs.stop()

    middleware = [Middleware(TokenGate, token=token)]
    if token is None and loopback:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_NAMES))
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {Exception: _internal_error}
    return Starlette(routes=site.routes(), middleware=middleware, lifespan=lifespan, exception_handlers=handlers)
