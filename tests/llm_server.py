"""A small OpenAI-compatible chat-completions server on 127.0.0.1, standing in for a paid LLM API.

It answers in DSPy's ChatAdapter format, so the real path signature -> adapter -> dspy.LM -> HTTP
-> parser runs end to end. `behaviour` decides each answer: a callable (request JSON -> fields, or an HTTP status to fail with),
`"hang"`, or an HTTP status code.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Behaviour = Callable[[dict[str, Any]], dict[str, Any]] | str | int


class FakeLLMServer:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.requests: list[dict[str, Any]] = []
        self.hang_s = 30.0
        self._release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                behaviour = server.behaviour
                if behaviour == "hang":
                    server._release.wait(server.hang_s)
                    return self._send(200, _completion("[[ ## completed ## ]]", body))
                if isinstance(behaviour, int):
                    return self._send(behaviour, {"error": {"message": f"fake error {behaviour}", "type": "x"}})
                if behaviour == "garbage":
                    return self._send(200, _completion("I am not following any format, sorry.", body))
                fields = behaviour(body)
                if isinstance(fields, int):  # a callable may fail one request: an HTTP status
                    return self._send(fields, {"error": {"message": f"fake error {fields}", "type": "x"}})
                return self._send(200, _completion(chat_adapter_answer(fields), body))

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.api_base = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    @staticmethod
    def user_text(body: dict[str, Any]) -> str:
        return "\n".join(
            m["content"] if isinstance(m["content"], str) else json.dumps(m["content"])
            for m in body.get("messages", [])
            if m.get("role") == "user"
        )


def chat_adapter_answer(fields: dict[str, Any]) -> str:
    parts = [f"[[ ## {name} ## ]]\n{value}" for name, value in fields.items()]
    return "\n\n".join(parts + ["[[ ## completed ## ]]"])


def _completion(content: str, request: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "fake"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 321, "completion_tokens": 42, "total_tokens": 363},
    }
