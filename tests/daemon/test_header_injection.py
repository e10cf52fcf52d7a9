"""No header or body injection through POST /v1/notifications (SPEC S1, issue 11).

One real `reconcile daemon` (API and worker, SQLite store) sends to one real SMTP
peer; every vector below goes through it. A refused vector must be a 422 naming its
field with nothing stored; an accepted one must arrive as exactly the headers the
composer writes (one Reply-To, no extra header, the header block ending where it
should), with every line within RFC 5322's 998 bytes and the text decoding back to
what was sent.
"""

from __future__ import annotations

import base64
import itertools
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from peers.smtp import Received, SmtpPeer, free_port

from reconciler.cli.main import cli
from reconciler.state import open_store

from .app_kit import HOST, server_yaml, wait_for, write_config

TOKEN_ENV = "RECONCILE_TEST_S1_TOKEN"
TOKEN = "s1-header-test-token-3b9f1d"
REPLY_TO = "support@desk.example"
TEXT = "hello\n"
WRITTEN_BY_COMPOSE = {"From", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID",
                      "MIME-Version", "Content-Type", "Content-Transfer-Encoding"}
PART_HEADERS = {"Content-Type", "Content-Transfer-Encoding", "Content-Disposition",
                "MIME-Version"}
_numbers = itertools.count(1)


# -- the daemon and its peer ---------------------------------------------------------


@dataclass
class Served:
    base: str
    store_url: str
    peer: SmtpPeer
    log: Path

    def post(self, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.base}/v1/notifications", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {TOKEN}"})

    def stored(self) -> int:
        with open_store(self.store_url) as store:
            return sum(store.outbox.depth(finished=True).values())

    def arrival(self, recipient: str) -> Received:
        def find() -> Received | None:
            return next((m for m in list(self.peer.messages) if recipient in m.rcpt_tos), None)

        return wait_for(find, f"the message to {recipient} at the peer (log: {self.log})")


def _loaded(base: str) -> bool:
    try:
        status = httpx.get(f"{base}/v1/status", timeout=5,
                           headers={"Authorization": f"Bearer {TOKEN}"})
    except httpx.TransportError:
        return False
    return status.status_code == 200 and status.json()["configRevision"] >= 1


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("s1")
    store_url = str(home / "state.db")
    peer = SmtpPeer("plain").start()
    config = write_config(home / "config", server_yaml("desk", peer.port))
    applied = CliRunner().invoke(cli, ["apply", str(config), "--store", store_url, "--yes"])
    assert applied.exit_code == 0, applied.output
    port = free_port()
    log = home / "daemon.log"
    command = [sys.executable, "-m", "reconciler", "daemon", "--store", store_url,
               "--listen", f"{HOST}:{port}", "--api-token", f"env:{TOKEN_ENV}",
               "--poll-interval", "0.05", "--health-interval", "3600",
               "--shutdown-grace", "5"]
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, TOKEN_ENV: TOKEN})
    base = f"http://{HOST}:{port}"
    try:
        wait_for(lambda: process.poll() is not None or _loaded(base),
                 "the daemon to serve its API with the config loaded", timeout=60)
        assert process.poll() is None, log.read_text()
        yield Served(base, store_url, peer, log)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        peer.stop()


# -- the vectors -----------------------------------------------------------------------


def body(recipient: str, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"module": "request", "to": [recipient],
                           "subject": "Ticket ##RE-1## updated", "textBody": TEXT}
    out.update(fields)
    return out


def q(text: bytes, charset: str = "utf-8") -> str:
    """``text`` as one Q-encoded encoded-word, every byte escaped."""
    return f"=?{charset}?q?" + "".join(f"={b:02X}" for b in text) + "?="


def b64(text: bytes, charset: str = "utf-8") -> str:
    return f"=?{charset}?b?" + base64.b64encode(text).decode() + "?="


INJECT = b"x\r\nReply-To: evil@attacker.example"
ATTACHMENT = {"name": "report.txt", "contentType": "text/plain",
              "data": base64.b64encode(b"report").decode()}


