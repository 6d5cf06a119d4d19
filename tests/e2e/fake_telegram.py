"""A fake Telegram Bot API on loopback (``channels.telegram.apiRoot``): enough for the gateway's telegram
channel to start and for ``sendMessage`` to be recorded. ``getUpdates`` long-polls briefly and returns []."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BOT = {"id": 7000001, "is_bot": True, "first_name": "DevclawTestBot", "username": "devclaw_test_bot",
       "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}  # fmt: skip
BOT_TOKEN = "7000001:FAKE-TOKEN-for-loopback-only"


class FakeTelegram:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []  # every call but getUpdates: {"method", "params"}
        self._lock = threading.Lock()
        self._next_id = 100
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def sent(self) -> list[dict[str, Any]]:
        """The ``sendMessage`` calls: ``{"chat_id", "text", ...}`` each."""
        with self._lock:
            return [call["params"] for call in self.calls if call["method"] == "sendMessage"]

    def answer(self, method: str, params: dict[str, Any]) -> Any:
        if method != "getUpdates":
            with self._lock:
                self.calls.append({"method": method, "params": params})
        if method == "getMe":
            return BOT
        if method == "getUpdates":
            time.sleep(min(float(params.get("timeout", 0) or 0), 1.0))
            return []
        if method == "sendMessage":
            with self._lock:
                self._next_id += 1
                message_id = self._next_id
            chat = params.get("chat_id")
            chat_id = int(str(chat)) if str(chat).lstrip("-").isdigit() else chat
            return {"message_id": message_id, "date": int(time.time()), "from": BOT, "text": params.get("text", ""),
                    "chat": {"id": chat_id, "type": "supergroup", "title": "Test group"}}  # fmt: skip
        if method == "getChat":
            return {"id": params.get("chat_id"), "type": "supergroup", "title": "Test group"}
        if method == "getChatMember":
            return {"status": "administrator", "user": BOT}
        if method == "getMyCommands":
            return []
        if method == "getWebhookInfo":
            return {"url": "", "has_custom_certificate": False, "pending_update_count": 0}
        return True


def _handler(fake: FakeTelegram) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            url = urllib.parse.urlparse(self.path)
            parts = url.path.strip("/").split("/")
            if len(parts) < 2 or not parts[0].startswith("bot"):
                self._send(404, {"ok": False, "error_code": 404, "description": "Not Found"})
                return
            self._send(200, {"ok": True, "result": fake.answer(parts[-1], self._params(url.query))})

        def _params(self, query: str) -> dict[str, Any]:
            params: dict[str, Any] = dict(urllib.parse.parse_qsl(query))
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            kind = self.headers.get("Content-Type", "")
            if raw and "json" in kind:
                params.update(json.loads(raw))
            elif raw and "urlencoded" in kind:
                params.update(dict(urllib.parse.parse_qsl(raw.decode())))
            return params

        do_GET = _handle
        do_POST = _handle

        def _send(self, code: int, data: dict[str, Any]) -> None:
            payload = json.dumps(data).encode()
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
