"""EWS fetcher (SPEC I1, I6) on exchangelib, in the fetcher's own thread.

- **Threads, never the loop.** exchangelib blocks (requests), so every call
  runs in a one-thread executor of this fetcher: calls of one session stay in
  order and a slow Exchange server holds only its own thread. Accounts, the
  HTTP adapter (our verifying TLS context, the server's ProxyServer), the
  fail-fast retry policy and the log filter are the EWS transport's
  (:mod:`reconciler.mail.ews.session`), so both directions
  behave alike.
- **Auth**: Basic (exchangelib lets the server's ``WWW-Authenticate`` choose
  NTLM, Digest or Basic) or OAuth2 with an access token from our token
  provider; exchangelib never fetches or refreshes tokens itself. A 401 on an
  OAuth2 session invalidates the token and tries once more with a new one.
  Client-credential (app-only) tokens act on the mailbox by impersonation.
- **Folder**: ``folder: INBOX`` (any case) is the distinguished inbox; any
  other value is a path of display names below the top of the information
  store (``Support/Incoming``), the first step may again be ``Inbox``.
- **Listing** is FindItem with ``IdOnly`` plus DateTimeReceived (the
  InternetMessageId is a "complex" property FindItem cannot return), restricted
  to unread items, sorted oldest first, in pages (``IndexedPageItemView``) of
  ``page_size``. Ids are collected up to ``limit`` not-done mails before the
  first download, so marking mails read while the caller works cannot shift
  the offsets of a page not yet read.
  Bodies come one at a time (GetItem ``MimeContent``): memory holds one mail.
- **Markers** are ``ews:{folder}:{ItemId}``. Exchange keeps an item's ItemId
  while the item stays in its folder (reading it changes only the ChangeKey);
  a move gives it a new one. So a mail moved to the error folder and back is
  a new arrival with a new marker, exactly what ``retry`` wants, and a mail
  whose id changed by other means (a mailbox migration) is caught by the
  pipeline's duplicate Message-ID check, since the MIME content carries the
  InternetMessageId.
- ``mark_done`` is UpdateItem ``IsRead=true`` (AlwaysOverwrite: setting the
  flag is idempotent, and a marker from an earlier session has no ChangeKey;
  read receipts are suppressed). Nothing is ever deleted.
- **Error folder (I6)**: a folder of that name directly below the top of the
  information store, created (CreateFolder) when missing; MoveItem there;
  its TotalCount; moving back marks the mails unread first.
- ``wait_for_new`` sleeps the interval. EWS streaming and pull notifications
  would wake earlier but need a subscription kept alive per mailbox; the
  fetch interval is what the desks this replaces offer, so they are out of
  scope here.
- Busy servers: ``ErrorServerBusy`` with BackOffMilliseconds, or HTTP 503 with
  Retry-After, is waited out on the event loop (up to ``MAX_BUSY_WAITS`` times,
  each at most ``MAX_BUSY_WAIT_S``) and the call tried again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from exchangelib import Account, Folder, Message
from exchangelib import errors as ews_errors
from exchangelib.folders import FolderCollection
from exchangelib.services import CreateFolder

from reconciler.config.endpoints import url_host_endpoint
from reconciler.config.models.auth import BasicAuth, OAuth2Auth, OAuthGrant
from reconciler.config.models.incoming_server import IncomingServer
from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.config.secrets import SecretError
from reconciler.mail.ews.session import (
    EwsHttpAdapter,
    HttpStatusError,
    Login,
    Route,
    add_login_secrets,
    bypasses,
    exception_chain,
    first_of,
    install_adapter,
    is_new_connection_error,
    open_account,
    proxy_url,
    retire_account,
    short,
)
from reconciler.mail.fetch_errors import config_error, username_of
from reconciler.mail.fetcher import (
    AlreadyDone,
    FetchedMail,
    Fetcher,
    FetchError,
    FetchErrorKind,
    IncomingTokenProvider,
    is_done,
)
from reconciler.mail.threaded import access_token, read_password
from reconciler.mail.transport import Redactor
from reconciler.oauth.source import invalidate_token
from reconciler.runtime.tls import CA_FILE_ENV, tls_context

log = logging.getLogger(__name__)

T = TypeVar("T")

EWS_PATH = "/EWS/Exchange.asmx"
PAGE_SIZE = 100  # ids per FindItem page: small answers, few round trips
MAX_BUSY_WAITS = 3
MAX_BUSY_WAIT_S = 60.0
_MISSING = (ews_errors.ErrorItemNotFound, ews_errors.ErrorInvalidIdMalformed)
_AUTH_CODES = frozenset({
    "ErrorAccessDenied", "ErrorImpersonateUserDenied", "ErrorImpersonationDenied",
    "ErrorImpersonationFailed", "ErrorNoApplicableProxyCASServersAvailable",
})

# The ProxyServer an incoming server names, looked up in the config it came from.
ProxyLookup = Callable[[IncomingServer], ProxyServerSpec | None]


@dataclass(frozen=True, slots=True)
class _Listed:
    item_id: str
    changekey: str | None
    received_at: datetime | None


class _Busy(Exception):
    def __init__(self, wait: float, detail: str) -> None:
        super().__init__(detail)
        self.wait = wait


def ews_url_of(server: IncomingServer) -> str:
    spec = server.spec
    if spec.ews_url:
        return str(spec.ews_url)
    if spec.host:
        return f"https://{spec.host}{EWS_PATH}"
    raise config_error(server, "neither ewsUrl nor host is set",
                       "Set ewsUrl to the server's EWS endpoint (for example "
                       "https://mail.example.com/EWS/Exchange.asmx).")


class EwsFetcher(Fetcher):
    protocol = "ews"
    supports_error_folder = True

    def __init__(self, server: IncomingServer, *,
                 token_provider: IncomingTokenProvider | None = None,
                 ca_file: str | Path | None = None, timeout: float = 30.0,
                 proxy_lookup: ProxyLookup | None = None, page_size: int = PAGE_SIZE) -> None:
        super().__init__(server)
        install_adapter()
        self._token_provider = token_provider
        self._ca_file = ca_file or os.environ.get(CA_FILE_ENV) or None
        self._timeout = timeout
        self._proxy_lookup = proxy_lookup
        self._page_size = page_size
        self.url = ews_url_of(server)
        parts = urlsplit(self.url)
        self.address = f"{parts.hostname}:{parts.port or 443}"
        self.folder = str(server.spec.folder)
        self.mailbox = str(server.spec.email)
        self.redactor = Redactor()
        self._executor: ThreadPoolExecutor | None = None
        self._account: Account | None = None
        self._login: Login | None = None
        self._source: Any = None  # the fetched folder (exchangelib folder object)
        self._error: Any = None  # the error folder once found or created
        self._handles: dict[str, str | None] = {}  # marker -> ChangeKey seen in this session
        self._sequence = 0

    @property
    def error_folder(self) -> str:
        return str(self.server.spec.error_folder.name)

    # -- session ----------------------------------------------------------

    async def connect(self) -> None:
        if self._account is not None:
            return
        await self._call("opening the mailbox", self._open_source)

    async def _start(self) -> None:
        """Resolve credentials and routes and build the account (no network I/O yet)."""
        login = await self._resolve_login()
        self._route()
        old, self._account = self._account, None
        self._login = login
        account = await self._run(self._new_account, login)
        self._account, self._source, self._error = account, None, None
        if old is not None:
            await self._run(retire_account, old)

    def _new_account(self, login: Login) -> Account:
        auth = self.server.spec.auth
        app_only = isinstance(auth, OAuth2Auth) and auth.grant == OAuthGrant.CLIENT_CREDENTIALS
        return open_account(self.url, login, mailbox=self.mailbox, app_only=app_only,
                            timeout=self._timeout, threads=1)

    async def _resolve_login(self) -> Login:
        server = self.server
        auth = server.spec.auth
        username = username_of(server)
        at = url_host_endpoint(self.url)
        if isinstance(auth, BasicAuth):
            login = Login("basic", username, read_password(server, auth, at))
        elif isinstance(auth, OAuth2Auth):
            token = await access_token(self._token_provider, server, username, self.redactor,
                                       at=at)
            login = Login("oauth2", username, token)
        else:
            raise config_error(server, "EWS needs authentication",
                               "Set auth type basic (username and password) or oauth2.")
        add_login_secrets(self.redactor, login)
        return login

    def _route(self) -> None:
        """TLS and proxy settings for our EWS URL, through exchangelib's adapter hook."""
        proxies: dict[str, str] = {}
        name = self.server.spec.proxy
        if name:
            proxy = self._proxy_lookup(self.server) if self._proxy_lookup is not None else None
            if proxy is None:
                raise config_error(self.server, f"it uses ProxyServer {name}, which is not "
                                   "available here", "Define the ProxyServer in the same "
                                   "namespace, or remove proxy from the incoming server; mail is "
                                   "never fetched around a configured proxy.")
            if not bypasses(proxy, urlsplit(self.url).hostname or ""):
                try:
                    address = proxy_url(proxy, self.redactor)
                except (SecretError, ValueError) as exc:
                    raise config_error(self.server, f"proxy {name}: {exc}",
                                       "Fix the ProxyServer (type http or https, readable "
                                       "password).") from None
                proxies = {"http": address, "https": address}
        EwsHttpAdapter.register(self.url, Route(tls_context(self._ca_file), proxies))

    async def aclose(self) -> None:
        account, self._account = self._account, None
        self._source = self._error = None
        self._handles.clear()
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if account is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(executor, retire_account,
                                                                 account)
            except Exception as exc:  # closing must not fail the caller
                log.debug("closing the EWS session of %s: %s", self.mailbox,
                          self.redactor(short(exc)))
        executor.shutdown(wait=False)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"ews-{self.server.metadata.name}")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _call(self, step: str, fn: Callable[..., T], *args: object) -> T:
        """Run one operation (starting the session first when needed), refreshing a refused
        OAuth token once and waiting out a busy server; failures become FetchError."""
        token_retried = False
        busy_waits = 0
        while True:
            try:
                if self._account is None:
                    await self._start()
                if self._source is None and fn != self._open_source:
                    await self._run(self._open_source)
                return await self._run(fn, *args)
            except FetchError:
                raise
            except Exception as exc:
                refused = isinstance(exc, ews_errors.UnauthorizedError)
                error = self._classify(exc, step)
            if isinstance(error, _Busy):
                if busy_waits < MAX_BUSY_WAITS and error.wait <= MAX_BUSY_WAIT_S:
                    busy_waits += 1
                    log.info("%s: %s; waiting %gs as it asked", self.address,
                             self.redactor(str(error)), error.wait)
                    await asyncio.sleep(error.wait)
                    continue
                raise FetchError(FetchErrorKind.CONNECT, f"{self.address} is busy while {step} "
                                 f"({self.redactor(str(error))})",
                                 "Exchange is throttling this mailbox; the fetch is retried at "
                                 "the next interval. If it persists, check the throttling "
                                 "policy that applies to the account.")
            login = self._login
            if (refused and login is not None and login.kind == "oauth2" and not token_retried):
                token_retried = True
                if await invalidate_token(self._token_provider, self.server,  # type: ignore[arg-type]
                                          login.secret):
                    log.info("%s refused the access token for %s; trying once with a new one",
                             self.address, self.mailbox)
                    await self._reset()
                    continue
            if error.kind in (FetchErrorKind.CONNECT, FetchErrorKind.TLS, FetchErrorKind.AUTH):
                await self._reset()  # start clean next time: a new session, a new token
            raise error

    async def _reset(self) -> None:
        account, self._account = self._account, None
        self._source = self._error = None
        if account is not None:
            try:
                await self._run(retire_account, account)
            except Exception as exc:
                log.debug("dropping the EWS session: %s", self.redactor(short(exc)))

    # -- folders ------------------------------------------------------------

    def _account_now(self) -> Account:
        if self._account is None:
            raise ews_errors.TransportError("the session was closed")
        return self._account

    def _open_source(self) -> None:
        """Find the fetched folder (this is also the first authenticated call)."""
        account = self._account_now()
        steps = [s for s in self.folder.replace("\\", "/").split("/") if s]
        if steps and steps[0].lower() == "inbox":
            folder = account.inbox
            steps = steps[1:]
        else:
            folder = account.msg_folder_root
        for step in steps:
            folder = self._child(folder, step)
            if folder is None:
                raise config_error(self.server, f"the mailbox {self.mailbox} has no folder "
                                   f"{self.folder}", "Check folder in the incoming server spec: a "
                                   "path of folder names below the top of the mailbox, separated "
                                   "by '/', such as Inbox/Support; INBOX means the inbox.")
        self._source = folder

    def _child(self, parent: Any, name: str) -> Any:
        try:
            return parent // name  # FindFolder, shallow, by display name; no folder cache
        except ews_errors.ErrorFolderNotFound:
            return None

    def _error_folder(self, create: bool) -> Any:
        if self._error is None:
            root = self._account_now().msg_folder_root
            found = self._child(root, self.error_folder)
            if found is None and create:
                template = Folder(parent=root, name=self.error_folder, folder_class="IPF.Note")
                made = CreateFolder(account=self._account_now()).get(parent_folder=root,
                                                                      folders=[template])
                found = self._child(root, self.error_folder) if made is not None else None
            self._error = found
        return self._error

    # -- fetching ---------------------------------------------------------

    async def fetch(self, already_done: AlreadyDone,
                    limit: int = 100) -> AsyncIterator[FetchedMail]:
        wanted: list[tuple[str, _Listed]] = []
        offset = 0
        while len(wanted) < limit:
            page: list[_Listed] = await self._call("listing unread mail", self._list, offset)
            for listed in page:
                marker = f"ews:{self.folder}:{listed.item_id}"
                if await is_done(already_done, marker):
                    continue
                wanted.append((marker, listed))
                if len(wanted) >= limit:
                    break
            if len(page) < self._page_size:
                break
            offset += len(page)
        for marker, listed in wanted:
            mail = await self._call("downloading a mail", self._download, marker, listed)
            if mail is not None:
                yield mail

    def _list(self, offset: int) -> list[_Listed]:
        query = (self._source.filter(is_read=False).order_by("datetime_received")
                 .only("datetime_received"))
        query.page_size = self._page_size
        items = query[offset:offset + self._page_size]
        out = []
        for item in items:
            if isinstance(item, Exception):
                raise item
            received = item.datetime_received
            out.append(_Listed(item.id, item.changekey,
                               datetime.fromisoformat(received.isoformat()) if received else None))
        return out

    def _download(self, marker: str, listed: _Listed) -> FetchedMail | None:
        [item] = list(self._account_now().fetch(ids=[(listed.item_id, listed.changekey)],
                                                folder=self._source,
                                                only_fields=["mime_content"]))
        if isinstance(item, _MISSING):
            return None  # moved or deleted by someone else since the listing
        if isinstance(item, Exception):
            raise item
        raw = bytes(item.mime_content or b"")
        self._handles[marker] = item.changekey
        self._sequence += 1
        return FetchedMail(marker=marker, raw=raw, size=len(raw), folder=self.folder,
                           uid=self._sequence, received_at=listed.received_at)

    def _item_id(self, mail: FetchedMail) -> tuple[str, str | None] | None:
        prefix = f"ews:{self.folder}:"
        if not mail.marker.startswith(prefix):
            log.warning("mail %s was not fetched from %s; left as it is", mail.marker,
                        self.folder)
            return None
        return mail.marker[len(prefix):], self._handles.get(mail.marker)

    async def mark_done(self, mail: FetchedMail) -> None:
        handle = self._item_id(mail)
        if handle is not None:
            await self._call("marking a mail read", self._set_read, [handle], True)
            self._handles.pop(mail.marker, None)

    def _set_read(self, handles: list[tuple[str, str | None]], read: bool) -> None:
        account = self._account_now()
        items = [(Message(account=account, id=item_id, changekey=changekey, is_read=read),
                  ["is_read"]) for item_id, changekey in handles]
        for result in account.bulk_update(items=items, conflict_resolution="AlwaysOverwrite",
                                          suppress_read_receipts=True):
            if isinstance(result, _MISSING):
                continue
            if isinstance(result, Exception):
                raise result

    # -- error folder (I6) ------------------------------------------------

    async def move_to_error_folder(self, mail: FetchedMail) -> None:
        handle = self._item_id(mail)
        if handle is not None:
            await self._call(f"moving a mail to {self.error_folder}", self._move_to_error,
                             handle)
            self._handles.pop(mail.marker, None)

    def _move_to_error(self, handle: tuple[str, str | None]) -> None:
        target = self._error_folder(create=True)
        self._move([handle], target)

    def _move(self, handles: list[tuple[str, str | None]], target: Any) -> int:
        moved = 0
        for result in self._account_now().bulk_move(ids=handles, to_folder=target):
            if isinstance(result, _MISSING):
                continue
            if isinstance(result, Exception):
                raise result
            moved += 1
        return moved

    async def error_folder_count(self) -> int:
        return int(await self._call("counting the error folder", self._count_error))

    def _count_error(self) -> int:
        folder = self._error_folder(create=False)
        if folder is None:
            return 0
        [fresh] = list(FolderCollection(account=self._account_now(), folders=[folder])
                       .get_folders(additional_fields=None))
        if isinstance(fresh, Exception):
            raise fresh
        return int(fresh.total_count or 0)

    async def move_back_from_error_folder(self) -> int:
        return int(await self._call("moving mails back from the error folder",
                                    self._move_back))

    def _move_back(self) -> int:
        folder = self._error_folder(create=False)
        if folder is None:
            return 0
        moved = 0
        while True:
            page = [(i.id, i.changekey) for i in folder.all().only("id")[:self._page_size]
                    if not isinstance(i, Exception)]
            if not page:
                return moved
            self._set_read(page, False)  # unread again, so the fetch processes them once more
            done = self._move([(item_id, None) for item_id, _ in page], self._source)
            if not done:
                return moved  # every listed mail vanished meanwhile: nothing left to move
            moved += done

    # -- waiting ----------------------------------------------------------

    async def wait_for_new(self, timeout: float) -> bool:
        await asyncio.sleep(timeout)
        return False

    # -- failures -------------------------------------------------------------

    def _classify(self, exc: BaseException, step: str) -> FetchError | _Busy:
        where = self.address
        chain = exception_chain(exc)
        redact = self.redactor
        cert = first_of(chain, ssl.SSLCertVerificationError)
        if cert is not None:
            message = cert.verify_message or cert.reason or str(cert)
            if cert.verify_code in (62, 64):
                return FetchError(FetchErrorKind.TLS, f"the certificate of {where} is for "
                                  f"another host name ({message})",
                                  "Set ewsUrl to a name the certificate lists (usually the "
                                  "documented EWS host name, not an IP address or alias).")
            return FetchError(FetchErrorKind.TLS, f"the certificate of {where} is not trusted "
                              f"({message})",
                              "If the server uses a private CA, trust it with the daemon's "
                              "ca_file setting or RECONCILE_TLS_CA_FILE; certificate checks "
                              "cannot be switched off.")
        tls = first_of(chain, ssl.SSLError)
        if tls is not None:
            return FetchError(FetchErrorKind.TLS, f"TLS handshake with {where} failed ({tls})",
                              "EWS needs https on a port that speaks TLS; check ewsUrl.")
        if first_of(chain, requests.exceptions.ProxyError) is not None:
            return FetchError(FetchErrorKind.CONNECT, f"the proxy did not connect us to {where}",
                              "Check the ProxyServer's host, port and credentials.")
        refused = first_of(chain, (ConnectionRefusedError, socket.gaierror))
        if refused is not None or is_new_connection_error(chain):
            if isinstance(refused, socket.gaierror) or "resolve" in str(exc).lower():
                return FetchError(FetchErrorKind.CONNECT, f"{where} does not resolve",
                                  "Check the host name in ewsUrl, and that this machine "
                                  "resolves internal names if it is internal.")
            return FetchError(FetchErrorKind.CONNECT, f"nothing accepts connections on {where}",
                              "Check ewsUrl (host and port), that Exchange is running and that "
                              "no firewall rejects the connection.")
        if first_of(chain, (requests.exceptions.Timeout, TimeoutError)) is not None:
            return FetchError(FetchErrorKind.CONNECT, f"{where} did not answer in time while "
                              f"{step}", "The server may be overloaded or a firewall drops the "
                              "connection; the fetch is retried at the next interval.")
        if first_of(chain, (requests.exceptions.ConnectionError, ConnectionError)) is not None:
            return FetchError(FetchErrorKind.CONNECT, f"the connection to {where} was lost "
                              f"while {step}", "The fetch is retried at the next interval.")
        if isinstance(exc, ews_errors.ErrorServerBusy):
            wait = float(getattr(exc, "back_off", None) or 1.0)
            return _Busy(wait, f"ErrorServerBusy: {short(exc)}")
        if isinstance(exc, ews_errors.UnauthorizedError):
            return self._refused(f"{where} refused the login for {username_of(self.server)} "
                                 "(HTTP 401)")
        if isinstance(exc, HttpStatusError):
            if exc.status == 403:
                return FetchError(FetchErrorKind.AUTH, f"{where} answered HTTP 403 Forbidden "
                                  f"while {step}", "The account may not use EWS: check that "
                                  "EWS access is allowed for it (Set-CASMailbox "
                                  "-EwsEnabled) and that no client access rule blocks it.")
            if exc.status == 404:
                return FetchError(FetchErrorKind.CONFIG, f"{where} has no EWS endpoint at "
                                  f"{urlsplit(self.url).path} (HTTP 404)",
                                  "Set ewsUrl to the EWS endpoint itself, usually "
                                  f"https://HOST{EWS_PATH}.")
            return FetchError(FetchErrorKind.PROTOCOL, f"{where} answered {exc} while {step}",
                              "If this persists, Exchange's log has the reason; the fetch is "
                              "retried at the next interval.")
        if isinstance(exc, ews_errors.RedirectError):
            return FetchError(FetchErrorKind.CONFIG, f"{where} redirects to {exc.url}",
                              "Set ewsUrl to the EWS endpoint itself.")
        code = type(exc).__name__
        if code in _AUTH_CODES:
            return FetchError(FetchErrorKind.AUTH, f"{where} denied access to mailbox "
                              f"{self.mailbox} ({code}: {redact(short(exc))})",
                              "Give the account full access to the mailbox, or for app-only "
                              "tokens the ApplicationImpersonation role (or an application "
                              "access policy that includes this mailbox).")
        if code == "ErrorNonExistentMailbox":
            return FetchError(FetchErrorKind.CONFIG, f"{where} has no mailbox {self.mailbox}",
                              "Check email in the incoming server spec: it must be the SMTP "
                              "address of an existing mailbox.")
        if code == "ErrorFolderNotFound":
            return FetchError(FetchErrorKind.CONFIG, f"the mailbox {self.mailbox} has no "
                              f"folder {self.folder}", "Check folder in the incoming server "
                              "spec.")
        if isinstance(exc, ews_errors.TransportError):
            return FetchError(FetchErrorKind.PROTOCOL, f"{where} did not answer as an EWS "
                              f"endpoint while {step} ({redact(short(exc))})", "Check ewsUrl.")
        return FetchError(FetchErrorKind.PROTOCOL, f"{where} answered unexpectedly while "
                          f"{step}: {code}: {redact(short(exc))}",
                          "If this persists, Exchange's log has the reason; the fetch is "
                          "retried at the next interval.")

    def _refused(self, message: str) -> FetchError:
        if isinstance(self.server.spec.auth, OAuth2Auth):
            fix = ("Check that the token is for EWS (scope https://outlook.office365.com/"
                   "EWS.AccessAsUser.All, or full_access_as_app for app-only), that the tenant "
                   "matches, and re-authorise with `reconcile auth login SERVER` if the grant "
                   "was revoked.")
        else:
            fix = ("Check the username and the password the reference points to. Exchange "
                   "Online no longer accepts Basic authentication for EWS: use auth type "
                   "oauth2 there. On-premises, the account may need the domain "
                   "(DOMAIN\\user or user@domain).")
        return FetchError(FetchErrorKind.AUTH, message, fix)