def attachment(name: str) -> dict[str, str]:
    return {**ATTACHMENT, "name": name}


@dataclass(frozen=True)
class Refused:
    """A body (built for a fresh recipient) that must be answered 422 naming ``field``."""

    id: str
    fields: Callable[[str], dict[str, Any]]
    field: str
    words: str = "line break"


REFUSED = [
    Refused("subject-q-utf8-crlf", lambda r: {"subject": q(INJECT)}, "subject"),
    Refused("subject-q-issue-text", lambda r: {
        "subject": "=?utf-8?q?x=0D=0AReply-To:_evil@attacker.example?="}, "subject"),
    Refused("subject-ends-headers", lambda r: {
        "subject": "=?utf-8?q?x=0D=0A=0D=0AINJECTED?="}, "subject"),
    Refused("subject-b-utf8-crlf", lambda r: {"subject": b64(INJECT)}, "subject"),
    Refused("subject-q-latin1-crlf", lambda r: {"subject": q(INJECT, "iso-8859-1")}, "subject"),
    Refused("subject-b-latin1-crlf", lambda r: {"subject": b64(INJECT, "latin-1")}, "subject"),
    Refused("subject-q-unknown-charset", lambda r: {"subject": q(INJECT, "x-unknown")},
            "subject"),
    Refused("subject-ew-bare-lf", lambda r: {"subject": q(b"x\nX-Evil: 1")}, "subject"),
    Refused("subject-ew-bare-cr", lambda r: {"subject": q(b"x\rX-Evil: 1")}, "subject"),
    Refused("subject-ew-nul", lambda r: {"subject": q(b"x\x00y")}, "subject",
            "control character"),
    Refused("subject-ew-escape", lambda r: {"subject": q(b"x\x1b[2Jy")}, "subject",
            "control character"),
    Refused("subject-ew-del", lambda r: {"subject": q(b"x\x7fy")}, "subject",
            "control character"),
    Refused("subject-ew-u2028", lambda r: {"subject": q("x\u2028X-Evil: 1".encode())},
            "subject"),
    Refused("subject-ew-nel", lambda r: {"subject": q("x\u0085X-Evil: 1".encode())},
            "subject"),
    Refused("subject-ew-glued-in-a-word", lambda r: {
        "subject": "ab=?utf-8?q?=0D=0AX-Evil:_1?=cd"}, "subject"),
    Refused("subject-bare-lf", lambda r: {"subject": "x\nX-Evil: 1"}, "subject"),
    Refused("subject-bare-cr", lambda r: {"subject": "x\rX-Evil: 1"}, "subject"),
    Refused("subject-nul", lambda r: {"subject": "x\x00y"}, "subject", "control character"),
    Refused("subject-c1-csi", lambda r: {"subject": "x\x9by"}, "subject", "control character"),
    Refused("subject-u2028", lambda r: {"subject": "x\u2028X-Evil: 1"}, "subject"),
    Refused("to-name-ew", lambda r: {"to": [{"email": r, "name": q(INJECT)}]}, "to[0].name"),
    Refused("to-name-ew-in-text-form", lambda r: {"to": [f"{b64(INJECT)} <{r}>"]}, "to[0]"),
    Refused("cc-name-ew", lambda r: {"cc": [{"email": "cc@corp.example", "name": b64(INJECT)}]},
            "cc[0].name"),
    Refused("bcc-name-ew", lambda r: {"bcc": [{"email": "bcc@corp.example",
                                              "name": q(INJECT, "latin-1")}]}, "bcc[0].name"),
    Refused("header-value-ew", lambda r: {"headers": {"X-Foo": q(INJECT)}}, "headers.X-Foo"),
    Refused("header-value-crlf", lambda r: {"headers": {"X-Foo": "x\r\nReply-To: e@a.example"}},
            "headers.X-Foo"),
    Refused("header-name-colon", lambda r: {"headers": {"X-Foo: x\r\nReply-To": "e@a.example"}},
            "headers.X-Foo: x\r\nReply-To.[key]", "not a valid header name"),
    Refused("header-name-space", lambda r: {"headers": {"X Foo": "1"}}, "headers.X Foo.[key]",
            "not a valid header name"),
    Refused("attachment-name-ew", lambda r: {"attachments": [ATTACHMENT,
                                                             attachment(q(INJECT))]},
            "attachments[1].name"),
    Refused("attachment-name-rfc2231", lambda r: {"attachments": [attachment(
        "utf-8''x%0D%0AReply-To%3A%20evil%40attacker.example")]}, "attachments[0].name"),
    Refused("attachment-name-crlf", lambda r: {"attachments": [attachment("a\r\nX-Evil: 1")]},
            "attachments[0].name"),
    *(Refused(f"client-{name}", lambda r, name=name: {"headers": {name: "v=1; x"}},
              f"headers.{name}.[key]", "only mail servers add")
      for name in ("DKIM-Signature", "ARC-Seal", "ARC-Message-Signature",
                   "ARC-Authentication-Results", "Received", "Authentication-Results",
                   "Return-Path", "dkim-signature")),
]


