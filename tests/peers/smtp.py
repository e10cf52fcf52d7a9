"""Real SMTP servers for tests: aiosmtpd on 127.0.0.1, certificates from trustme.

- :class:`SmtpPeer` runs one aiosmtpd ``Controller`` in its own thread:
  plain, STARTTLS (required) or implicit TLS; optional AUTH with one
  user/password (LOGIN/PLAIN) and/or one XOAUTH2 token. Its
  :class:`RecordingHandler` records every message and can be told to refuse
  single recipients, the whole transaction (at MAIL or DATA) or to hang in DATA.
  It counts connections and can drop them, to test pooling and liveness.
- :class:`HangingListener` accepts TCP connections and never says a word.
- :class:`PeerCerts` is a private CA and a server certificate for 127.0.0.1.

``peer.server(...)`` builds the OutgoingServer resource that points at the peer.
"""

from __future__ import annotations

import asyncio
import base64
import email
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any, Literal

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from reconciler.config.models.outgoing_server import OutgoingServer

HOST = "127.0.0.1"
Mode = Literal["plain", "starttls", "tls"]


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class PeerCerts:
    """A CA and a server certificate for 127.0.0.1/localhost, with the CA as a PEM file."""

    ca: trustme.CA
    server_cert: trustme.LeafCert
    ca_file: Path

    @classmethod
    def create(cls, directory: Path) -> PeerCerts:
        ca = trustme.CA()
        cert = ca.issue_cert(HOST, "localhost")
        ca_file = directory / f"ca-{id(ca)}.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        return cls(ca, cert, ca_file)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(context)
        return context


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    login: str | None
    tls: bool

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class RecordingHandler:
    """Records messages; its attributes steer how the next transactions are answered."""

    recipient_replies: dict[str, str] = field(default_factory=dict)  # address -> "550 ..."
    mail_reply: str | None = None  # refuse the whole transaction at MAIL FROM
    data_reply: str | None = None  # refuse the whole transaction after DATA
    hang_on_data: bool = False
    messages: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    noops: int = 0  # liveness checks seen

    async def handle_NOOP(self, server: SMTP, session: Session, envelope: Envelope,
                          arg: str) -> str:
        self.noops += 1
        return "250 OK"

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        reply = self.recipient_replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.hang_on_data:
            while not self.release.is_set():
                await asyncio.sleep(0.02)
        if self.data_reply:
            return self.data_reply
        content = envelope.original_content or b""
        login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else None
        transport = server.transport
        implicit_tls = transport is not None and transport.get_extra_info("ssl_object") is not None
        self.messages.append(Received(
            mail_from=str(envelope.mail_from),
            rcpt_tos=list(envelope.rcpt_tos),
            data=content,
            login=login,
            tls=session.ssl is not None or implicit_tls,
        ))
        return "250 2.0.0 queued as peer-1"


class _Authenticator:
    def __init__(self, user: str, password: str, attempts: list[str]) -> None:
        self.user = user.encode()
        self.password = password.encode()
        self.attempts = attempts

    def __call__(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                 auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            self.attempts.append(f"{mechanism} {bytes(auth_data.login).decode(errors='replace')}")
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == self.user
              and auth_data.password == self.password)
        return AuthResult(success=ok, handled=False,
                          auth_data=bytes(auth_data.login) if ok else None)


class _OAuthHandler(RecordingHandler):
    """Adds the XOAUTH2 mechanism, accepting one user/token pair."""

    oauth: tuple[str, str] = ("", "")
    auth_attempts: list[str]

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        # handled=False makes aiosmtpd answer 535 itself on failure.
        try:
            raw = base64.b64decode(args[1]).decode()
        except (IndexError, ValueError):
            return AuthResult(success=False, handled=False)
        self.auth_attempts.append(f"XOAUTH2 {raw.split(chr(1))[0].removeprefix('user=')}")
        user, token = self.oauth
        ok = raw == f"user={user}\x01auth=Bearer {token}\x01\x01"
        return AuthResult(success=ok, handled=False, auth_data=user.encode() if ok else None)


