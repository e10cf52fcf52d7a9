"""What the IMAP and POP3 classifiers share: turn what went wrong into one FetchError
(a MailFailure with step and reason, SPEC I7).

The same idea as :mod:`reconciler.health.diagnose` for SMTP: say which step
failed in plain words and name the likely fix with the host, port and
protocol actually configured. The words are one table (:data:`_TEXTS`);
:func:`classify` files DNS, socket and TLS errors the same for both
protocols, and each protocol's classifier (``imap.fetcher``,
``pop3.fetcher``) only says which of its client's exceptions mean the server
ended the session. Every text that may carry server output goes through the
session's redactor first.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from reconciler.config.derive import INCOMING_PORTS
from reconciler.config.models.auth import BasicAuth, OAuth2Auth
from reconciler.config.models.incoming_server import IncomingProtocol, IncomingServer
from reconciler.mail.certificates import certificate_failure
from reconciler.mail.failure import MailFailure
from reconciler.mail.fetcher import FetchError, FetchErrorKind
from reconciler.mail.outcome import Failure
from reconciler.mail.steps import Reason, Step

# The phases a fetcher reports as ``doing``, and the step each is. Anything else
# ("searching for unread mail", "moving a mail to Errors") is a command after login.
CONNECT, TLS, GREETING, LOGIN = "connect", "tls", "greeting", "logging in"
OPENING = "opening the session"  # IMAPClient connects, secures and reads the greeting at once
_STEPS = {CONNECT: Step.TCP, OPENING: Step.TCP, TLS: Step.TLS, GREETING: Step.GREETING,
          LOGIN: Step.AUTH}


@dataclass(frozen=True)
class Where:
    """The session being diagnosed: which server, which endpoint, how it is secured."""

    server: IncomingServer
    host: str
    port: int

    @property
    def protocol(self) -> IncomingProtocol:
        return IncomingProtocol(self.server.spec.protocol)

    @property
    def family(self) -> str:
        return "IMAP" if self.protocol in (IncomingProtocol.IMAP, IncomingProtocol.IMAPS) \
            else "POP3"

    @property
    def implicit_tls(self) -> bool:
        return self.protocol in (IncomingProtocol.IMAPS, IncomingProtocol.POP3S)

    @property
    def starttls(self) -> bool:
        return not self.implicit_tls and bool(self.server.spec.starttls)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def name(self) -> str:
        meta = self.server.metadata
        return f"{meta.namespace}/{meta.name}" if meta.namespace else meta.name

    def ports(self) -> str:
        plain = IncomingProtocol(self.family.lower())
        tls = IncomingProtocol(f"{plain}s")
        return (f"{self.family} ports: {INCOMING_PORTS[tls]} with protocol {tls} (TLS from the "
                f"first byte), {INCOMING_PORTS[plain]} with protocol {plain} and starttls: true")

    def other_security(self) -> str:
        if self.implicit_tls:
            return (f"protocol {self.protocol} expects TLS from the first byte but port "
                    f"{self.port} does not answer with TLS; for a port that upgrades after "
                    "the greeting use the plain protocol with starttls: true")
        return (f"port {self.port} may expect TLS from the first byte: use protocol "
                f"{self.family.lower()}s there")


class _Text(NamedTuple):
    kind: FetchErrorKind
    reason: Reason
    message: str
    fix: str
    step: Step | None = None  # None: the step of what was being done
    failure: Failure | None = None  # None: what the kind implies


_CONNECT, _TLS, _AUTH = FetchErrorKind.CONNECT, FetchErrorKind.TLS, FetchErrorKind.AUTH
_RETRIED = "the fetch is retried at the next interval."
# What each failure says and what fixes it. Placeholders come from the session
# ({address} {host} {name} {family} {fam} {ports} {other}) and from the caller.
_TEXTS = {
    "nxdomain": _Text(_CONNECT, Reason.NXDOMAIN, "{host} does not resolve",
                      "Check the spelling of host in incoming server {name}, and that this "
                      "machine resolves internal names if it is internal.", Step.DNS),
    "dns-temporary": _Text(_CONNECT, Reason.DNS_TEMPORARY,
                           "temporary DNS failure looking up {host}",
                           "Check this machine's DNS configuration and network.", Step.DNS),
    "refused": _Text(_CONNECT, Reason.REFUSED, "nothing accepts connections on {address}",
                     "Check the port ({ports}), that the mail server is running, and that no "
                     "firewall rejects the connection.", Step.TCP),
    "handshake": _Text(_TLS, Reason.HANDSHAKE, "TLS handshake with {address} failed ({detail})",
                       "The server's TLS versions or ciphers may be too old for this machine "
                       "(TLS 1.2 or newer is required), or the protocol does not match the "
                       "port. {ports}.", Step.TLS),
    "handshake-plain": _Text(_TLS, Reason.HANDSHAKE,
                             "TLS handshake with {address} failed ({detail})",
                             "The {other}. {ports}.", Step.TLS),
    "no-starttls": _Text(_TLS, Reason.NO_STARTTLS, "{address} does not offer {command}",
                         "If the port expects TLS from the first byte use protocol {fam}s; "
                         "{ports}. Without TLS the only option is starttls: false (and "
                         "policies may refuse it).", Step.TLS),
    "plaintext": _Text(_AUTH, Reason.ENCRYPTION_REQUIRED,
                       "{address} refuses logins over an unencrypted connection",
                       "Use protocol {fam}s, or starttls: true on the plain port. {ports}.",
                       Step.AUTH),
    "mechanism": _Text(_AUTH, Reason.AUTH_NOT_OFFERED,
                       "{address} does not offer {wanted} (it offers: {offered})",
                       "Check the auth type: OAuth needs a server that supports XOAUTH2 or "
                       "OAUTHBEARER for {family}; otherwise use auth type basic.", Step.AUTH,
                       Failure.CONFIG),
    "refused-password": _Text(_AUTH, Reason.AUTH_FAILED,
                              "{address} refused the login for {username}: {detail}",
                              "Check the username and the password the reference points to; "
                              "make sure {family} access is enabled for this mailbox (Microsoft "
                              "365 and Google turn it off per mailbox or tenant); accounts with "
                              "two-step sign-in need an app password, or switch to auth type "
                              "oauth2.", Step.AUTH),
    "refused-token": _Text(_AUTH, Reason.AUTH_FAILED,
                           "{address} refused the login for {username}: {detail}",
                           "Check that the token's account is the mailbox {username}, that the "
                           "scope allows {family} access and that {family} is enabled for the "
                           "mailbox; re-authorise with `reconcile auth login SERVER` if the "
                           "grant was revoked.", Step.AUTH),
    "closed-greeting": _Text(_CONNECT, Reason.CLOSED,
                             "{address} closed the connection before greeting ({detail})",
                             "It may refuse this machine's address, or {other}.",
                             Step.GREETING),
    "closed": _Text(_CONNECT, Reason.CLOSED,
                    "connection to {address} failed while {doing}: {detail}",
                    f"Check host, port and firewall rules; {_RETRIED}"),
    "ended": _Text(_CONNECT, Reason.CLOSED, "{address} ended the session while {doing} "
                   "({detail})", "The server restarted or dropped idle sessions; the fetch "
                   "reconnects at the next interval. If it keeps happening, check the "
                   "server's session limits and log."),
    "not-greeted": _Text(FetchErrorKind.PROTOCOL, Reason.UNEXPECTED,
                         "{address} did not greet like a {family} server ({detail})",
                         "Check that the port is a {family} port. {ports}.", Step.GREETING),
    "unexpected": _Text(FetchErrorKind.PROTOCOL, Reason.UNEXPECTED,
                        "{address} answered unexpectedly while {doing}: {detail}",
                        f"If this persists, the mail server's log has the reason; {_RETRIED}"),
    f"timeout-{CONNECT}": _Text(_CONNECT, Reason.TIMEOUT, "{address} did not answer",
                                "A firewall is probably dropping the connection, or the host "
                                "or port is wrong.", failure=Failure.TIMEOUT),
    f"timeout-{OPENING}": _Text(_CONNECT, Reason.TIMEOUT,
                                "{address} did not answer or never greeted",
                                "A firewall may be dropping the connection or the host or "
                                "port is wrong; or {other}.", failure=Failure.TIMEOUT),
    f"timeout-{TLS}": _Text(_TLS, Reason.TIMEOUT,
                            "the TLS handshake with {address} did not finish",
                            "Probably {other}.", failure=Failure.TIMEOUT),
    f"timeout-{GREETING}": _Text(_CONNECT, Reason.TIMEOUT,
                                 "connected to {address} but it never greeted",
                                 "Probably {other}.", failure=Failure.TIMEOUT),
    "timeout": _Text(_CONNECT, Reason.TIMEOUT, "{address} stopped answering while {doing}",
                     f"The server may be overloaded or the network unstable; {_RETRIED}",
                     failure=Failure.TIMEOUT),
}


def described(where: Where, key: str, doing: str = "", **values: object) -> FetchError:
    """The FetchError ``_TEXTS[key]`` describes, for this session, while ``doing``."""
    text = _TEXTS[key]
    filled = {"address": where.address, "host": where.host, "name": where.name,
              "family": where.family, "fam": where.family.lower(), "ports": where.ports(),
              "other": where.other_security(), "doing": doing, **values}
    return FetchError(text.kind, text.message.format(**filled), text.fix.format(**filled),
                      step=text.step or _STEPS.get(doing, Step.FETCH), reason=text.reason,
                      failure=text.failure)


def config_error(where: Where | IncomingServer, message: str, fix: str, *,
                 step: Step = Step.FETCH, reason: Reason = Reason.UNEXPECTED) -> FetchError:
    server = where.server if isinstance(where, Where) else where
    return FetchError(FetchErrorKind.CONFIG, f"incoming server {server.metadata.name}: "
                      f"{message}", fix, step=step, reason=reason)


def auth_refused(where: Where, username: str, detail: str) -> FetchError:
    key = "refused-token" if isinstance(where.server.spec.auth, OAuth2Auth) \
        else "refused-password"
    return described(where, key, username=username, detail=detail)


def username_of(server: IncomingServer) -> str:
    auth = server.spec.auth
    if isinstance(auth, BasicAuth | OAuth2Auth) and auth.username:
        return auth.username
    return str(server.spec.email)


def classify(exc: BaseException, where: Where, doing: str, redact: Callable[[str], str], *,
             session_ended: bool = False) -> FetchError:
    """The FetchError for ``exc`` raised while ``doing``; ``session_ended``: the protocol's
    classifier recognised its client's way of saying the server closed the session."""
    if isinstance(exc, FetchError):
        return exc
    if isinstance(exc, MailFailure):  # a step shared with the other protocols (the proxy)
        return FetchError(_KINDS.get(exc.failure, FetchErrorKind.PROTOCOL), exc.message,
                          exc.likely_fix, step=exc.step, reason=exc.reason,
                          failure=exc.failure, permanent=exc.permanent)
    if isinstance(exc, ssl.SSLCertVerificationError):
        cert = certificate_failure(exc, where.address)
        return FetchError(FetchErrorKind.TLS, cert.message, cert.likely_fix, step=cert.step,
                          reason=cert.reason, failure=cert.failure)
    if isinstance(exc, ssl.SSLError):
        detail = str(getattr(exc, "reason", None) or exc)
    else:
        detail = redact(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
    key = "ended" if session_ended else _key(exc, where, doing)
    if doing == GREETING:
        key = _AT_GREETING.get(key, key)
    return described(where, key, doing, detail=detail)


_KINDS = {Failure.CONFIG: FetchErrorKind.CONFIG, Failure.AUTH: FetchErrorKind.AUTH,
          Failure.CONNECT: FetchErrorKind.CONNECT, Failure.TIMEOUT: FetchErrorKind.CONNECT}
# Before the greeting, a closed connection and an odd answer mean something else.
_AT_GREETING = {"ended": "closed-greeting", "closed": "closed-greeting",
                "unexpected": "not-greeted"}


def _key(exc: BaseException, where: Where, doing: str) -> str:
    """Which of :data:`_TEXTS` describes ``exc``."""
    if isinstance(exc, socket.gaierror):
        return "dns-temporary" if exc.errno == socket.EAI_AGAIN else "nxdomain"
    if isinstance(exc, ssl.SSLError) and doing not in (CONNECT, OPENING, TLS):
        return "ended"  # after the handshake a TLS error (mostly EOF) is a broken session
    if isinstance(exc, ssl.SSLError):
        plain = where.implicit_tls and "WRONG_VERSION_NUMBER" in str(exc).upper()
        return "handshake-plain" if plain else "handshake"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return f"timeout-{doing}" if f"timeout-{doing}" in _TEXTS else "timeout"
    return "closed" if isinstance(exc, OSError | EOFError) else "unexpected"