@pytest.mark.parametrize("vector", REFUSED, ids=[v.id for v in REFUSED])
def test_an_injection_attempt_is_422_naming_the_field_and_stores_nothing(
    served: Served, vector: Refused
) -> None:
    recipient = f"refused{next(_numbers)}@corp.example"
    before = served.stored()
    response = served.post(body(recipient, **vector.fields(recipient)))
    assert response.status_code == 422, (vector.id, response.status_code, response.text)
    problems = response.json()["detail"]
    named = [p for p in problems if p["field"] == vector.field]
    assert named, problems
    assert vector.words in named[0]["msg"], named[0]
    assert "evil@attacker.example" not in response.text  # the value is not echoed
    assert served.stored() == before


@dataclass(frozen=True)
class Accepted:
    """A body that must be accepted and arrive whole; ``check`` looks at the message."""

    id: str
    fields: dict[str, Any]
    subject: str | None = None  # the decoded subject expected, if not the one sent
    check: Callable[[EmailMessage, bytes], None] | None = field(default=None)


LONG_NAME = "x" * 10_000
QUOTED_NAME = 'a"b, ' * 2_000
# Longer than a line: the email package on 3.11.7 folds it without its quotes, and
# every evil@attacker.example in it becomes an address of its own.
SMITH = ", ".join(["Smith", "evil@attacker.example"] * 5)


