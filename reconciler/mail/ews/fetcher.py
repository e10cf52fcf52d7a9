"""EWS fetcher (SPEC I1, I6) on exchangelib.

The session (:mod:`reconciler.mail.ews.session`: one thread of its own, so calls of
one session stay in order; credentials, TLS, proxy, token refresh, busy waits) is the
transport's. What is the fetcher's own:

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
- Busy servers are waited out up to ``MAX_BUSY_WAIT_S`` per wait.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from exchangelib import Account, Folder, Message
from exchangelib import errors as ews_errors
from exchangelib.folders import FolderCollection
from exchangelib.services import CreateFolder

from reconciler.config.models.incoming_server import IncomingServer
from reconciler.mail.ews.session import EwsSession, ProxyLookup, service_url
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
from reconciler.mail.outcome import Failure
from reconciler.mail.steps import Reason, Step
from reconciler.oauth.source import TokenProvider
from reconciler.runtime.tls import CA_FILE_ENV, tls_context

log = logging.getLogger(__name__)

T = TypeVar("T")

PAGE_SIZE = 100  # ids per FindItem page: small answers, few round trips
MAX_BUSY_WAIT_S = 60.0
_MISSING = (ews_errors.ErrorItemNotFound, ews_errors.ErrorInvalidIdMalformed)
_KINDS = {Failure.CONNECT: FetchErrorKind.CONNECT, Failure.TIMEOUT: FetchErrorKind.CONNECT,
          Failure.TLS: FetchErrorKind.TLS, Failure.TLS_VERIFY: FetchErrorKind.TLS,
          Failure.AUTH: FetchErrorKind.AUTH, Failure.CONFIG: FetchErrorKind.CONFIG}
Handle = tuple[str, str | None]  # ItemId, ChangeKey (None: any)


@dataclass(frozen=True, slots=True)
class _Listed:
    item_id: str
    changekey: str | None
    received_at: datetime | None


class EwsFetcher(Fetcher):
    protocol = "ews"
    supports_error_folder = True

    def __init__(self, server: IncomingServer, *,
                 token_provider: TokenProvider | None = None,
                 ca_file: str | Path | None = None, timeout: float = 30.0,
                 proxy_lookup: ProxyLookup | None = None, page_size: int = PAGE_SIZE) -> None:
        super().__init__(server)
        self._page_size = page_size
        self.folder = str(server.spec.folder)
        self.mailbox = str(server.spec.email)
        ca = ca_file or os.environ.get(CA_FILE_ENV) or None
        url = service_url(server)
        if url is None:
            raise config_error(server, "neither ewsUrl nor host is set", "Set ewsUrl to the "
                               "server's EWS endpoint (for example "
                               "https://mail.example.com/EWS/Exchange.asmx).")
        self.session = EwsSession(server, url, mailbox=self.mailbox,
                                  tls=tls_context(ca), token_provider=token_provider,
                                  proxy_lookup=proxy_lookup, timeout=timeout)
        self._folders_of: Account | None = None  # the account _source and _error belong to
        self._source: Any = None  # the fetched folder (exchangelib folder object)
        self._error: Any = None  # the error folder once found or created
        self._handles: dict[str, str | None] = {}  # marker -> ChangeKey seen in this session
        self._sequence = 0

    @property
    def error_folder(self) -> str:
        return str(self.server.spec.error_folder.name)

    # -- session ----------------------------------------------------------

    async def connect(self) -> None:
        await self._call("opening the mailbox", lambda account: None)

    async def aclose(self) -> None:
        self._source = self._error = self._folders_of = None
        self._handles.clear()
        await self.session.aclose()

    async def _call(self, step: str, fn: Callable[..., T], *args: object) -> T:
        """``fn(account, *args)`` in the session's thread, the folder found first on a new
        account; failures become FetchError."""
        def work(account: Account) -> T:
            if self._folders_of is not account:  # folders belong to the account that found them
                self._source, self._error = self._open_source(account), None
                self._folders_of = account
            return fn(account, *args)

        try:
            return await self.session.call(work, may_wait=lambda wait: wait <= MAX_BUSY_WAIT_S)
        except MailFailure as failure:
            during = f" while {step}" if failure.step == Step.API else ""
            kind = _KINDS.get(failure.failure) or (
                FetchErrorKind.CONNECT if failure.retry_after is not None
                else FetchErrorKind.PROTOCOL)
            if failure.failure == Failure.CONFIG:
                raise config_error(self.server, failure.message, failure.likely_fix) from None
            raise FetchError(kind, f"{failure.message}{during}", failure.likely_fix) from None

    # -- folders ------------------------------------------------------------

    def _open_source(self, account: Account) -> Any:
        """Find the fetched folder (this is also the first authenticated call)."""
        steps = [s for s in self.folder.replace("\\", "/").split("/") if s]
        if steps and steps[0].lower() == "inbox":
            folder = account.inbox
            steps = steps[1:]
        else:
            folder = account.msg_folder_root
        for step in steps:
            folder = self._child(folder, step)
            if folder is None:
                raise MailFailure(Step.API, Reason.NOT_FOUND, f"the mailbox {self.mailbox} has "
                                  f"no folder {self.folder}", failure=Failure.CONFIG,
                                  permanent=True, likely_fix="Check folder in the incoming "
                                  "server spec: a path of folder names below the top of the "
                                  "mailbox, separated by '/', such as Inbox/Support; INBOX "
                                  "means the inbox.")
        return folder

    def _child(self, parent: Any, name: str) -> Any:
        try:
            return parent // name  # FindFolder, shallow, by display name; no folder cache
        except ews_errors.ErrorFolderNotFound:
            return None

    def _error_folder(self, account: Account, create: bool) -> Any:
        if self._error is None:
            root = account.msg_folder_root
            found = self._child(root, self.error_folder)
            if found is None and create:
                template = Folder(parent=root, name=self.error_folder, folder_class="IPF.Note")
                made = CreateFolder(account=account).get(parent_folder=root, folders=[template])
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

    def _list(self, account: Account, offset: int) -> list[_Listed]:
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

    def _download(self, account: Account, marker: str, listed: _Listed) -> FetchedMail | None:
        [item] = list(account.fetch(ids=[(listed.item_id, listed.changekey)],
                                    folder=self._source, only_fields=["mime_content"]))
        if isinstance(item, _MISSING):
            return None  # moved or deleted by someone else since the listing
        if isinstance(item, Exception):
            raise item
        raw = bytes(item.mime_content or b"")
        self._handles[marker] = item.changekey
        self._sequence += 1
        return FetchedMail(marker=marker, raw=raw, size=len(raw), folder=self.folder,
                           uid=self._sequence, received_at=listed.received_at)

    def _item_id(self, mail: FetchedMail) -> Handle | None:
        prefix = f"ews:{self.folder}:"
        if not mail.marker.startswith(prefix):
            log.warning("mail %s was not fetched from %s; left as it is", mail.marker, self.folder)
            return None
        return mail.marker[len(prefix):], self._handles.get(mail.marker)

    async def mark_done(self, mail: FetchedMail) -> None:
        handle = self._item_id(mail)
        if handle is not None:
            await self._call("marking a mail read", self._set_read, [handle], True)
            self._handles.pop(mail.marker, None)

    @staticmethod
    def _set_read(account: Account, handles: list[Handle], read: bool) -> None:
        items = [(Message(account=account, id=item_id, changekey=changekey, is_read=read),
                  ["is_read"]) for item_id, changekey in handles]
        _done(account.bulk_update(items=items, conflict_resolution="AlwaysOverwrite",
                                  suppress_read_receipts=True))

    # -- error folder (I6) ------------------------------------------------

    async def move_to_error_folder(self, mail: FetchedMail) -> None:
        handle = self._item_id(mail)
        if handle is not None:
            await self._call(f"moving a mail to {self.error_folder}", self._move_to_error, handle)
            self._handles.pop(mail.marker, None)

    def _move_to_error(self, account: Account, handle: Handle) -> None:
        _done(account.bulk_move(ids=[handle], to_folder=self._error_folder(account, True)))

    async def error_folder_count(self) -> int:
        return int(await self._call("counting the error folder", self._count_error))

    def _count_error(self, account: Account) -> int:
        folder = self._error_folder(account, create=False)
        return 0 if folder is None else int(refreshed(account, folder).total_count or 0)

    async def move_back_from_error_folder(self) -> int:
        return int(await self._call("moving mails back from the error folder", self._move_back))

    def _move_back(self, account: Account) -> int:
        folder = self._error_folder(account, create=False)
        if folder is None:
            return 0
        moved = 0
        while True:
            page = [(i.id, i.changekey) for i in folder.all().only("id")[:self._page_size]
                    if not isinstance(i, Exception)]
            if not page:
                return moved
            self._set_read(account, page, False)  # unread again: the fetch takes them again
            done = _done(account.bulk_move(ids=[(item_id, None) for item_id, _ in page],
                                           to_folder=self._source))
            if not done:
                return moved  # every listed mail vanished meanwhile: nothing left to move
            moved += done

    # -- waiting ----------------------------------------------------------

    async def wait_for_new(self, timeout: float) -> bool:
        await asyncio.sleep(timeout)
        return False


def refreshed(account: Account, folder: Any) -> Any:
    """The folder as the server has it now (GetFolder): its counts, not the cached ones."""
    [fresh] = list(FolderCollection(account=account, folders=[folder])
                   .get_folders(additional_fields=None))
    if isinstance(fresh, Exception):
        raise fresh
    return fresh


def _done(results: Any) -> int:
    """How many of a bulk call's items were done; items gone meanwhile are skipped, any other
    per-item error raised."""
    done = 0
    for result in results:
        if isinstance(result, _MISSING):
            continue
        if isinstance(result, Exception):
            raise result
        done += 1
    return done
