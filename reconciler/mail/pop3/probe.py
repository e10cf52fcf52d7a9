"""The POP3 steps of an incoming connection check (SPEC I9); see mail.incoming_check.
POP3 has no folders; the sample is read with TOP and nothing is ever deleted."""

from __future__ import annotations

from typing import Any

from reconciler.mail import fetch_errors as errors
from reconciler.mail.incoming_check import IncomingCheck, first_line, headers_text
from reconciler.mail.pop3.fetcher import Pop3Fetcher, _capabilities, _Client


class Pop3Check(IncomingCheck):
    fetcher_class = Pop3Fetcher
    has_folders = False

    def greet(self) -> str:
        self.client = _Client(self.where.host, self.where.port, timeout=self.budget,
                              progress=[errors.GREETING], connect=self.connected)
        return first_line(self.client.getwelcome())

    def starttls(self) -> Any:
        if "STLS" not in _capabilities(self.client):
            raise errors.described(self.where, "no-starttls", command="STLS")
        self.client.stls(self.fetcher._tls())
        return self.client.sock

    def count(self) -> str:
        self.messages, size = self.client.stat()
        return f"{self.messages} message(s), {size} bytes (POP3 has no folders or flags)"

    def sample(self) -> str:
        if not self.messages:
            return "the mailbox is empty: no message to sample"
        _, lines, _ = self.client.top(self.messages, 0)
        headers = headers_text(b"\r\n".join(lines))
        return f"newest message (number {self.messages}): {headers}"
