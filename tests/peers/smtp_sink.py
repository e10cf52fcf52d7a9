"""Postfix's smtp-sink as a test peer: a fast SMTP server that accepts and throws
away mail, or injects faults on request (see smtp-sink(1)):

- ``-r CMD,...``  soft (4xx) rejects of those commands
- ``-f CMD,...``  hard (5xx) rejects
- ``-q CMD,...``  disconnects without replying
- ``-W CMD:delay[:odds]``  delays a reply

The Debian package ``postfix`` provides it; the tests fail (never skip) when it
is missing, naming the install command.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest

START_WAIT_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def smtp_sink_binary() -> str:
    path = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink"
                                         if os.path.exists("/usr/sbin/smtp-sink") else None)
    if path is None:
        pytest.fail("smtp-sink is not installed: `apt-get install postfix` (it ships smtp-sink)",
                    pytrace=False)
    return path


@dataclass
class SmtpSink:
    """One running smtp-sink on 127.0.0.1; ``restart`` keeps the port."""

    options: Sequence[str] = ()
    port: int = field(default_factory=free_port)
    backlog: int = 256
    _proc: subprocess.Popen[bytes] | None = None

    def start(self, options: Sequence[str] | None = None) -> SmtpSink:
        if options is not None:
            self.options = options
        # smtp-sink refuses to run as root without a user to drop to
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self._proc = subprocess.Popen(
            [smtp_sink_binary(), *user, *self.options, f"127.0.0.1:{self.port}",
             str(self.backlog)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_WAIT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                pytest.fail(f"smtp-sink exited at start: {err.strip()}", pytrace=False)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail(f"smtp-sink did not listen on port {self.port}", pytrace=False)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc is not None and self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None

    def restart(self, options: Sequence[str] | None = None) -> SmtpSink:
        self.stop()
        return self.start(options)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A plain accepting smtp-sink; call ``restart([...])`` for faults."""
    sink = SmtpSink().start()
    try:
        yield sink
    finally:
        sink.stop()
