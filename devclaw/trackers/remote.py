"""What the GitLab and GitHub trackers share: path detection, the token, retries, and error messages.

One copy of each, so both providers behave the same way:

- ``derive_path`` reads ``git remote get-url origin`` of the project's repo (no shell, bounded time).
- ``Secret`` holds a token; it never shows in a repr, an f-string or a log line.
- ``HttpPolicy`` is the timeout and retry budget of every request. Both libraries talk through
  ``requests``, so one urllib3 ``Retry`` (``TransientRetry``) mounted under each of them does all the
  retrying, and the libraries' own retry loops are switched off.
- ``Endpoint.http_error`` / ``Endpoint.unreachable`` turn a failure into our error with a message that
  names the operation, the project and the HTTP status, and says what to fix.
"""

from __future__ import annotations

import email.utils
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Self
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError, ResponseError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from devclaw.errors import ConfigError, NotFoundError, TrackerAuthError, TrackerError
from devclaw.redact import remember_secret
from devclaw.workflow import DEFAULT, Workflow

if TYPE_CHECKING:
    from devclaw.state import Project

GIT_TIMEOUT = 10.0
MASK = "***"

# Requests that change nothing when sent twice: reads, and label/state writes that set a value.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
# Statuses a server sends when it refused a request without acting on it: safe to resend, even a POST.
# GitHub's secondary rate limit is a 403 with Retry-After; a 403 without it is a permission problem.
REFUSED_UNPROCESSED = frozenset({429})
REFUSED_WITH_RETRY_AFTER = frozenset({403, 429})


class Secret:
    """A token. ``str()`` and ``repr()`` show a mask; only ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        """``text`` with the token masked: server messages and library errors may echo request data."""
        return text.replace(self._value, MASK) if self._value else text

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    __str__ = __repr__


def read_token(environ: Mapping[str, str], variable: str, *, provider: str, scopes: str) -> Secret:
    value = environ.get(variable, "").strip()
    if not value:
        raise ConfigError(
            f"{provider} token missing: set the environment variable {variable} to a token with {scopes} "
            f"(or point tracker.tokenEnv in projects.json at the variable that holds it)"
        )
    remember_secret(value)  # tokenEnv may have any name: its value is masked like a *_TOKEN's
    return Secret(value)


# --- path detection --------------------------------------------------------------------------------

_SCP_LIKE = re.compile(r"^(?:[^@/\s]+@)?(?P<host>[^:/\s]+):(?!//)(?P<path>.+)$")


def origin_url(repo: str) -> str:
    """The URL of the ``origin`` remote of the git checkout at ``repo``."""
    try:
        done = subprocess.run(
            ["git", "-C", repo, "remote", "get-url", "origin"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"Cannot run git to read the origin remote of {repo}: {exc}") from exc
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ConfigError(
            f"Cannot read the origin remote of {repo} ({strip_credentials(reason[0])}); "
            "set tracker.path in projects.json"
        )
    return done.stdout.strip()


def strip_credentials(text: str) -> str:
    """``text`` without ``user:password@`` in any URL it contains (remotes may embed a token)."""
    return re.sub(r"(?<=://)[^/@\s]+@", "", text)


def path_from_remote(url: str, *, url_prefix: str = "") -> str:
    """``group/sub/project`` from an ssh, scp-like or http(s) remote URL, without ``.git``.

    ``url_prefix`` is the path of a self-hosted instance under a sub-folder (``/gitlab``), dropped
    from the front of the remote's path.
    """
    scp = _SCP_LIKE.match(url) if "://" not in url else None
    path = scp.group("path") if scp else urlsplit(url).path
    path = path.strip("/")
    prefix = url_prefix.strip("/")
    if prefix and path.startswith(prefix + "/"):
        path = path[len(prefix) + 1 :]
    return path.removesuffix(".git").strip("/")


def derive_path(repo: str, *, provider: str, url_prefix: str = "", segments: int | None = None) -> str:
    """The tracker path of ``repo`` from its origin remote; ``segments`` pins the depth (GitHub: 2)."""
    if not repo:
        raise ConfigError(f"{provider} tracker needs tracker.path in projects.json (the project has no repo)")
    url = origin_url(repo)
    path = path_from_remote(url, url_prefix=url_prefix)
    parts = [part for part in path.split("/") if part]
    if len(parts) < 2 or (segments is not None and len(parts) != segments):
        shape = "owner/name" if segments == 2 else "group/project"
        raise ConfigError(
            f"Cannot derive a {provider} {shape} path from the origin remote of {repo} "
            f"({strip_credentials(url)}); set tracker.path in projects.json"
        )
    return "/".join(parts)


# --- retries and timeouts --------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpPolicy:
    """The time budget of one request and of its retries."""

    #: Seconds to connect and seconds to wait for the reply, for every request.
    timeout: float = 10.0
    #: Resends after a transient failure (so ``retries + 1`` attempts at most).
    retries: int = 3
    #: The second retry waits ``backoff`` seconds, each later one twice as long, up to ``backoff_max``.
    backoff: float = 0.25
    backoff_max: float = 2.0
    #: A server asking us to wait longer than this (Retry-After, or a rate limit reset) fails at once:
    #: a tool call that sleeps for minutes looks dead to the agent waiting on it.
    retry_after_max: int = 10

    def retry(self) -> Retry:
        return TransientRetry(
            total=self.retries,
            connect=self.retries,
            read=self.retries,
            status=self.retries,
            other=0,
            redirect=0,
            allowed_methods=IDEMPOTENT_METHODS,
            status_forcelist=TRANSIENT_STATUSES,
            backoff_factor=self.backoff,
            backoff_max=self.backoff_max,
            retry_after_max=self.retry_after_max,
            raise_on_status=False,  # the last reply reaches the library, which raises with its status
            raise_on_redirect=False,
            respect_retry_after_header=True,
        )


DEFAULT_POLICY = HttpPolicy()


class _NoNetrc(requests.auth.AuthBase):
    """Leaves requests alone. Without an ``auth``, requests reads ``~/.netrc`` and may add Basic auth."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


