"""The IMAP steps of an incoming connection check (SPEC I9); see mail.incoming_check.
Read-only: the folder is opened with EXAMINE and the sample is read with BODY.PEEK."""

from __future__ import annotations

from typing import Any

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from reconciler.mail import fetch_errors as errors
from reconciler.mail.imap.client import Client
from reconciler.mail.imap.fetcher import ImapFetcher
from reconciler.mail.incoming_check import IncomingCheck, counted, first_line, headers_text
from reconciler.mail.steps import Reason, Step

_HEADERS = b"BODY[HEADER.FIELDS (FROM SUBJECT DATE)]"


class ImapCheck(IncomingCheck):
    fetcher_class = ImapFetcher

    def greet(self) -> str:
        self.client = Client(self.where.host, self.where.port, connect=self.connected,
                             ssl=False, timeout=self.budget)
        return first_line(self.client.welcome)

    def starttls(self) -> Any:
        if not self.client.has_capability("STARTTLS"):
            raise errors.described(self.where, "no-starttls", command="STARTTLS")
        self.client.starttls(self.fetcher._tls())
        return self.client.socket()

    def folder(self) -> str:
        folder = self.fetcher.folder
        try:
            selected = self.client.select_folder(folder, readonly=True)
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:
            names = sorted(str(f[2]) for f in self.client.list_folders())
            raise errors.config_error(
                self.where, f"the folder {folder} cannot be opened "
                f"({self.fetcher.redactor(str(exc))}); the mailbox has: {', '.join(names)}",
                "Set folder in the incoming server spec to one of the folders listed (names "
                "are case sensitive except INBOX).", step=Step.FOLDER,
                reason=Reason.NOT_FOUND) from None
        self.messages = int(selected.get(b"EXISTS", 0))
        return f"{folder} opened read-only (UIDVALIDITY {selected.get(b'UIDVALIDITY', '?')})"

    def count(self) -> str:
        unread = len(self.client.search("UNSEEN"))
        return counted(self.messages, unread)

    def sample(self) -> str:
        if not self.messages:
            return "the folder is empty: no message to sample"
        uid = max(self.client.search("ALL"))
        found = self.client.fetch([uid], ["BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)]"])
        raw = bytes(found.get(uid, {}).get(_HEADERS, b""))
        return f"newest message (UID {uid}): {headers_text(raw)}"
