"""The connection check of an IMAP or POP3 IncomingServer (SPEC I9), one reportable step
at a time, read-only:

    DNS → TCP (or the proxy step) → [TLS, implicit] → greeting → [TLS, STARTTLS] → AUTH
        → folder (IMAP: EXAMINE) → message count → one sample message's headers

After TCP it is the fetcher's own client on the connected socket, and the fetcher's login
and classifier, so a failure is worded (and fixed) as the daemon's fetch loop would say
it. Nothing is changed on the server: IMAP opens the folder with EXAMINE and reads with
BODY.PEEK; POP3 reads with TOP and never sends DELE. Each protocol (``mail/imap/probe``,
``mail/pop3/probe``) says how to greet, secure, count and sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import socket
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from email.parser import BytesHeaderParser
from typing import Any, ClassVar

from reconciler.config.models.incoming_server import IncomingProtocol, IncomingServer
from reconciler.mail import fetch_errors as errors
from reconciler.mail.failover import Endpoint
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.steps import Step, StepResult
from reconciler.mail.threaded import Credentials, ThreadedFetcher
from reconciler.mail.walk import Walk, ssl_summary

Action = Callable[[], Awaitable[tuple[Any, str]]]
_SHOWN_HEADERS = ("From", "Subject", "Date")


class MailboxCheck(ABC):
    """One check of one IncomingServer; :meth:`walk` never raises for a failed step."""

    endpoint: Endpoint

    @abstractmethod
    def plan(self) -> tuple[Step, ...]:
        """The steps :meth:`walk` takes, in order."""

    @abstractmethod
    async def walk(self) -> list[StepResult]:
        """Each step's result up to the first failure."""


class IncomingCheck(MailboxCheck):
    """The check of an IMAP or POP3 server: the fetcher's client on the checked socket."""

    fetcher_class: ClassVar[type[ThreadedFetcher]]
    has_folders: ClassVar[bool] = True

    def __init__(self, server: IncomingServer, options: ProbeOptions) -> None:
        self.server, self.options = server, options
        self.budget = options.budget(server.spec)
        self.fetcher = self.fetcher_class(  # type: ignore[call-arg]
            server, token_provider=options.token_provider, ca_file=options.ca_file,
            timeout=self.budget)
        self.where = self.fetcher.where
        self.endpoint = Endpoint(self.where.host, self.where.port)
        self.sock: socket.socket | None = None
        self.client: Any = None
        self.messages = 0

    def plan(self) -> tuple[Step, ...]:
        protocol = IncomingProtocol(self.server.spec.protocol)
        implicit = protocol in (IncomingProtocol.IMAPS, IncomingProtocol.POP3S)
        steps = [Step.DNS, Step.TCP, *([Step.TLS] if implicit else []), Step.GREETING,
                 *([Step.TLS] if self.where.starttls else []), Step.AUTH,
                 *([Step.FOLDER] if self.has_folders else []), Step.COUNT, Step.SAMPLE]
        return tuple(steps)

    async def walk(self) -> list[StepResult]:
        walk = Walk(self.endpoint.address, self.budget, self.fetcher.redactor)
        sock = await walk.reach(self.endpoint, self.options, self.server)
        if sock is None:
            return walk.results
        sock.setblocking(True)
        sock.settimeout(self.budget)
        self.sock = sock
        try:
            for step, action in self._actions(self.plan()[2:]):
                if await walk.run(step, action) is None:
                    break
        finally:
            await asyncio.to_thread(self._close)
        return walk.results

    def _actions(self, steps: tuple[Step, ...]) -> list[tuple[Step, Action]]:
        after_greeting = False
        actions: list[tuple[Step, Action]] = []
        for step in steps:
            if step == Step.TLS:
                tls = self._starttls if after_greeting else self._implicit_tls
                actions.append((step, self._in_thread(errors.TLS, tls)))
            elif step == Step.AUTH:
                actions.append((step, self._login))
            else:
                after_greeting = after_greeting or step == Step.GREETING
                doing, fn = self._doing(step)
                actions.append((step, self._in_thread(doing, fn)))
        return actions

    def _doing(self, step: Step) -> tuple[str, Callable[[], str]]:
        return {Step.GREETING: (errors.GREETING, self.greet),
                Step.FOLDER: (f"opening {self.fetcher.folder}", self.folder),
                Step.COUNT: ("counting messages", self.count),
                Step.SAMPLE: ("reading a message's headers", self.sample)}[step]

    def _in_thread(self, doing: str, fn: Callable[[], str]) -> Action:
        async def run() -> tuple[bool, str]:
            try:
                return True, await asyncio.to_thread(fn)
            except Exception as exc:
                raise self.fetcher._classify(exc, doing) from None
        return run

    def _implicit_tls(self) -> str:
        assert self.sock is not None
        self.sock = self.fetcher._tls().wrap_socket(self.sock, server_hostname=self.where.host)
        return "implicit TLS, " + ssl_summary(self.sock)  # type: ignore[arg-type]

    def _starttls(self) -> str:
        return "STARTTLS, " + ssl_summary(self.starttls())

    async def _login(self) -> tuple[bool, str]:
        credentials = await self.fetcher._credentials()  # a FetchError names what is wrong
        await self._in_thread(errors.LOGIN, lambda: self.login(credentials))()
        return True, f"logged in as {credentials.username} ({self.server.spec.auth.type})"

    def login(self, credentials: Credentials) -> str:
        self.fetcher._login(self.client, credentials)
        return ""

    def _close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.logout()  # the POP3 client's logout is QUIT: nothing was deleted
            with contextlib.suppress(Exception):
                self.client.shutdown()
        if self.sock is not None:
            self.sock.close()

    def connected(self, timeout: float | None) -> socket.socket:
        """What the protocol client is given as its connection: the checked socket."""
        assert self.sock is not None
        return self.sock

    @abstractmethod
    def greet(self) -> str:
        """Start the protocol client on the socket; the greeting, for people."""

    @abstractmethod
    def starttls(self) -> Any:
        """Upgrade the session; the TLS socket."""

    def folder(self) -> str:
        return ""

    @abstractmethod
    def count(self) -> str:
        """Set ``messages``; what the mailbox holds, for people."""

    @abstractmethod
    def sample(self) -> str:
        """One message's headers without changing its state, for people."""


def first_line(text: bytes | str | None, limit: int = 120) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    line = (text or "").splitlines()[0] if text else ""
    return line if len(line) <= limit else line[:limit] + "…"


def counted(total: int, unread: int) -> str:
    return f"{total} message(s), {unread} unread (the daemon fetches unread mail)"


def headers_text(raw: bytes) -> str:
    """From, Subject and Date of a header block, decoded, for people."""
    headers = BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
    shown = [f"{name} {first_line(str(headers[name]), 80)}" for name in _SHOWN_HEADERS
             if headers[name] is not None]
    return "; ".join(shown) or "no From, Subject or Date header"