def http_session(
    base_url: str, policy: HttpPolicy, *, on_failure: Callable[[requests.Response], None] | None = None
) -> requests.Session:
    """A session to ``base_url`` that retries by ``policy``; ``on_failure`` sees every reply of 400 or more.

    The proxy (``HTTPS_PROXY``, ``NO_PROXY``...) and CA bundle (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``)
    settings of the environment are read once, here: left to requests, they are looked up again on
    every request, two scans of the whole environment each time (a third of a call's CPU in serve).
    """
    session = requests.Session()
    session.auth = _NoNetrc()
    session.trust_env = False
    session.proxies.update(requests.utils.get_environ_proxies(base_url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    adapter = HTTPAdapter(max_retries=policy.retry())
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if on_failure is not None:
        report = on_failure

        def hook(reply: requests.Response, *args: Any, **kwargs: Any) -> None:
            if reply.status_code >= 400:
                report(reply)

        session.hooks["response"].append(hook)
    return session


def seconds_to_wait(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """How long the server asked us to wait: ``Retry-After``, else an exhausted rate limit's reset."""
    now = time.time() if now is None else now
    retry_after = headers.get("Retry-After")
    if retry_after:
        if retry_after.strip().isdigit():
            return float(retry_after.strip())
        parsed = email.utils.parsedate_tz(retry_after)
        return max(0.0, email.utils.mktime_tz(parsed) - now) if parsed else None
    reset = rate_limit_reset(headers)
    return max(0.0, reset - now) if reset is not None else None


def rate_limit_reset(headers: Mapping[str, str]) -> float | None:
    """The epoch second an exhausted rate limit resets (GitHub ``X-RateLimit-*``, GitLab ``RateLimit-*``)."""
    for prefix in ("X-RateLimit-", "RateLimit-"):
        if headers.get(prefix + "Remaining") == "0" and (headers.get(prefix + "Reset") or "").isdigit():
            return float(headers[prefix + "Reset"])
    return None


class TransientRetry(Retry):
    """urllib3's ``Retry`` with two rules added.

    1. A request the server refused unprocessed (429, or 403 with Retry-After) is resent whatever its
       method: nothing was created, so a POST cannot duplicate. Any other failure of a POST after it
       may have reached the server (a timeout, a reset, a 502) is not resent.
    2. When the server asks for a wait longer than ``retry_after_max``, stop at once and hand its reply
       to the caller, which reports when the limit resets.
    """

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        refused = status_code in REFUSED_UNPROCESSED or (has_retry_after and status_code in REFUSED_WITH_RETRY_AFTER)
        if refused:
            return bool(self.total)
        return super().is_retry(method, status_code, has_retry_after)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> Self:
        if response is not None:
            wait = seconds_to_wait(response.headers)
            if wait is not None and wait > self.retry_after_max:
                reason = ResponseError(f"server asked to wait {wait:.0f} s")
                raise MaxRetryError(_pool, url or "", reason)
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        wait = seconds_to_wait(response.headers)
        return None if wait is None else min(wait, self.retry_after_max)


# --- errors --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One project on one server: everything an error message names. Holds no token."""

    provider: str  # "GitLab" / "GitHub"
    path: str
    base_url: str
    token_env: str
    scopes: str  # what the token needs, said when the server refuses it

    def project_not_found(self) -> NotFoundError:
        # Both servers answer 404, not 403, for a private project the token cannot see.
        return NotFoundError(
            f"project {self.path} not found on {self.base_url} (or the token in {self.token_env} cannot see it)"
        )

    def issue_not_found(self, issue_id: int) -> NotFoundError:
        return NotFoundError(f"issue #{issue_id} not found in {self.path}")

    def http_error(self, operation: str, status: int | None, headers: Mapping[str, str], detail: str) -> TrackerError:
        """The error for a reply with ``status`` (after retries) to ``operation`` on this project."""
        where = f"{operation} in {self.path}"
        headers = requests.structures.CaseInsensitiveDict(headers)  # PyGithub lower-cases header names
        reset = rate_limit_reset(headers)
        wait = seconds_to_wait(headers)
        if status in (403, 429) and (reset is not None or wait is not None or "rate limit" in detail.lower()):
            return TrackerError(
                f"{self.provider} rate limit exhausted while {where}; {_reset_text(reset, wait)}", status=status
            )
        if status in (401, 403):
            return TrackerAuthError(
                f"{self.provider} refused the token in {self.token_env} (HTTP {status}) while {where}: "
                f"fix {self.token_env} — it needs {self.scopes}" + (f" ({detail})" if detail else ""),
                status=status,
            )
        # No status: the reply could not be used at all (not JSON, a redirected write); the detail says why.
        reply = f"HTTP {status}" if status is not None else "unusable reply"
        return TrackerError(
            f"{self.provider} failed while {where}: {reply}" + (f" {detail}" if detail else ""), status=status
        )

    def unreachable(self, operation: str, exc: Exception, *, resent: bool) -> TrackerError:
        """The error for a request that got no reply; ``resent`` says whether it was retried."""
        chain = _chain(exc)
        where = f"while {operation} in {self.path}"
        if any(isinstance(link, NewConnectionError) for link in chain):
            # Nothing was sent, so even a POST was retried: say so, not "may have reached".
            return TrackerError(f"Cannot connect to {self.provider} at {self.base_url} {where}")
        timed_out = any(isinstance(link, Urllib3Timeout | requests.Timeout | TimeoutError) for link in chain)
        message = f"{self.provider} at {self.base_url} {'timed out' if timed_out else 'dropped the connection'} {where}"
        if not resent:
            message += (
                "; the request may have reached the server and was not resent, to avoid a duplicate: "
                "check before trying again"
            )
        return TrackerError(message)


def short_detail(text: str, limit: int = 200) -> str:
    """A server's error text on one line, cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reset_text(reset: float | None, wait: float | None) -> str:
    if reset is not None:
        at = datetime.fromtimestamp(reset, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"it resets at {at}"
    if wait is not None:
        at = datetime.fromtimestamp(time.time() + wait, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"retry after {wait:.0f} s (at {at})"
    return "retry later"


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: requests nests urllib3's errors in ``args`` and ``reason``."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        reason = getattr(current, "reason", None)
        nested = current.args[0] if current.args and isinstance(current.args[0], BaseException) else None
        current = reason if isinstance(reason, BaseException) else nested or current.__cause__ or current.__context__
    return chain


class RemoteTracker:
    """What the GitLab and GitHub trackers share: a provider's constants, the settings a project gives
    (URL, token variable, path), and the error texts. Each subclass builds its client in ``_connect``
    and says in ``_path_from_repo`` how a git remote names its projects."""

    replies_can_be_lost = True

    PROVIDER: ClassVar[str]
    DEFAULT_URL: ClassVar[str]
    DEFAULT_TOKEN_ENV: ClassVar[str]
    SCOPES: ClassVar[str]

    def __init__(
        self,
        path: str,
        *,
        token: Secret,
        token_env: str | None = None,
        base_url: str | None = None,
        policy: HttpPolicy = DEFAULT_POLICY,
        workflow: Workflow = DEFAULT,
    ) -> None:
        self.path = path
        self.workflow = workflow
        self.base_url = (base_url or self.DEFAULT_URL).rstrip("/")
        token_env = token_env or self.DEFAULT_TOKEN_ENV
        self.endpoint = Endpoint(self.PROVIDER, path, self.base_url, token_env, self.SCOPES)
        self._token = token
        self._connect(policy)

    def _connect(self, policy: HttpPolicy) -> None:
        raise NotImplementedError

    @classmethod
    def _path_from_repo(cls, repo: str, base_url: str) -> str:
        raise NotImplementedError

    @classmethod
    def from_project(
        cls, project: Project, *, environ: Mapping[str, str] = os.environ, policy: HttpPolicy = DEFAULT_POLICY
    ) -> Self:
        """The tracker of a project in projects.json; reads the token variable, makes no request."""
        config = project.tracker
        base_url = (config.base_url or cls.DEFAULT_URL).rstrip("/")
        token_env = config.token_env or cls.DEFAULT_TOKEN_ENV
        token = read_token(environ, token_env, provider=cls.PROVIDER, scopes=cls.SCOPES)
        path = config.path or cls._path_from_repo(project.repo, base_url)
        workflow = project.effective_workflow()
        return cls(path, token=token, token_env=token_env, base_url=base_url, policy=policy, workflow=workflow)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, base_url={self.base_url!r})"
