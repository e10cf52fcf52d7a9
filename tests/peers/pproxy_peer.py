"""pproxy as the proxy peer of the SMTP, IMAP and POP3 tunnel tests: one process per test
session listening for HTTP CONNECT and SOCKS5 on one loopback port, with a username and
password, logging each tunnel it opens (``-v``) so a test can see its traffic went through.

``--auth 0`` makes pproxy ask every connection for the credentials (by default it
remembers an address that logged in once). pproxy installs uvloop when it can import it,
and its start-up does not run on the uvloop this environment has, so the runner hides it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from peers.smtp import HOST, free_port

USER = "desk-proxy"
PASSWORD = "Pr0xy-pass-not-for-logs"
PASSWORD_ENV = "PROXY_TEST_PASSWORD"
_RUNNER = ("import sys; sys.modules['uvloop'] = None; from pproxy.server import main; "
           "sys.argv[0] = 'pproxy'; main()")


@dataclass
class ProxyPeer:
    port: int
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def spec(self, kind: str, **extra: Any) -> dict[str, Any]:
        """A ProxyServer spec for this peer (``kind`` http or socks5), with its login."""
        return {"type": kind, "host": HOST, "port": self.port, "username": USER,
                "password": {"secretRef": f"env:{PASSWORD_ENV}"}, **extra}

    def tunnelled(self, target: str, count: int = 1, *, since: int = 0,
                  timeout: float = 60.0) -> list[str]:
        """The log lines of ``count`` tunnels to ``target`` (host:port) from log line
        ``since`` on (the peer and Dovecot serve the whole session: earlier tests tunnel
        to the same ports), waiting until pproxy has logged that many."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.lines[since:] if line.endswith("-> " + target)]
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"not {count} tunnel(s) to {target} in the proxy's log: "
                             f"{self.lines}")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.strip())


@pytest.fixture(scope="session")
def proxy_peer() -> Iterator[ProxyPeer]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-u", "-c", _RUNNER, "-l", f"http+socks5://{HOST}:{port}#{USER}:"
         f"{PASSWORD}", "--auth", "0", "-v"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peer = ProxyPeer(port, process)
    threading.Thread(target=peer._read, name="pproxy-log", daemon=True).start()
    deadline = time.monotonic() + 120  # bounds a failing start only
    while not any(line.startswith("Serving on") for line in peer.lines):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"pproxy did not start: {peer.lines}", pytrace=False)
        time.sleep(0.02)
    try:
        yield peer
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture
def proxy_password(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    return PASSWORD
