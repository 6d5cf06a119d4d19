"""``devclaw observe``: the live web dashboard of one workspace (see docs/OBSERVATORY.md)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import socket
import webbrowser
from typing import Any

from devclaw.errors import ConfigError, InputError
from devclaw.workspace import Workspace

DEFAULT_PORT = 8765
DEFAULT_REFRESH = 30.0
MIN_TOKEN_LENGTH = 16


def register(sub: Any) -> None:
    observe = sub.add_parser("observe", help="a live web dashboard: workers, queues, timelines, cost, triage")
    observe.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other needs --token-env)"
    )
    observe.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)"
    )
    observe.add_argument("--token-env", metavar="VAR", help="environment variable holding the access token")
    observe.add_argument(
        "--refresh",
        type=float,
        default=DEFAULT_REFRESH,
        metavar="SECONDS",
        help=f"read each project's queues from its tracker at most this often (default {DEFAULT_REFRESH:g})",
    )
    observe.add_argument("--open", action="store_true", help="open the dashboard in a browser")
    observe.set_defaults(handler=run_observe)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def access_token(host: str, token_env: str | None) -> str | None:
    """The token every request must carry, or None on loopback without ``--token-env``."""
    if token_env is None:
        if not is_loopback(host):
            raise ConfigError(
                f"Refusing to serve on {host} without an access token: anyone who can reach it could read "
                "every project. Put a long random token in a variable and pass --token-env VAR "
                "(e.g. export DEVCLAW_OBSERVE_TOKEN=$(openssl rand -hex 24))."
            )
        return None
    token = os.environ.get(token_env, "")
    if len(token) < MIN_TOKEN_LENGTH:
        what = "is not set" if not token else f"is shorter than {MIN_TOKEN_LENGTH} characters"
        raise ConfigError(f"--token-env {token_env}: the variable {what}; set it to a long random token")
    return token


def run_observe(ws: Workspace, args: argparse.Namespace) -> int:
    ws.require_existing()
    if not args.refresh > 0:
        raise InputError(f"--refresh must be a positive number of seconds, got {args.refresh:g}")
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be between 0 and 65535, got {args.port}")
    token = access_token(args.host, args.token_env)
    sock = _listen(args.host, args.port)
    asyncio.run(_serve(ws, sock, args, token))
    return 0


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise ConfigError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


async def _serve(ws: Workspace, sock: socket.socket, args: argparse.Namespace, token: str | None) -> None:
    import uvicorn

    from devclaw.observe.app import build_app
    from devclaw.observe.live import Observatory, Settings

    obs = Observatory(ws, Settings(refresh=args.refresh))
    obs.load_state()  # the log is read in the background, once the server answers
    app = build_app(obs, token=token, loopback=is_loopback(args.host))
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, timeout_graceful_shutdown=2, lifespan="on", server_header=False
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    if server.started:
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        url = f"http://{shown}:{port}/"
        mib = obs.history_total_bytes / 2**20
        print(f"devclaw observe: {url} (workspace {ws.root}; reading {mib:.1f} MiB of audit log)", flush=True)
        if args.open:
            webbrowser.open(url)
    await serving
