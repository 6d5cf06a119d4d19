"""A scripted OpenAI-compatible model on loopback: it calls the tools it is told to, in order, then stops.

Each ``POST /v1/chat/completions`` that offers tools gets scripted tool call number N, where N is the
number of tool results already in the conversation; when the script is used up it answers with a
plain sentence. Requests without tools (titles, summaries) get a plain sentence too. Every request body
is kept in ``requests`` for the test to inspect. Streaming (SSE) and plain JSON answers are both served.

A ``responder`` (given the request body, returns the reply text or None) answers first when set: the work
loop's tests script worker replies with it. ``usage`` is what every answer reports. A ``Barrier`` lets a
responder prove that N worker runs are in flight at once: it holds N requests until all N have arrived.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FINAL_ANSWER = "I checked the queue and picked up the task for the developer."
DEFAULT_USAGE: dict[str, Any] = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


class Barrier:
    """Holds the first ``parties`` requests that call ``wait`` until all of them have arrived, then lets them
    go together; ``released`` is set at that moment, so N runs in flight at once is shown by it, not by timing.
    Each held request then waits for ``hold`` too (given by ``hold=True``, let go by ``hold.set()``), so a test can
    look at the steady state before any of them completes. Requests after the parties pass at once; one that
    arrives while the parties are held is in ``late_while_held``: a run started beyond the caps."""

    def __init__(self, parties: int, *, hold: bool = False, timeout: float = 300.0) -> None:
        self.parties = parties
        self.timeout = timeout
        self.arrivals: list[str] = []  # what each party said it is, in arrival order
        self.late: list[str] = []  # arrivals after the parties
        self.late_while_held: list[str] = []
        self.released = threading.Event()
        self.hold = threading.Event()
        if not hold:
            self.hold.set()
        self._ready = threading.Condition()

    def wait(self, who: str) -> bool:
        """Block until ``parties`` requests arrived (then for ``hold``); False at once for a late one."""
        with self._ready:
            if len(self.arrivals) >= self.parties:
                self.late.append(who)
                if not self.hold.is_set():
                    self.late_while_held.append(who)
                return False
            self.arrivals.append(who)
            if len(self.arrivals) == self.parties:
                self.released.set()
                self._ready.notify_all()
            elif not self._ready.wait_for(self.released.is_set, timeout=self.timeout):
                raise TimeoutError(f"only {len(self.arrivals)} of {self.parties} requests arrived: {self.arrivals}")
        if not self.hold.wait(timeout=self.timeout):
            raise TimeoutError("the barrier's hold was never let go")
        return True


class FakeModel:
    def __init__(
        self,
        script: list[tuple[str, dict[str, Any]]],
        *,
        responder: Callable[[dict[str, Any]], str | None] | None = None,
        usage: dict[str, Any] | None = None,
    ) -> None:
        self.script = script  # [(tool name, arguments)]
        self.responder = responder
        self.usage = usage or DEFAULT_USAGE
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        """The assistant message for one request: the next tool call, or the final sentence."""
        with self._lock:
            self.requests.append(body)
        if self.responder is not None:
            text = self.responder(body)
            if text is not None:
                return {"role": "assistant", "content": text}
        offered = {tool["function"]["name"] for tool in body.get("tools") or []}
        # The host renames tool call ids, so progress is counted in tool results, not matched by id.
        step = sum(1 for message in body.get("messages", []) if message.get("role") == "tool")
        if not offered or step >= len(self.script):
            return {"role": "assistant", "content": FINAL_ANSWER}
        name, arguments = self.script[step]
        if name not in offered:
            return {"role": "assistant", "content": f"The tool {name} is not available to me."}
        call = {"id": f"call{step}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
        return {"role": "assistant", "content": None, "tool_calls": [call]}

    def tool_results(self) -> list[tuple[str, str]]:
        """``(tool name, result text)`` of every tool result in the last conversation, in order."""
        if not self.requests:
            return []
        messages = self.requests[-1].get("messages", [])
        names = {
            call["id"]: call["function"]["name"] for message in messages for call in message.get("tool_calls") or []
        }
        return [
            (names.get(message.get("tool_call_id"), "?"), _text(message.get("content")))
            for message in messages
            if message.get("role") == "tool"
        ]


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def _handler(model: FakeModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send_json({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
            else:
                self.send_error(404)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self.send_error(404)
                return
            message = model.reply(body)
            if body.get("stream"):
                self._send_stream(message)
            else:
                finish = "tool_calls" if message.get("tool_calls") else "stop"
                self._send_json(_completion(message, finish, model.usage))

        def _send_json(self, data: dict[str, Any]) -> None:
            payload = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _send_stream(self, message: dict[str, Any]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            delta: dict[str, Any] = {"role": "assistant"}
            if message.get("tool_calls"):
                delta["tool_calls"] = [{"index": 0, **call} for call in message["tool_calls"]]
                finish = "tool_calls"
            else:
                delta["content"] = message["content"]
                finish = "stop"
            try:
                for chunk in (_chunk(delta, None), _chunk({}, finish), _usage_chunk(model.usage)):
                    self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the gateway went away mid-answer (a test killed it)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean; requests are recorded on the model

    return Handler


def _completion(message: dict[str, Any], finish: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "fake-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


def _chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _usage_chunk(usage: dict[str, Any]) -> dict[str, Any]:
    chunk = _chunk({}, None)
    chunk["choices"] = []
    chunk["usage"] = usage
    return chunk