class _CountingController(Controller):
    """Remembers every SMTP session it creates (one per TCP connection)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sessions: list[SMTP] = []

    def factory(self) -> SMTP:
        smtp = super().factory()
        self.sessions.append(smtp)
        return smtp


class SmtpPeer:
    def __init__(
        self,
        mode: Mode = "plain",
        *,
        certs: PeerCerts | None = None,
        user: str | None = None,
        password: str | None = None,
        oauth_token: str | None = None,
        auth_require_tls: bool = True,
        port: int | None = None,
    ) -> None:
        if mode != "plain" and certs is None:
            raise ValueError(f"{mode} needs certs")
        self.mode = mode
        self.user = user
        self.handler: RecordingHandler = _OAuthHandler() if oauth_token else RecordingHandler()
        if oauth_token and isinstance(self.handler, _OAuthHandler):
            self.handler.oauth = (user or "", oauth_token)
        self.port = port or free_port()
        kwargs: dict[str, Any] = {"auth_require_tls": auth_require_tls}
        # Every AUTH a client tried (mechanism and login, never the secret): what the
        # credential-binding tests assert on.
        self.auth_attempts: list[str] = []
        if isinstance(self.handler, _OAuthHandler):
            self.handler.auth_attempts = self.auth_attempts
        if user and password:
            kwargs["authenticator"] = _Authenticator(user, password, self.auth_attempts)
        if mode == "starttls":
            assert certs is not None
            kwargs.update(tls_context=certs.server_context(), require_starttls=True)
        if mode == "tls":
            assert certs is not None
            kwargs["ssl_context"] = certs.server_context()
            # aiosmtpd only knows about TLS it negotiated itself (STARTTLS); on an
            # implicit-TLS listener its "AUTH needs TLS" gate would hide AUTH.
            kwargs["auth_require_tls"] = False
        self._controller = _CountingController(
            self.handler, hostname=HOST, port=self.port, server_hostname="peer.test",
            # Only bounds a failing start; a busy machine may need far more than 5 s.
            ready_timeout=120.0, **kwargs,
        )

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> SmtpPeer:
        self._controller.start()
        self._controller.sessions.clear()  # start() itself connects once to check readiness
        return self

    def stop(self) -> None:
        self.handler.release.set()
        self._controller.stop()
        self._controller.loop.close()

    def __enter__(self) -> SmtpPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the tests look at -------------------------------------------

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    @property
    def connections(self) -> int:
        return len(self._controller.sessions)

    def drop_connections(self) -> None:
        """Close every open connection from the server side, as an idle timeout would."""

        async def close_all() -> None:
            for session in self._controller.sessions:
                transport = getattr(session, "transport", None)
                if transport is not None and not transport.is_closing():
                    transport.close()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(close_all(), self._controller.loop).result(5)

    def server(self, name: str = "peer", /, **spec: Any) -> OutgoingServer:
        """The OutgoingServer resource that sends through this peer."""
        return server_spec(self.port, self.mode, name, **spec)


def server_spec(
    port: int, mode: Mode = "plain", name: str = "peer", /, **spec: Any
) -> OutgoingServer:
    """An OutgoingServer on 127.0.0.1:``port``; also for ports where no peer listens."""
    security = {"plain": "none", "starttls": "starttls", "tls": "tls"}[mode]
    body: dict[str, Any] = {
        "email": "helpdesk@desk.example",
        "senderName": "IT Help Desk",
        "replyTo": "support@desk.example",
        "host": HOST,
        "port": port,
        "security": security,
        "primary": True,
        "timeoutSeconds": 5,
        "attachmentLimitMB": 20,
        "maxConcurrency": 4,
    }
    body.update(spec)
    return outgoing_server(name, body)


def outgoing_server(name: str, spec: dict[str, Any]) -> OutgoingServer:
    """The OutgoingServer resource ``default/name`` with ``spec`` (for every peer)."""
    return OutgoingServer.model_validate({
        "apiVersion": "reconciler.dev/v1",
        "kind": "OutgoingServer",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    })


class HangingListener:
    """Accepts TCP connections (the kernel does, from the backlog) and never greets."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((HOST, 0))
        self._sock.listen(16)
        self.port = int(self._sock.getsockname()[1])

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> HangingListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def running(*peers: SmtpPeer) -> Iterator[tuple[SmtpPeer, ...]]:
    started: list[SmtpPeer] = []
    try:
        for peer in peers:
            started.append(peer.start())
        yield peers
    finally:
        for peer in started:
            peer.stop()
