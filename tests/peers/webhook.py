"""A loopback HTTP endpoint that records what webhooks POST, for the tests of every
feature that calls one (health notifications, the incoming event sink)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self


@dataclass
class PostReceiver:
    """Counts every POST; ``replies`` are status codes answered first, in order (e.g.
    [503, 503] makes the first two attempts fail). Accepted posts go to :meth:`record`."""

    replies: list[int] = field(default_factory=list)
    attempts: int = 0
    down: bool = False  # answer 503 to everything while set
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    ok_status: ClassVar[int] = 200
    path: ClassVar[str] = "/"  # with the query string, as a sender is configured with it

    def record(self, headers: dict[str, str], body: bytes) -> None:
        """Keep an accepted post (called under the lock)."""
        raise NotImplementedError

    def start(self) -> Self:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.attempts += 1
                    status = receiver.replies.pop(0) if receiver.replies else receiver.ok_status
                    if receiver.down:
                        status = 503
                    if status < 300:
                        receiver.record(dict(self.headers.items()), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self.path}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