def _rfc2047(raw: bytes, name: str) -> str:
    """Header ``name`` of ``raw`` decoded as RFC 2047 says (adjacent encoded-words
    join without the space between them, which the email package's address parser
    on 3.11 keeps)."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    unfolded = re.sub(r"\r\n(?=[ \t])", "", head)
    value = next(line.split(":", 1)[1] for line in unfolded.split("\r\n")
                 if line.lower().startswith(name.lower() + ":"))
    return str(make_header(decode_header(value.strip())))


def _long_name(name: str) -> Callable[[EmailMessage, bytes], None]:
    def check(msg: EmailMessage, raw: bytes) -> None:
        [address] = msg["To"].addresses
        assert address.addr_spec.startswith("accepted")
        display, _, addr = _rfc2047(raw, "To").rpartition(" <")
        if display.startswith('"') and display.endswith('"'):  # a quoted string
            display = re.sub(r"\\(.)", r"\1", display[1:-1])
        assert (display, addr) == (name, f"{address.addr_spec}>")

    return check


def _attachment_named(name: str) -> Callable[[EmailMessage, bytes], None]:
    def check(msg: EmailMessage, raw: bytes) -> None:
        [part] = list(msg.iter_attachments())
        assert part.get_filename() == name
        assert part.get_content() == "report"

    return check


def _header(name: str, value: str) -> Callable[[EmailMessage, bytes], None]:
    def check(msg: EmailMessage, raw: bytes) -> None:
        assert str(msg[name]) == value

    return check


ACCEPTED = [
    Accepted("plain-ascii", {"subject": "Ticket ##RE-7## updated"}),
    Accepted("unicode-subject", {"subject": "Požadavek ##RE-9## — café ☕"}),
    Accepted("legit-encoded-word", {"subject": "=?utf-8?q?Caf=C3=A9?= is open"},
             subject="Café is open"),
    Accepted("encoded-word-look-alike", {"subject": "Price =? unknown ?= later"}),
    Accepted("10000-char-subject", {"subject": "s" * 10_000}),
    Accepted("10000-char-subject-of-words", {"subject": " ".join(["word"] * 2_000)}),
    Accepted("10000-char-display-name", {"to": [{"email": "accepted-long@corp.example",
                                                 "name": LONG_NAME}]},
             check=_long_name(LONG_NAME)),
    Accepted("long-quoted-display-name", {"to": [{"email": "accepted-quoted@corp.example",
                                                  "name": QUOTED_NAME.strip()}]},
             check=_long_name(QUOTED_NAME.strip())),
    Accepted("display-name-with-addresses-in-slow-path", {
        "subject": "Zpráva ##RE-5##",
        "to": [{"email": "accepted-smith@corp.example", "name": SMITH}]},
        check=_long_name(SMITH)),
    Accepted("long-extra-header", {"headers": {"X-Ticket-Note": "n" * 5_000}},
             check=_header("X-Ticket-Note", "n" * 5_000)),
    Accepted("long-unicode-filename", {"attachments": [attachment("Zpráva " * 300 + ".txt")]},
             check=_attachment_named("Zpráva " * 300 + ".txt")),
    Accepted("filename-with-quote-and-parameter", {"attachments": [attachment(
        'a"; filename*=utf-8\'\'evil.exe')]},
        check=_attachment_named('a"; filename*=utf-8\'\'evil.exe')),
]


def _names(headers: Iterator[str] | list[str]) -> Counter[str]:
    return Counter(name.lower() for name in headers)


@pytest.mark.parametrize("vector", ACCEPTED, ids=[v.id for v in ACCEPTED])
def test_an_accepted_notification_arrives_with_exactly_the_composed_headers(
    served: Served, vector: Accepted
) -> None:
    recipient = f"accepted{next(_numbers)}@corp.example"
    fields = dict(vector.fields)
    if "to" in fields:
        recipient = fields["to"][0]["email"]
    sent = body(recipient, **fields)
    response = served.post(sent)
    assert response.status_code == 202, response.text
    raw = served.arrival(recipient).data

    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert b"\n" not in raw.replace(b"\r\n", b"")  # no bare LF
    assert b"\r" not in raw.replace(b"\r\n", b"")  # no bare CR
    msg = message_from_bytes(raw, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    names = _names(msg.keys())
    extra = _names(sent.get("headers", {}))
    assert set(names) <= {n.lower() for n in WRITTEN_BY_COMPOSE} | set(extra), names
    assert all(count == 1 for count in names.values()), names
    assert [str(v) for v in msg.get_all("Reply-To") or []] == [REPLY_TO]
    assert [a.addr_spec for a in msg["To"].addresses] == [recipient]
    for part in msg.walk():
        if part is not msg:
            part_names = _names(part.keys())
            assert set(part_names) <= {n.lower() for n in PART_HEADERS}, part_names
            assert all(count == 1 for count in part_names.values()), part_names
    # The header block ends where compose ended it: the body is the text sent.
    text = msg.get_body(preferencelist=("plain",))
    assert text is not None and text.get_content().replace("\r\n", "\n") == TEXT
    assert str(msg["Subject"]) == (vector.subject or sent["subject"])
    if vector.check is not None:
        vector.check(msg, raw)


def test_there_are_at_least_25_vectors() -> None:
    assert len(REFUSED) + len(ACCEPTED) >= 25
