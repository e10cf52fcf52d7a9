"""The connection check of an EWS or Graph IncomingServer (SPEC I9), one reportable step
at a time, read-only:

    DNS → TCP (or the proxy step) → TLS → AUTH → folder → message count → one sample
        message's headers

DNS, TCP and TLS go to the API's host and port as in the outgoing checks (``walk``),
through the ProxyServer the server names. From AUTH on it is the fetcher's own session
(credentials through the gate, a token from the store's provider, the same classifier),
so a failure reads as the fetch loop would report it. AUTH is one cheap authenticated
call; the folder is resolved as the fetcher resolves it; the count is the folder's own
totals; the sample is the newest message's MIME content, of which only From, Subject and
Date are shown. Neither API marks a message read when its content is read, and nothing
is moved or flagged. Each protocol (``mail/ews/probe``, ``mail/graph/probe``) says how.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from reconciler.config.models.incoming_server import IncomingServer
from reconciler.mail.failover import Endpoint
from reconciler.mail.failure import MailFailure
from reconciler.mail.fetcher import Fetcher, FetchError, FetchErrorKind
from reconciler.mail.incoming_check import MailboxCheck, headers_text
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.steps import Reason, Step, StepResult
from reconciler.mail.transport import Redactor
from reconciler.mail.walk import Walk

Said = tuple[bool, str]


class ApiCheck(MailboxCheck):
    fetcher_class: ClassVar[type[Fetcher]]

    def __init__(self, server: IncomingServer, options: ProbeOptions) -> None:
        self.server, self.options = server, options
        self.budget = options.budget(server.spec)
        self.fetcher: Any = self.fetcher_class(  # type: ignore[call-arg]
            server, token_provider=options.token_provider, ca_file=options.ca_file,
            timeout=self.budget, proxy_lookup=options.proxy_lookup)
        self.redactor = Redactor()
        self.endpoint = self.api_endpoint()
        self.total = 0

    def plan(self) -> tuple[Step, ...]:
        return (Step.DNS, Step.TCP, Step.TLS, Step.AUTH, Step.FOLDER, Step.COUNT, Step.SAMPLE)

    async def walk(self) -> list[StepResult]:
        walk = Walk(self.endpoint.address, self.budget, self.redactor)
        steps: tuple[tuple[Step, Callable[[], Awaitable[Said]]], ...] = (
            (Step.AUTH, self.login), (Step.FOLDER, self.folder), (Step.COUNT, self.count),
            (Step.SAMPLE, self._sample))
        try:
            if await walk.reach_tls(self.endpoint, self.options, self.server):
                for step, action in steps:
                    if await walk.run(step, action) is None:
                        break
        finally:
            await self.fetcher.aclose()
        return walk.results

    async def folder(self) -> Said:
        try:
            await self.fetcher.connect()  # the fetcher's own folder resolution
        except FetchError as exc:
            if exc.kind != FetchErrorKind.CONFIG:  # once AUTH passed, CONFIG is the folder
                raise
            try:
                names = await self.folder_names()
            except MailFailure:
                raise exc from None
            raise FetchError(exc.kind, f"{exc.message}; the mailbox has: {', '.join(names)}",
                             exc.likely_fix, step=Step.FOLDER, reason=Reason.NOT_FOUND) \
                from None
        return True, f"{self.fetcher.folder} found"

    async def _sample(self) -> Said:
        if not self.total:
            return True, "the folder is empty: no message to sample"
        raw = await self.newest()
        if raw is None:
            return True, "the newest message went away meanwhile: no message to sample"
        return True, f"newest message: {headers_text(raw)}"

    @abstractmethod
    def api_endpoint(self) -> Endpoint:
        """Where DNS, TCP and TLS go: the API's host and port."""

    @abstractmethod
    async def login(self) -> Said:
        """One cheap authenticated call; adds the credentials in use to ``redactor``."""

    @abstractmethod
    async def folder_names(self) -> list[str]:
        """The folders at the top of the mailbox and below the inbox, as paths."""

    @abstractmethod
    async def count(self) -> Said:
        """Set ``total``; what the folder holds, for people."""

    @abstractmethod
    async def newest(self) -> bytes | None:
        """The newest message of the folder as stored, read without marking it read."""
