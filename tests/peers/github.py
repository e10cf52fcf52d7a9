"""A loopback peer answering GitHub's commit status API the way GitHub does.

``POST /repos/{owner}/{repo}/statuses/{sha}`` with a Bearer token, GitHub's media
type and API version header: 201 and the status as JSON; 401 "Bad credentials" for
another token; 422 "Validation Failed" for a state outside the list or a description
over 140 characters. ``faults`` are (status, headers, body) answered first, in order.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

_PATH = re.compile(r"/api/v3/repos/([\w.-]+)/([\w.-]+)/statuses/([0-9a-f]{40})")
_STATES = ("pending", "success", "failure", "error")
DOCS = "https://docs.github.com/rest/commits/statuses#create-a-commit-status"
BAD_STATE = {"resource": "Status", "code": "custom", "field": "state",
             "message": "state is not included in the list"}


@dataclass
class GitHubStatuses:
    token: str
    faults: list[tuple[int, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)  # as GitHub stored them
    requests: list[dict[str, str]] = field(default_factory=list)  # every request's headers
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str, headers: dict[str, str], body: bytes
               ) -> tuple[int, dict[str, str], dict[str, Any]]:
        with self._lock:
            self.requests.append(headers)
            if self.faults:
                return self.faults.pop(0)
        match = _PATH.fullmatch(path)
        if match is None:
            return 404, {}, {"message": "Not Found", "documentation_url": DOCS}
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {}, {"message": "Bad credentials", "documentation_url": DOCS}
        if (headers.get("Accept") != "application/vnd.github+json"
                or not headers.get("X-GitHub-Api-Version")
                or headers.get("Content-Type") != "application/json"):
            return 415, {}, {"message": "Unsupported Media Type", "documentation_url": DOCS}
        data = json.loads(body)
        errors = []
        if data.get("state") not in _STATES:
            errors.append(BAD_STATE)
        if len(data.get("description") or "") > 140:
            errors.append({"resource": "Status", "code": "custom", "field": "description",
                           "message": "description is too long (maximum is 140 characters)"})
        if errors:
            return 422, {}, {"message": "Validation Failed", "errors": errors,
                             "documentation_url": DOCS}
        owner, repo, sha = match.groups()
        with self._lock:
            stored = {"id": len(self.statuses) + 1, "state": data["state"],
                      "description": data.get("description"),
                      "target_url": data.get("target_url"),
                      "context": data.get("context", "default"),
                      "url": f"/repos/{owner}/{repo}/statuses/{sha}", "sha": sha}
            self.statuses.append(stored)
        return 201, {}, stored

    def start(self) -> Self:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, extra, data = peer.answer(self.path, dict(self.headers.items()), body)
                out = json.dumps(data).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json; charset=utf-8",
                                    "Content-Length": str(len(out)), **extra}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def api_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/api/v3"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
