"""Microsoft Graph fetcher (SPEC I1, I6): a thin user of ``client.GraphSession``.

- **Listing**: ``GET {graphEndpoint}/v1.0/users/{email}/mailFolders/{folder}/messages``
  with ``$filter=receivedDateTime ge 1900-01-01T00:00:00Z and isRead eq false``,
  ``$orderby=receivedDateTime asc``, ``$select=id,internetMessageId,receivedDateTime``
  and ``$top``, following ``@odata.nextLink``. Graph refuses an ``$orderby`` whose
  property is not also the first one in ``$filter`` (``InefficientFilter``), hence
  the always-true date clause. As with EWS, ids are collected up to ``limit``
  not-done mails before the first download: nextLinks page by ``$skip``, and
  marking mails read while the caller works would shift a later page.
- **Download**: ``GET .../messages/{id}/$value``, the MIME message as stored, one
  at a time. ``mark_done``: ``PATCH .../messages/{id}`` ``{"isRead": true}``.
  Nothing is ever deleted.
- **Markers** ``graph:{folder}:{id}``. Ids are Graph's default ones, stable while
  the message stays in its folder and new after a move. Immutable ids (``Prefer:
  IdType="ImmutableId"``) are deliberately not asked for: then a mail moved to the
  error folder and back would keep its marker and never be processed again; like
  IMAP and EWS, a mail moved back is a new arrival. The MIME content carries the
  internetMessageId, so the pipeline's duplicate Message-ID check still guards
  against the rare id change by other means.
- **Folder**: ``INBOX`` (any case) is the well-known ``inbox``; any other value
  is a path of display names from the top of the mailbox (``Inbox/Support``),
  resolved with ``$filter=displayName eq '...'`` on ``mailFolders`` and
  ``childFolders``.
- **Error folder (I6)**: a top-level folder of that name, created with ``POST
  .../mailFolders`` when missing; ``POST .../messages/{id}/move``; its
  ``totalItemCount``; moving back marks each mail unread first.
- **Throttling** and **401** as ``client`` does them, each wait at most ``MAX_WAIT_S``
  and at most ``MAX_WAITS`` per request; beyond that the fetch fails with a CONNECT
  error and the runner tries at the next interval.
- ``wait_for_new`` sleeps the interval: change notifications need a public
  HTTPS endpoint for Graph to call, which a desk behind a firewall rarely has;
  delta queries would save listing cost but not latency.
- Every failure is ``client``'s MailFailure, redacted, as the FetchError the runner knows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from reconciler.config.models.incoming_server import IncomingServer
from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.mail.failure import MailFailure
from reconciler.mail.fetch_errors import config_error
from reconciler.mail.fetcher import (
    AlreadyDone,
    FetchedMail,
    Fetcher,
    FetchError,
    FetchErrorKind,
    is_done,
)
from reconciler.mail.graph.client import (
    FETCHING,
    GraphAnswer,
    GraphSession,
    graph_target,
    open_client,
    proxy_for,
)
from reconciler.mail.outcome import Failure
from reconciler.mail.transport import Redactor
from reconciler.oauth.source import TokenProvider
from reconciler.runtime.tls import transport_tls

log = logging.getLogger(__name__)

PAGE_SIZE = 100  # $top per listing page
MAX_WAITS = 3
MAX_WAIT_S = 60.0
EVER = "receivedDateTime ge 1900-01-01T00:00:00Z"  # lets $orderby receivedDateTime pass
UNREAD = f"{EVER} and isRead eq false"
_KINDS = {Failure.CONFIG: FetchErrorKind.CONFIG, Failure.AUTH: FetchErrorKind.AUTH,
          Failure.TLS: FetchErrorKind.TLS, Failure.TLS_VERIFY: FetchErrorKind.TLS}

ProxyLookup = Callable[[IncomingServer], ProxyServerSpec | None]


@dataclass(frozen=True, slots=True)
class _Listed:
    message_id: str
    received_at: datetime | None


def _quoted(value: str) -> str:
    """An OData string literal."""
    return "'" + value.replace("'", "''") + "'"


def _when(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


class GraphFetcher(Fetcher):
    protocol = "graph"
    supports_error_folder = True

    def __init__(self, server: IncomingServer, *,
                 token_provider: TokenProvider | None = None,
                 ca_file: str | Path | None = None, timeout: float = 30.0,
                 proxy_lookup: ProxyLookup | None = None, page_size: int = PAGE_SIZE) -> None:
        super().__init__(server)
        self._token_provider = token_provider
        self._ca_file = ca_file
        self._timeout = timeout
        self._proxy_lookup = proxy_lookup
        self._page_size = page_size
        try:
            # Built before any request, from a server that may not have been through derive.
            self.target = graph_target(server, cloud_default=True)
        except MailFailure as exc:
            raise config_error(server, exc.message, exc.likely_fix) from None
        self.users = self.target.users
        self.folder = str(server.spec.folder)
        self.redactor = Redactor()
        self._session: GraphSession | None = None
        self._source: str | None = None  # the fetched folder's id (or well-known name)
        self._error: str | None = None  # the error folder's id once found or created
        self._sequence = 0

    @property
    def error_folder(self) -> str:
        return str(self.server.spec.error_folder.name)

    # -- session ----------------------------------------------------------

    async def connect(self) -> None:
        if self._source is None:
            self._source = await self._resolve_folder()

    def _open(self) -> GraphSession:
        if self._session is None:
            proxy = proxy_for(self.server, self._proxy_lookup, self.target.host, self.redactor)
            client = open_client(transport_tls(self._ca_file), proxy, self._timeout, self._timeout)
            self._session = GraphSession(
                self.server, self.target, client, self._token_provider,  # type: ignore[arg-type]
                self.redactor, FETCHING, max_wait=MAX_WAIT_S, max_waits=MAX_WAITS,
                request_timeout=self._timeout)
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        self._source = self._error = None
        if session is not None:
            try:
                await session.client.aclose()
            except Exception as exc:  # closing must not fail the caller
                log.debug("closing the Graph client: %s", self.redactor(str(exc)))

    async def _request(self, step: str, method: str, url: str, *,
                       ok: tuple[int, ...] = (200,), missing_ok: bool = False,
                       **kwargs: Any) -> GraphAnswer | None:
        """One Graph call (``GraphSession.request``); a failure as the runner's FetchError.
        None for a 404 when ``missing_ok`` (the message is gone)."""
        try:
            session = self._open()
            session.step = step
            return await session.request(method, url, ok=ok, missing_ok=missing_ok, **kwargs)
        except MailFailure as exc:
            kind = _KINDS.get(exc.failure) or (FetchErrorKind.PROTOCOL if exc.permanent
                                               else FetchErrorKind.CONNECT)
            raise FetchError(kind, self.redactor(exc.message),
                             self.redactor(exc.likely_fix)) from None

    # -- folders ------------------------------------------------------------

    async def _resolve_folder(self) -> str:
        steps = [s for s in self.folder.replace("\\", "/").split("/") if s]
        current: str | None = None
        if not steps or steps[0].lower() == "inbox":
            current, steps = "inbox", steps[1:]
        for step in steps:
            found = await self._child(current, step)
            if found is None:
                raise config_error(self.server, f"the mailbox {self.target.mailbox} has no folder "
                                   f"{self.folder}", "Check folder in the incoming server spec: a "
                                   "path of folder names from the top of the mailbox, separated by "
                                   "'/', such as Inbox/Support; INBOX means the inbox.")
            current = str(found["id"])
        assert current is not None
        # One authenticated call that proves token, permission, mailbox and folder alike.
        response = await self._request(f"reading the folder {self.folder}", "GET",
                                       f"{self.users}/mailFolders/{quote(current, safe='')}",
                                       params={"$select": "id,displayName,totalItemCount"})
        assert response is not None
        return str(response.json().get("id") or current)

    async def _child(self, parent: str | None, name: str) -> dict[str, Any] | None:
        url = (f"{self.users}/mailFolders" if parent is None
               else f"{self.users}/mailFolders/{quote(parent, safe='')}/childFolders")
        response = await self._request(
            f"looking up the folder {name}", "GET", url,
            params={"$filter": f"displayName eq {_quoted(name)}",
                    "$select": "id,displayName,totalItemCount"})
        assert response is not None
        found = [f for f in response.json().get("value") or []
                 if str(f.get("displayName", "")).lower() == name.lower()]
        return found[0] if found else None

    async def _error_folder(self, create: bool) -> dict[str, Any] | None:
        found = await self._child(None, self.error_folder)
        if found is None and create:
            response = await self._request(
                f"creating the folder {self.error_folder}", "POST", f"{self.users}/mailFolders",
                json={"displayName": self.error_folder}, ok=(201, 409))
            assert response is not None
            found = (response.json() if response.status_code == 201
                     else await self._child(None, self.error_folder))  # created meanwhile
        if found is not None:
            self._error = str(found["id"])
        return found

    # -- fetching ---------------------------------------------------------

    async def fetch(self, already_done: AlreadyDone,
                    limit: int = 100) -> AsyncIterator[FetchedMail]:
        await self.connect()
        wanted: list[tuple[str, _Listed]] = []
        url: str | None = f"{self.users}/mailFolders/{quote(self._source or '', safe='')}/messages"
        params: dict[str, str] | None = {
            "$filter": UNREAD, "$orderby": "receivedDateTime asc",
            "$select": "id,internetMessageId,receivedDateTime", "$top": str(self._page_size)}
        while url is not None and len(wanted) < limit:
            response = await self._request("listing unread mail", "GET", url, params=params)
            assert response is not None
            page = response.json()
            for item in page.get("value") or []:
                marker = f"graph:{self.folder}:{item['id']}"
                if await is_done(already_done, marker):
                    continue
                wanted.append((marker, _Listed(str(item["id"]),
                                               _when(item.get("receivedDateTime")))))
                if len(wanted) >= limit:
                    break
            url, params = page.get("@odata.nextLink"), None  # the link carries the query
        for marker, listed in wanted:
            raw = await self._download(listed.message_id)
            if raw is None:
                continue  # moved or deleted by someone else since the listing
            self._sequence += 1
            yield FetchedMail(marker=marker, raw=raw, size=len(raw), folder=self.folder,
                              uid=self._sequence, received_at=listed.received_at)

    async def _download(self, message_id: str) -> bytes | None:
        # The body is read in one buffer that becomes the mail: nothing else keeps it.
        response = await self._request(
            "downloading a mail", "GET",
            f"{self.users}/messages/{quote(message_id, safe='')}/$value", missing_ok=True)
        return None if response is None else response.content

    def _message_url(self, mail: FetchedMail) -> str | None:
        prefix = f"graph:{self.folder}:"
        if not mail.marker.startswith(prefix):
            log.warning("mail %s was not fetched from %s; left as it is", mail.marker,
                        self.folder)
            return None
        return f"{self.users}/messages/{quote(mail.marker[len(prefix):], safe='')}"

    async def mark_done(self, mail: FetchedMail) -> None:
        url = self._message_url(mail)
        if url is not None:
            await self._request("marking a mail read", "PATCH", url, json={"isRead": True},
                                missing_ok=True)

    # -- error folder (I6) ------------------------------------------------

    async def move_to_error_folder(self, mail: FetchedMail) -> None:
        url = self._message_url(mail)
        if url is None:
            return
        if self._error is None:
            await self._error_folder(create=True)
        await self._request(f"moving a mail to {self.error_folder}", "POST", f"{url}/move",
                            json={"destinationId": self._error}, ok=(200, 201),
                            missing_ok=True)

    async def error_folder_count(self) -> int:
        found = await self._error_folder(create=False)
        return int(found.get("totalItemCount") or 0) if found is not None else 0

    async def move_back_from_error_folder(self) -> int:
        await self.connect()
        found = await self._error_folder(create=False)
        if found is None:
            return 0
        listing = f"{self.users}/mailFolders/{quote(str(found['id']), safe='')}/messages"
        moved = 0
        while True:
            response = await self._request(
                f"listing {self.error_folder}", "GET", listing,
                params={"$select": "id", "$top": str(self._page_size)})
            assert response is not None
            ids = [str(item["id"]) for item in response.json().get("value") or []]
            if not ids:
                return moved
            for message_id in ids:
                url = f"{self.users}/messages/{quote(message_id, safe='')}"
                # unread again, so the fetch processes it once more
                if await self._request("marking a mail unread", "PATCH", url,
                                       json={"isRead": False}, missing_ok=True) is None:
                    continue
                if await self._request(f"moving a mail back to {self.folder}", "POST",
                                       f"{url}/move", json={"destinationId": self._source},
                                       ok=(200, 201), missing_ok=True) is not None:
                    moved += 1

    # -- waiting ----------------------------------------------------------

    async def wait_for_new(self, timeout: float) -> bool:
        await asyncio.sleep(timeout)
        return False
