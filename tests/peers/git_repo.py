"""Real git repositories for the sync tests: a bare repo with a working clone to commit
from, and ``git http-backend`` served over smart HTTP on loopback with Basic auth."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

GIT_ENV = {"GIT_AUTHOR_NAME": "Ada Admin", "GIT_AUTHOR_EMAIL": "ada@example.test",
           "GIT_COMMITTER_NAME": "Ada Admin", "GIT_COMMITTER_EMAIL": "ada@example.test",
           "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}


def git(*args: str, cwd: Path | None = None) -> str:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


@dataclass
class Repo:
    """``bare`` is what the syncer follows; ``work`` is a clone to commit from."""

    bare: Path
    work: Path

    def commit(self, files: Mapping[str, str | None], message: str) -> str:
        """Write (or, for None, delete) files, commit and push to main; the new sha."""
        for name, text in files.items():
            path = self.work / name
            if text is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        git("push", "-q", "origin", "HEAD:main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def copy_tree(self, source: Path, into: str = "config") -> str:
        shutil.copytree(source, self.work / into, dirs_exist_ok=True)
        return self.commit({}, f"add {into}")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    bare, work = tmp_path / "origin.git", tmp_path / "work"
    git("init", "-q", "--bare", "--initial-branch=main", str(bare))
    git("init", "-q", "--initial-branch=main", str(work))
    git("remote", "add", "origin", str(bare), cwd=work)
    return Repo(bare, work)


class GitHttp:
    """``git http-backend`` (the CGI git ships) behind Basic auth: any user, ``token`` as
    the password. ``url`` is the repository's smart-HTTP URL."""

    def __init__(self, root: Path, name: str, token: str) -> None:
        self.token, self.refused = token, 0
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def _cgi(self) -> None:
                auth = self.headers.get("Authorization", "")
                given = base64.b64decode(auth[6:]).decode().split(":", 1)[-1] \
                    if auth.startswith("Basic ") else None
                if given != peer.token:
                    peer.refused += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                env = {"GIT_PROJECT_ROOT": str(root), "GIT_HTTP_EXPORT_ALL": "1",
                       "PATH_INFO": path, "QUERY_STRING": query, "REMOTE_USER": "sync",
                       "REQUEST_METHOD": self.command, "PATH": os.environ["PATH"],
                       "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                       "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": "127.0.0.1"}
                out = subprocess.run(["git", "http-backend"], input=body, env=env,
                                     capture_output=True, check=False).stdout
                head, _, payload = out.partition(b"\r\n\r\n")
                headers = [line.split(": ", 1) for line in head.decode().split("\r\n") if line]
                status = next((int(v.split()[0]) for k, v in headers if k == "Status"), 200)
                self.send_response(status)
                for key, value in headers:
                    if key != "Status":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _cgi

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/{name}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def git_http(repo: Repo) -> Iterator[GitHttp]:
    peer = GitHttp(repo.bare.parent, repo.bare.name, "s3cret-token-value")
    yield peer
    peer.close()
