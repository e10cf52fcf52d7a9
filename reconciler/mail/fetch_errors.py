"""What the IMAP and POP3 classifiers share: turn what went wrong into one FetchError
(a MailFailure with step and reason, SPEC I7).

The same idea as :mod:`reconciler.health.diagnose` for SMTP: say which step
failed in plain words and name the likely fix with the host, port and
protocol actually configured. :func:`network_failure` files DNS, socket and
TLS errors; each protocol's classifier (``imap.fetcher``, ``pop3.fetcher``)
files its client's own exceptions and falls back to it. Every text that may
carry server output goes through the session's redactor first.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from reconciler.config.derive import INCOMING_PORTS
from reconciler.config.models.auth import BasicAuth, OAuth2Auth
from reconciler.config.models.incoming_server import IncomingProtocol, IncomingServer
from reconciler.mail.fetcher import FetchError, FetchErrorKind
from reconciler.mail.outcome import Failure
from reconciler.mail.steps import Reason, Step


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


def config_error(where: Where | IncomingServer, message: str, fix: str, *,
                 step: Step = Step.FETCH, reason: Reason = Reason.UNEXPECTED) -> FetchError:
    server = where.server if isinstance(where, Where) else where
    return FetchError(FetchErrorKind.CONFIG, f"incoming server {server.metadata.name}: "
                      f"{message}", fix, step=step, reason=reason)


def tls_not_offered(where: Where) -> FetchError:
    command = "STARTTLS" if where.family == "IMAP" else "STLS"
    return FetchError(
        FetchErrorKind.TLS, f"{where.address} does not offer {command}",
        f"If the port expects TLS from the first byte use protocol {where.family.lower()}s; "
        f"{where.ports()}. Without TLS the only option is starttls: false (and policies may "
        "refuse it).", step=Step.TLS, reason=Reason.NO_STARTTLS)


def auth_refused(where: Where, username: str, detail: str) -> FetchError:
    auth = where.server.spec.auth
    if isinstance(auth, OAuth2Auth):
        fix = (f"Check that the token's account is the mailbox {username}, that the scope "
               f"allows {where.family} access and that {where.family} is enabled for the "
               "mailbox; re-authorise with `reconcile auth login SERVER` if the grant was "
               "revoked.")
    else:
        fix = (f"Check the username and the password the reference points to; make sure "
               f"{where.family} access is enabled for this mailbox (Microsoft 365 and Google "
               "turn it off per mailbox or tenant); accounts with two-step sign-in need an "
               "app password, or switch to auth type oauth2.")
    return FetchError(FetchErrorKind.AUTH,
                      f"{where.address} refused the login for {username}: {detail}", fix,
                      step=Step.AUTH, reason=Reason.AUTH_FAILED)


def plaintext_refused(where: Where) -> FetchError:
    return FetchError(
        FetchErrorKind.AUTH,
        f"{where.address} refuses logins over an unencrypted connection",
        f"Use protocol {where.family.lower()}s, or starttls: true on the plain port. "
        f"{where.ports()}.", step=Step.AUTH, reason=Reason.ENCRYPTION_REQUIRED)


def mechanism_missing(where: Where, wanted: str, offered: list[str]) -> FetchError:
    shown = ", ".join(offered) or "none"
    return FetchError(
        FetchErrorKind.AUTH,
        f"{where.address} does not offer {wanted} (it offers: {shown})",
        "Check the auth type: OAuth needs a server that supports XOAUTH2 or OAUTHBEARER "
        f"for {where.family}; otherwise use auth type basic.", step=Step.AUTH,
        reason=Reason.AUTH_NOT_OFFERED, failure=Failure.CONFIG)


def username_of(server: IncomingServer) -> str:
    auth = server.spec.auth
    if isinstance(auth, BasicAuth | OAuth2Auth) and auth.username:
        return auth.username
    return str(server.spec.email)


# The phases a fetcher reports as ``doing``, and the step each is. Anything else
# ("searching for unread mail", "moving a mail to Errors") is a command after login.
CONNECT, TLS, GREETING, LOGIN = "connect", "tls", "greeting", "logging in"
OPENING = "opening the session"  # IMAPClient connects, secures and reads the greeting at once
_STEPS = {CONNECT: Step.TCP, OPENING: Step.TCP, TLS: Step.TLS, GREETING: Step.GREETING,
          LOGIN: Step.AUTH}


def _step_of(doing: str) -> Step:
    return _STEPS.get(doing, Step.FETCH)


def classify(exc: BaseException, where: Where, doing: str, redact: Callable[[str], str], *,
             session_ended: bool = False) -> FetchError:
    """The FetchError for ``exc`` raised while ``doing``. Each protocol's classifier
    (``imap.fetcher``, ``pop3.fetcher``) says which of its client's exceptions mean the
    server ended the session; DNS, socket and TLS failures are filed the same for both."""
    if isinstance(exc, FetchError):
        return exc
    detail = redact(str(exc) or type(exc).__name__)
    if session_ended:
        return _ended(where, doing, detail)
    return _network(exc, where, doing, detail) or _unexpected(where, doing, detail)


def _network(exc: BaseException, where: Where, doing: str, detail: str) -> FetchError | None:
    if isinstance(exc, socket.gaierror):
        return _dns(exc, where)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _certificate(exc, where)
    if isinstance(exc, ssl.SSLError):
        return _handshake(exc, where)
    if isinstance(exc, ConnectionRefusedError):
        return FetchError(FetchErrorKind.CONNECT,
                          f"nothing accepts connections on {where.address}",
                          f"Check the port ({where.ports()}), that the mail server is "
                          "running, and that no firewall rejects the connection.",
                          step=Step.TCP, reason=Reason.REFUSED)
    if isinstance(exc, TimeoutError):
        return _timeout(where, doing)
    if isinstance(exc, OSError | EOFError):
        return _lost(where, doing, getattr(exc, "strerror", None) or detail)
    return None


def _lost(where: Where, doing: str, detail: str) -> FetchError:
    """The connection closed or failed while ``doing``."""
    if doing == GREETING:
        return FetchError(FetchErrorKind.CONNECT,
                          f"{where.address} closed the connection before greeting ({detail})",
                          f"It may refuse this machine's address, or {where.other_security()}.",
                          step=Step.GREETING, reason=Reason.CLOSED)
    return FetchError(FetchErrorKind.CONNECT,
                      f"connection to {where.address} failed while {doing}: {detail}",
                      "Check host, port and firewall rules; the fetch is retried at the "
                      "next interval.", step=_step_of(doing), reason=Reason.CLOSED)


def _ended(where: Where, doing: str, detail: str) -> FetchError:
    """The server ended a working session (restart, idle limit) while ``doing``."""
    if doing == GREETING:
        return _lost(where, doing, detail)
    return FetchError(FetchErrorKind.CONNECT,
                      f"{where.address} ended the session while {doing} ({detail})",
                      "The server restarted or dropped idle sessions; the fetch reconnects "
                      "at the next interval. If it keeps happening, check the server's "
                      "session limits and log.", step=_step_of(doing), reason=Reason.CLOSED)


def _unexpected(where: Where, doing: str, detail: str) -> FetchError:
    """The server answered something the protocol client could not work with."""
    if doing == GREETING:
        return FetchError(FetchErrorKind.PROTOCOL,
                          f"{where.address} did not greet like a {where.family} server "
                          f"({detail})",
                          f"Check that the port is a {where.family} port. {where.ports()}.",
                          step=Step.GREETING)
    return FetchError(FetchErrorKind.PROTOCOL,
                      f"{where.address} answered unexpectedly while {doing}: {detail}",
                      "If this persists, the mail server's log has the reason; the "
                      "fetch is retried at the next interval.", step=_step_of(doing))


def _dns(exc: socket.gaierror, where: Where) -> FetchError:
    if exc.errno == socket.EAI_AGAIN:
        return FetchError(FetchErrorKind.CONNECT,
                          f"temporary DNS failure looking up {where.host}",
                          "Check this machine's DNS configuration and network.",
                          step=Step.DNS, reason=Reason.DNS_TEMPORARY)
    return FetchError(FetchErrorKind.CONNECT, f"{where.host} does not resolve",
                      f"Check the spelling of host in incoming server {where.name}, and "
                      "that this machine resolves internal names if it is internal.",
                      step=Step.DNS, reason=Reason.NXDOMAIN)


def _handshake(exc: ssl.SSLError, where: Where) -> FetchError:
    reason = exc.reason or str(exc)
    if where.implicit_tls and "WRONG_VERSION_NUMBER" in str(reason).upper():
        fix = f"The {where.other_security()}. {where.ports()}."
    else:
        fix = ("The server's TLS versions or ciphers may be too old for this machine (TLS "
               f"1.2 or newer is required), or the protocol does not match the port. "
               f"{where.ports()}.")
    return FetchError(FetchErrorKind.TLS,
                      f"TLS handshake with {where.address} failed ({reason})", fix,
                      step=Step.TLS, reason=Reason.HANDSHAKE)


# What a timeout while each phase means, and what to check: (message, fix) templates
_TIMEOUTS = {
    CONNECT: ("{address} did not answer",
              "A firewall is probably dropping the connection, or the host or port is wrong."),
    OPENING: ("{address} did not answer or never greeted",
              "A firewall may be dropping the connection or the host or port is wrong; or "
              "{other}."),
    TLS: ("the TLS handshake with {address} did not finish", "Probably {other}."),
    GREETING: ("connected to {address} but it never greeted", "Probably {other}."),
}


def _timeout(where: Where, doing: str) -> FetchError:
    message, fix = _TIMEOUTS.get(doing, (
        "{address} stopped answering while {doing}",
        "The server may be overloaded or the network unstable; the fetch is retried at "
        "the next interval."))
    values = {"address": where.address, "other": where.other_security(), "doing": doing}
    return FetchError(FetchErrorKind.CONNECT, message.format(**values), fix.format(**values),
                      step=_step_of(doing), reason=Reason.TIMEOUT, failure=Failure.TIMEOUT)


# OpenSSL verify code -> (reason, what is wrong, what fixes it); anything else is "not trusted"
_CERTIFICATE = {
    62: (Reason.HOSTNAME_MISMATCH, "is for another host name",  # X509_V_ERR_HOSTNAME_MISMATCH
         "Set host to a name the certificate lists (usually the provider's documented "
         "{family} host name, not an IP address or alias)."),
    10: (Reason.EXPIRED, "has expired",  # X509_V_ERR_CERT_HAS_EXPIRED
         "Whoever runs the mail server must renew it (or check this machine's clock)."),
}
_CERTIFICATE[64] = _CERTIFICATE[62]  # X509_V_ERR_IP_ADDRESS_MISMATCH
_UNTRUSTED = (Reason.UNTRUSTED, "is not trusted",
              "The certificate is not signed by a CA this machine trusts. If the server uses a "
              "private CA, trust it with the daemon's ca_file setting or RECONCILE_TLS_CA_FILE; "
              "certificate checks cannot be switched off.")


def _certificate(exc: ssl.SSLCertVerificationError, where: Where) -> FetchError:
    reason, wrong, fix = _CERTIFICATE.get(exc.verify_code, _UNTRUSTED)
    return FetchError(FetchErrorKind.TLS, f"the certificate of {where.address} {wrong} "
                      f"({exc.verify_message or exc.reason or exc})",
                      fix.format(family=where.family), step=Step.TLS, reason=reason,
                      failure=Failure.TLS_VERIFY)
