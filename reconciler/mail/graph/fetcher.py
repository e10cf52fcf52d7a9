"""Microsoft Graph fetcher (SPEC I1, I6) on httpx, on the event loop.

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
- **Throttling**: 429, 503 and 504 with ``Retry-After`` are waited out on the
  loop (each wait at most ``MAX_WAIT_S``, at most ``MAX_WAITS`` per request);
  beyond that the fetch fails with a CONNECT error and the runner tries at the
  next interval. **401**: the token is invalidated and fetched again, once per
  request; a second 401 is an AUTH error.
- ``wait_for_new`` sleeps the interval: change notifications need a public
  HTTPS endpoint for Graph to call, which a desk behind a firewall rarely has;
  delta queries would save listing cost but not latency.
- The access token and a proxy password only ever reach the ``Authorization``
  header and the proxy URL; every text that may carry them goes through the
  fetcher's redactor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from reconciler.config.derive import GRAPH_ENDPOINTS
from reconciler.config.endpoints import url_host_endpoint
from reconciler.config.models.auth import OAuth2Auth
from reconciler.config.models.incoming_server import IncomingServer
from reconciler.config.models.outgoing_server import NationalCloud
from reconciler.config.models.proxy_server import ProxyServerSpec, ProxyType
from reconciler.config.secrets import SecretError
from reconciler.mail.ews.http import (
    bypasses,
    exception_chain,
    first_of,
    proxy_url,
)
from reconciler.mail.fetch_errors import config_error
from reconciler.mail.fetcher import (
    AlreadyDone,
    FetchedMail,
    Fetcher,
    FetchError,
    FetchErrorKind,
    IncomingTokenProvider,
    is_done,
)
from reconciler.mail.graph.transport import graph_error, retry_after
from reconciler.mail.threaded import access_token
from reconciler.mail.transport import Redactor
from reconciler.oauth.source import invalidate_token
from reconciler.runtime.tls import CA_FILE_ENV, tls_context

log = logging.getLogger(__name__)

API_VERSION = "v1.0"
PAGE_SIZE = 100  # $top per listing page
MAX_WAITS = 3
MAX_WAIT_S = 60.0
RETRY_AFTER_STATUS = frozenset({429, 503, 504})
UNREAD = "receivedDateTime ge 1900-01-01T00:00:00Z and isRead eq false"

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
                 token_provider: IncomingTokenProvider | None = None,
                 ca_file: str | Path | None = None, timeout: float = 30.0,
                 proxy_lookup: ProxyLookup | None = None, page_size: int = PAGE_SIZE) -> None:
        super().__init__(server)
        spec = server.spec
        self._token_provider = token_provider
        self._ca_file = ca_file or os.environ.get(CA_FILE_ENV) or None
        self._timeout = timeout
        self._proxy_lookup = proxy_lookup
        self._page_size = page_size
        cloud = NationalCloud(spec.national_cloud or NationalCloud.GLOBAL)
        self.endpoint = str(spec.graph_endpoint or GRAPH_ENDPOINTS[cloud]).rstrip("/")
        parts = urlsplit(self.endpoint)
        if parts.scheme != "https" or not parts.hostname:
            raise config_error(server, f"graphEndpoint {self.endpoint} is not an https:// URL",
                               "Set graphEndpoint to the Graph endpoint of your cloud, for example "
                               "https://graph.microsoft.com.")
        self.address = f"{parts.hostname}:{parts.port or 443}"
        self.mailbox = str(spec.email)
        self.users = f"{self.endpoint}/{API_VERSION}/users/{quote(self.mailbox, safe='@')}"
        self.folder = str(spec.folder)
        self.redactor = Redactor()
        self._client: httpx.AsyncClient | None = None
        self._token = ""
        self._source: str | None = None  # the fetched folder's id (or well-known name)
        self._error: str | None = None  # the error folder's id once found or created
        self._sequence = 0

    @property
    def error_folder(self) -> str:
        return str(self.server.spec.error_folder.name)

    # -- session ----------------------------------------------------------

    async def connect(self) -> None:
        if self._client is not None and self._source is not None:
            return
        if self._client is None:
            self._client = self._new_client()
        if not self._token:
            self._token = await self._fetch_token()
        self._source = await self._resolve_folder()

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(verify=tls_context(self._ca_file), proxy=self._proxy(),
                                 trust_env=False, timeout=httpx.Timeout(self._timeout),
                                 headers={"User-Agent": "reconciler-graph-fetch/1"})

    def _proxy(self) -> str | None:
        name = self.server.spec.proxy
        if not name:
            return None
        proxy = self._proxy_lookup(self.server) if self._proxy_lookup is not None else None
        if proxy is None:
            raise config_error(self.server, f"it uses ProxyServer {name}, which is not available "
                               "here", "Define the ProxyServer in the same namespace, or remove "
                               "proxy from the incoming server; mail is never fetched around a "
                               "configured proxy.")
        if bypasses(proxy, urlsplit(self.endpoint).hostname or ""):
            return None
        if proxy.type == ProxyType.SOCKS5:
            raise config_error(self.server, f"ProxyServer {name} is SOCKS5",
                               "Fetching over Graph goes through http or https proxies only.")
        try:
            return proxy_url(proxy, self.redactor)
        except (SecretError, ValueError) as exc:
            raise config_error(self.server, f"proxy {name}: {exc}", "Use an http or https "
                               "ProxyServer with a readable password.") from None

    async def _fetch_token(self) -> str:
        server = self.server
        if not isinstance(server.spec.auth, OAuth2Auth):
            raise config_error(server, "Microsoft Graph accepts only OAuth2",
                               "Set auth type oauth2 (provider microsoft) for this mailbox.")
        token = await access_token(self._token_provider, server, self.mailbox, self.redactor,
                                   at=url_host_endpoint(self.endpoint), consent="admin consent")
        self.redactor.add(token)
        return token

    async def aclose(self) -> None:
        client, self._client = self._client, None
        self._source = self._error = None
        if client is not None:
            try:
                await client.aclose()
            except Exception as exc:  # closing must not fail the caller
                log.debug("closing the Graph client: %s", self.redactor(str(exc)))

    # -- one request --------------------------------------------------------

    async def _request(self, step: str, method: str, url: str, *,
                       ok: tuple[int, ...] = (200,), missing_ok: bool = False,
                       stream: bool = False, **kwargs: Any) -> httpx.Response | None:
        """One Graph call: refresh a refused token once, wait out throttling, turn failures
        into FetchError. None for a 404 when ``missing_ok`` (the message is gone). With
        ``stream`` a successful answer comes back unread: the caller reads and closes it."""
        if self._client is None:
            self._client = self._new_client()
        if not self._token:
            self._token = await self._fetch_token()
        refreshed = False
        waits = 0
        while True:
            try:
                request = self._client.build_request(
                    method, url, headers={"Authorization": f"Bearer {self._token}"}, **kwargs)
                response = await self._client.send(request, stream=True)
                status = response.status_code
                if status in ok and stream:
                    return response
                try:
                    await response.aread()
                finally:
                    await response.aclose()
            except httpx.HTTPError as exc:
                raise self._network(exc, step) from None
            if status in ok:
                return response
            if status == 401 and not refreshed:
                refreshed = True
                log.info("Graph refused the access token for %s while %s; fetching a new one",
                         self.mailbox, step)
                if await invalidate_token(self._token_provider, self.server,  # type: ignore[arg-type]
                                          self._token):
                    self._token = await self._fetch_token()
                    continue
            if status in RETRY_AFTER_STATUS:
                wait = retry_after(response.headers.get("retry-after"))
                if wait is not None and wait <= MAX_WAIT_S and waits < MAX_WAITS:
                    waits += 1
                    log.info("Graph answered %s for %s while %s; waiting %gs (Retry-After)",
                             status, self.mailbox, step, wait)
                    await asyncio.sleep(wait)
                    continue
            if status == 404 and missing_ok:
                return None
            raise self._refused(response, step, refreshed)

    def _refused(self, response: httpx.Response, step: str, refreshed: bool) -> FetchError:
        status = response.status_code
        code, message = graph_error(response)
        said = self.redactor(f"{status} {code}: {message}" if code else f"{status} {message}")
        where = f"while {step}"
        if status == 401:
            again = " even with a freshly fetched token" if refreshed else ""
            return FetchError(FetchErrorKind.AUTH,
                              f"Graph refused the access token for {self.mailbox}{again} "
                              f"{where} ({said})",
                              "Check that the app registration's tenant and national cloud "
                              "match graphEndpoint and that the token is for Microsoft Graph; "
                              "re-authorise with `reconcile auth login SERVER` if the grant "
                              "was revoked or consent was withdrawn.")
        if status == 403:
            return FetchError(FetchErrorKind.AUTH,
                              f"Graph denied access to mailbox {self.mailbox} {where} ({said})",
                              "Grant the app the Mail.ReadWrite permission (an application "
                              "permission with admin consent for client credentials, or "
                              "delegated Mail.ReadWrite.Shared); Mail.Read can list but not "
                              "mark mail read or move it. Check that no application access "
                              "policy excludes this mailbox.")
        if status == 404:
            if code in ("ErrorInvalidUser", "MailboxNotEnabledForRESTAPI", "ResourceNotFound",
                        "ErrorNonExistentMailbox"):
                return FetchError(FetchErrorKind.CONFIG,
                                  f"Graph does not know mailbox {self.mailbox} ({said})",
                                  "Check email in the incoming server spec: it must be an "
                                  "existing mailbox in the app's tenant (not a group or a "
                                  "contact).")
            return FetchError(FetchErrorKind.CONFIG,
                              f"Graph found no {step.removeprefix('reading ')} in "
                              f"{self.mailbox} ({said})",
                              "Check folder in the incoming server spec.")
        if status in RETRY_AFTER_STATUS or status >= 500:
            what = "is throttling this mailbox" if status == 429 else "is unavailable"
            return FetchError(FetchErrorKind.CONNECT, f"Graph {what} {where} ({said})",
                              "The fetch is retried at the next interval; if throttling "
                              "persists, lengthen fetch_interval_minutes or spread mailboxes "
                              "over app registrations.")
        return FetchError(FetchErrorKind.PROTOCOL, f"Graph refused the request {where} "
                          f"({said})", "If this persists, report the Graph error code above; "
                          "the fetch is retried at the next interval.")

    def _network(self, exc: httpx.HTTPError, step: str) -> FetchError:
        chain = exception_chain(exc)
        cert = first_of(chain, ssl.SSLCertVerificationError)
        if cert is not None:
            return FetchError(FetchErrorKind.TLS, f"the certificate of {self.address} is not "
                              f"trusted ({cert.verify_message or cert.reason or cert})",
                              "If a proxy or a private CA signs it, trust that CA with the "
                              "daemon's ca_file setting or RECONCILE_TLS_CA_FILE; certificate "
                              "checks cannot be switched off.")
        tls = first_of(chain, ssl.SSLError)
        if tls is not None:
            return FetchError(FetchErrorKind.TLS, f"TLS handshake with {self.address} failed "
                              f"({tls})", "Check graphEndpoint and the proxy.")
        if isinstance(exc, httpx.ProxyError):
            return FetchError(FetchErrorKind.CONNECT, "the proxy refused the connection to "
                              f"{self.address}", "Check the ProxyServer's host, port and "
                              "credentials.")
        if isinstance(exc, httpx.TimeoutException):
            return FetchError(FetchErrorKind.CONNECT, f"{self.address} did not answer in time "
                              f"while {step}", "The fetch is retried at the next interval.")
        if isinstance(exc, httpx.ConnectError):
            return FetchError(FetchErrorKind.CONNECT, f"cannot connect to {self.address} "
                              f"({self.redactor(str(exc) or type(exc).__name__)})",
                              "Check graphEndpoint, DNS and firewall rules (outbound HTTPS).")
        return FetchError(FetchErrorKind.CONNECT, f"the connection to {self.address} failed "
                          f"while {step} ({self.redactor(str(exc) or type(exc).__name__)})",
                          "The fetch is retried at the next interval.")

    # -- folders ------------------------------------------------------------

    async def _resolve_folder(self) -> str:
        steps = [s for s in self.folder.replace("\\", "/").split("/") if s]
        current: str | None = None
        if not steps or steps[0].lower() == "inbox":
            current, steps = "inbox", steps[1:]
        for step in steps:
            found = await self._child(current, step)
            if found is None:
                raise config_error(self.server, f"the mailbox {self.mailbox} has no folder "
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
        # Read from the stream into one buffer: the response object is never given the
        # body, so it does not outlive this mail (httpx responses sit in reference
        # cycles until the collector runs; 200 kept bodies would be 200 mails in memory).
        response = await self._request(
            "downloading a mail", "GET",
            f"{self.users}/messages/{quote(message_id, safe='')}/$value", missing_ok=True,
            stream=True)
        if response is None:
            return None
        body = bytearray()
        try:
            async for chunk in response.aiter_bytes():  # decoded if Graph compressed it
                body += chunk
        except httpx.HTTPError as exc:
            raise self._network(exc, "downloading a mail") from None
        finally:
            await response.aclose()
        return bytes(body)

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
