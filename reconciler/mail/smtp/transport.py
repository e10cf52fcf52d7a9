"""SMTP transport (SPEC O5) on aiosmtplib.

- Security ``none`` never upgrades (not even opportunistically: what the
  config says is what runs); ``starttls`` requires the upgrade; ``tls`` is TLS
  from the first byte. Certificates and host names are always verified,
  against the system CAs plus an optional extra CA bundle (``ca_file`` or the
  ``RECONCILE_TLS_CA_FILE`` environment variable) for private CAs. There is
  deliberately no switch to turn verification off.
- AUTH: Basic uses PLAIN, else LOGIN, else CRAM-MD5 (one attempt with the
  first the server offers, so a wrong password costs one failed login, not
  three); OAuth2 uses XOAUTH2 with a token from the injected token provider.
  Secrets are resolved per connection and never stored on the transport.
- Connections are pooled per (endpoint, security, credentials, size): two
  servers on the same host with different accounts never share a session.
  A pooled connection is checked with NOOP before reuse and retired after
  ``max_connection_age`` seconds.
- The server's ``timeoutSeconds`` is a deadline on the whole send (pool slot,
  connect, TLS, AUTH, MAIL, RCPT, DATA, including a failover), and also the
  per-command timeout.
- When the server announces PIPELINING (RFC 2920), MAIL FROM, the RCPTs and
  DATA go out in one write and the message in a second
  (:mod:`~reconciler.mail.smtp.pipelining`): two round trips a
  message instead of three plus one per recipient, reported the same way.
- Failover (O6): when the first host cannot be reached, the next candidate
  from :class:`~reconciler.mail.failover.HostSelector` is tried within the
  same deadline; the result names the host used.

Classification (O7) is in :func:`_classify_reply` and ``docs/dispatch.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPException,
    SMTPHeloError,
    SMTPRecipientRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from reconciler.config.desired import digest_of
from reconciler.config.models.auth import BasicAuth, NoAuth, OAuth2Auth
from reconciler.config.models.outgoing_server import (
    OutgoingProtocol,
    OutgoingServer,
    OutgoingServerSpec,
    Security,
)
from reconciler.config.secrets import SecretError, redact
from reconciler.credentials.gate import CredentialNotBound, present_secret, require_client
from reconciler.mail.envelope import Envelope
from reconciler.mail.failover import Endpoint, HostSelector, endpoints_of
from reconciler.mail.outcome import (
    Failure,
    Health,
    HealthStatus,
    Outcome,
    RecipientResult,
    SendResult,
    outcome_for_reply,
    token_outcome,
)
from reconciler.mail.progress import SendProgress
from reconciler.mail.results import (
    config_result,
    describe,
    log_unexpected,
    logged_result,
    unsendable,
)
from reconciler.mail.smtp.pipelining import PipelinedTransaction
from reconciler.mail.smtp.pool import ConnectionPool, PoolStats
from reconciler.mail.transport import Redactor, Transport
from reconciler.oauth.source import TokenError, TokenProvider, fetch_token, invalidate_token
from reconciler.runtime.tls import ssl_cause, transport_tls

log = logging.getLogger(__name__)

DEFAULT_POOL_SIZE = 4
AUTH_FAILED_CODES = frozenset({534, 535})  # 534: mechanism too weak / app password needed
BASIC_MECHANISMS = ("plain", "login", "cram-md5")


class _Unreachable(Exception):
    """The endpoint could not be reached at all: worth trying the alternate host."""

    def __init__(self, detail: str, failure: Failure) -> None:
        super().__init__(detail)
        self.detail = detail
        self.failure = failure


class _Stale(Exception):
    """A pooled connection was found closed before the transaction got a reply."""


class _Failed(Exception):
    """The endpoint was reached but the attempt failed; carries the classified result."""

    def __init__(self, outcome: Outcome, failure: Failure, detail: str, step: str,
                 code: int | None = None) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.failure = failure
        self.detail = detail
        self.step = step
        self.code = code


@dataclass
class _Progress(SendProgress):
    step: str = "waiting for a connection"
    unreachable_failures: list[Failure] = field(default_factory=list)


class SmtpTransport(Transport):
    protocol = "smtp"

    def __init__(
        self,
        *,
        ca_file: str | Path | None = None,
        token_provider: TokenProvider | None = None,
        selector: HostSelector | None = None,
        max_connection_age: float = 300.0,
        connect_timeout: float = 15.0,
        liveness_timeout: float = 5.0,
        local_hostname: str | None = None,
    ) -> None:
        self._tls = transport_tls(ca_file)
        self._token_provider = token_provider
        self.selector = selector or HostSelector()
        self._max_age = max_connection_age
        self._connect_timeout = connect_timeout
        self._liveness_timeout = liveness_timeout
        self._local_hostname = local_hostname
        self._pools: dict[tuple[object, ...], ConnectionPool[aiosmtplib.SMTP]] = {}

    # -- public API -------------------------------------------------------

    async def send(self, envelope: Envelope, server: OutgoingServer) -> SendResult:
        spec = server.spec
        refused = unsendable(envelope, server, OutgoingProtocol.SMTP, "SMTP")
        if refused is not None:
            return refused
        try:
            candidates = self.selector.candidates(spec)
        except ValueError as exc:
            return config_result(f"server {server.metadata.name}: {exc}")
        redactor = Redactor()
        progress = _Progress()
        timeout = asyncio.timeout(spec.timeout_seconds)
        try:
            async with timeout:
                return await self._send(candidates, envelope, server, redactor, progress)
        except TimeoutError as exc:
            if not timeout.expired():
                return self._unexpected(exc, server, envelope, progress, redactor)
            detail = f"deadline of {spec.timeout_seconds:g}s exceeded while {progress.step}"
            return self._finish(server, envelope, progress, redactor, Outcome.TRANSIENT,
                                Failure.TIMEOUT, detail)
        except Exception as exc:
            return self._unexpected(exc, server, envelope, progress, redactor)

    async def probe(self, server: OutgoingServer, *, alternate: bool = False) -> Health:
        """Check one host (the main one unless ``alternate``); never touches the pool."""
        spec = server.spec
        try:
            main, alt = endpoints_of(spec)
        except ValueError as exc:
            return Health(HealthStatus.UNREACHABLE, None, str(exc), Failure.CONFIG, "config")
        endpoint = alt if alternate and alt is not None else main
        redactor = Redactor()
        progress = _Progress(endpoint=endpoint)
        smtp: aiosmtplib.SMTP | None = None
        try:
            async with asyncio.timeout(spec.timeout_seconds):
                smtp = await self._open(server, endpoint, redactor, progress,
                                        spec.timeout_seconds)
                progress.step = "noop"
                await smtp.noop()
                await _quit(smtp)
        except _Unreachable as exc:
            return Health(HealthStatus.UNREACHABLE, endpoint.address, redactor(exc.detail),
                          exc.failure, "connect")
        except _Failed as exc:
            return Health(HealthStatus.UNREACHABLE, endpoint.address, redactor(exc.detail),
                          exc.failure, exc.step)
        except TimeoutError:
            return Health(HealthStatus.UNREACHABLE, endpoint.address,
                          f"timed out while {progress.step}", Failure.TIMEOUT, progress.step)
        except (SMTPException, OSError) as exc:
            return Health(HealthStatus.UNREACHABLE, endpoint.address, redactor(describe(exc)),
                          Failure.PROTOCOL, progress.step)
        finally:
            if smtp is not None:
                _close(smtp)
        return Health(HealthStatus.REACHABLE, endpoint.address, "connected, secured, "
                      f"authenticated ({spec.security}, auth {spec.auth.type})")

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()

    def pool_stats(self) -> dict[str, PoolStats]:
        """Counters per pool, keyed ``host:port`` (for metrics, X3)."""
        return {f"{k[0]}:{k[1]}": p.stats for k, p in self._pools.items()}

    # -- the send ---------------------------------------------------------

    async def _send(
        self,
        candidates: tuple[Endpoint, ...],
        envelope: Envelope,
        server: OutgoingServer,
        redactor: Redactor,
        progress: _Progress,
    ) -> SendResult:
        spec = server.spec
        # With a host to fail over to, one host may not eat the whole deadline.
        connect_timeout = min(self._connect_timeout, spec.timeout_seconds)
        if len(candidates) > 1:
            connect_timeout = min(connect_timeout, spec.timeout_seconds / 2)
        for endpoint in candidates:
            progress.endpoint = endpoint
            pool = self._pool(server, endpoint)
            progress.step = f"waiting for a connection to {endpoint.address}"
            async with pool.slot():
                reuse = True
                for _ in range(2):
                    try:
                        item = await pool.acquire(
                            lambda ep=endpoint: self._open(server, ep, redactor, progress,
                                                           connect_timeout),
                            reuse=reuse,
                        )
                    except _Unreachable as exc:
                        progress.unreachable_failures.append(exc.failure)
                        progress.give_up_on(self.selector, endpoint, redactor(exc.detail))
                        break
                    except _Failed as exc:
                        return self._finish(server, envelope, progress, redactor, exc.outcome,
                                            exc.failure, exc.detail, code=exc.code)
                    progress.reached(self.selector, endpoint)
                    reusable = stale = False
                    try:
                        result, reusable = await self._transact(
                            item.conn, envelope, server, redactor, progress,
                            stale_possible=reuse and item.uses > 1)
                        return result
                    except _Stale:
                        # The server had closed this pooled connection before our MAIL
                        # FROM (it skipped the liveness check, see pool): nothing was
                        # sent, so once more on a new connection.
                        self._trace(spec, "pooled connection to %s was closed; reconnecting",
                                    endpoint.address)
                        reuse, stale = False, True
                    finally:
                        if stale:
                            pool.discard(item)
                        else:
                            pool.release(item, reusable=reusable and item.conn.is_connected)
        detail = "cannot reach " + "; ".join(progress.unreachable)
        failure = (Failure.TIMEOUT if set(progress.unreachable_failures) == {Failure.TIMEOUT}
                   else Failure.CONNECT)
        return self._finish(server, envelope, progress, redactor, Outcome.TRANSIENT, failure,
                            detail)

    async def _transact(
        self,
        smtp: aiosmtplib.SMTP,
        envelope: Envelope,
        server: OutgoingServer,
        redactor: Redactor,
        progress: _Progress,
        *,
        stale_possible: bool = False,
    ) -> tuple[SendResult, bool]:
        """MAIL, RCPT per recipient, DATA; the result and whether the connection is reusable.

        Raises :class:`_Stale` when ``stale_possible`` (a reused connection) and the
        connection turns out closed before MAIL FROM got any reply.

        Pipelined (RFC 2920) when the server offers it, else one command at a time;
        both raise the same errors at the same steps, so one classification serves both.
        """
        message = envelope.as_bytes()
        rcpt_to = envelope.rcpt_to  # a property that builds a new tuple each time
        refused: dict[str, RecipientResult] = {}
        transaction: _Transaction | None = None
        try:
            progress.step = "sending MAIL FROM"
            await _greet(smtp)  # what mail() would do first; PIPELINING and SIZE are known after
            options = [f"SIZE={len(message)}"] if smtp.supports_extension("size") else []
            if smtp.supports_extension("pipelining"):
                self._trace(server.spec, "pipelining MAIL FROM, %d RCPT TO and DATA to %s",
                            len(rcpt_to), progress.host)
                transaction = PipelinedTransaction(smtp, envelope.mail_from, options, rcpt_to)
            else:
                transaction = _OneAtATime(smtp, envelope.mail_from, options)
            await transaction.mail()
            progress.step = "sending RCPT TO"
            for address in rcpt_to:
                try:
                    await transaction.rcpt(address)
                except SMTPRecipientRefused as exc:
                    refused[address] = RecipientResult(
                        address, outcome_for_reply(exc.code), exc.code, redactor(exc.message))
            if len(refused) == len(rcpt_to):
                await transaction.drain()
                await _rset(smtp)
                outcome = (Outcome.TRANSIENT
                           if any(r.outcome == Outcome.TRANSIENT for r in refused.values())
                           else Outcome.PERMANENT)
                return self._finish(server, envelope, progress, redactor, outcome,
                                    Failure.RECIPIENTS, "every recipient was refused",
                                    recipients=tuple(refused.values())), True
            progress.step = "sending DATA"
            reply = await transaction.data(message)
        except SMTPResponseException as exc:
            if transaction is not None:
                await transaction.drain()
            await _rset(smtp)
            outcome, failure, detail = _classify_reply(exc.code, exc.message, progress.step)
            recipients = tuple(
                refused.get(a) or RecipientResult(a, outcome, exc.code, redactor(exc.message))
                for a in rcpt_to
            )
            return self._finish(server, envelope, progress, redactor, outcome, failure, detail,
                                recipients=recipients, code=exc.code), exc.code != 421
        except SMTPServerDisconnected as exc:
            if stale_possible and progress.step == "sending MAIL FROM":
                raise _Stale from exc
            return self._finish(server, envelope, progress, redactor, Outcome.TRANSIENT,
                                Failure.CONNECT,
                                f"connection lost while {progress.step} ({exc})"), False
        except SMTPTimeoutError as exc:
            return self._finish(server, envelope, progress, redactor, Outcome.TRANSIENT,
                                Failure.TIMEOUT, f"timed out while {progress.step}: {exc}"), False
        finally:
            if transaction is not None:
                transaction.finish()
        recipients = tuple(
            refused.get(a) or RecipientResult(a, Outcome.SENT, reply.code, redactor(reply.message))
            for a in rcpt_to
        )
        detail = f"accepted for {len(rcpt_to) - len(refused)} of " \
                 f"{len(rcpt_to)} recipients{progress.failover_note()}"
        result = self._finish(server, envelope, progress, redactor, Outcome.SENT, None, detail,
                              recipients=recipients, server_reply=f"{reply.code} {reply.message}")
        return result, True

    # -- connections ------------------------------------------------------

    def _pool(self, server: OutgoingServer, endpoint: Endpoint) -> ConnectionPool[aiosmtplib.SMTP]:
        spec = server.spec
        size = spec.max_concurrency or DEFAULT_POOL_SIZE
        # The credentials' references (never values) are part of the key: a
        # session authenticated as one account must not carry another's mail.
        auth = digest_of(redact(spec.auth.model_dump(mode="json", by_alias=True)))
        key = (endpoint.host.lower(), endpoint.port, str(spec.security), auth, size)
        pool = self._pools.get(key)
        if pool is None:
            pool = ConnectionPool(size, self._max_age, is_alive=self._alive, close=_close,
                                  is_open=_is_open,
                                  retire=_quit)
            self._pools[key] = pool
        return pool

    async def _alive(self, smtp: aiosmtplib.SMTP) -> bool:
        if not smtp.is_connected:
            return False
        try:
            reply = await smtp.noop(timeout=self._liveness_timeout)
        except (SMTPException, OSError, TimeoutError):
            return False
        return reply.code == 250

    async def _open(
        self,
        server: OutgoingServer,
        endpoint: Endpoint,
        redactor: Redactor,
        progress: _Progress,
        connect_timeout: float,
    ) -> aiosmtplib.SMTP:
        """Connect, secure and authenticate; raises _Unreachable or _Failed."""
        spec = server.spec
        security = Security(spec.security)
        try:
            smtp = aiosmtplib.SMTP(
                hostname=endpoint.host,
                port=endpoint.port,
                use_tls=security == Security.TLS,
                start_tls=security == Security.STARTTLS,
                tls_context=self._tls,
                timeout=spec.timeout_seconds,
                local_hostname=await self._ehlo_name(),
            )
        except ValueError as exc:  # e.g. an unusable local host name for EHLO
            raise _Failed(Outcome.PERMANENT, Failure.CONFIG, str(exc), "connect") from None
        progress.step = f"connecting to {endpoint.address}"
        self._trace(spec, "connecting to %s (%s)", endpoint.address, security)
        try:
            await smtp.connect(timeout=connect_timeout)
        except BaseException as exc:
            _close(smtp)
            if isinstance(exc, Exception):
                raise _connect_failure(exc, endpoint, security) from None
            raise
        try:
            progress.step = f"authenticating to {endpoint.address}"
            await self._authenticate(smtp, server, redactor, endpoint)
        except BaseException:
            _close(smtp)
            raise
        self._trace(spec, "connected to %s", endpoint.address)
        return smtp

    async def _authenticate(
        self, smtp: aiosmtplib.SMTP, server: OutgoingServer, redactor: Redactor,
        endpoint: Endpoint,
    ) -> None:
        spec = server.spec
        auth = spec.auth
        if isinstance(auth, NoAuth):
            return
        username = auth.username or spec.email
        if smtp.is_ehlo_or_helo_needed:
            await smtp.ehlo()
        offered = [m.lower() for m in smtp.server_auth_methods]
        refreshed = False
        try:
            if isinstance(auth, BasicAuth):
                try:
                    password = present_secret(auth.password, endpoint.host, endpoint.port)
                except CredentialNotBound as exc:
                    raise _Failed(Outcome.PERMANENT, Failure.CONFIG, str(exc), "auth") from None
                except SecretError as exc:
                    raise _Failed(Outcome.PERMANENT, Failure.CONFIG,
                                  f"cannot read the password: {exc}", "auth") from None
                redactor.add(password, username=username)
                mechanism = next((m for m in BASIC_MECHANISMS if m in offered), None)
                if mechanism is None:
                    raise _Failed(Outcome.PERMANENT, Failure.CONFIG, _no_auth_hint(smtp, offered),
                                  "auth")
                method = getattr(smtp, "auth_" + mechanism.replace("-", ""))
                await method(username, password)
            elif isinstance(auth, OAuth2Auth):
                try:
                    require_client(auth, endpoint.host, endpoint.port)
                except CredentialNotBound as exc:
                    raise _Failed(Outcome.PERMANENT, Failure.CONFIG, str(exc), "auth") from None
                token = await self._token(server, redactor, username)
                if "xoauth2" not in offered:
                    raise _Failed(Outcome.PERMANENT, Failure.CONFIG,
                                  _no_auth_hint(smtp, offered, "XOAUTH2"), "auth")
                try:
                    await smtp.auth_xoauth2(username, token)
                except SMTPAuthenticationError as exc:
                    # 535 5.7.3 after XOAUTH2: the token was revoked or is not yet
                    # valid at the mail server. Refresh once; a second refusal is final.
                    if exc.code != 535 or not await invalidate_token(self._token_provider,
                                                                     server, token):
                        raise
                    log.info("%s refused the access token for %s (%s); refreshing once",
                             server.display, username, exc.code)
                    token = await self._token(server, redactor, username)
                    refreshed = True
                    await smtp.auth_xoauth2(username, token)
        except SMTPAuthenticationError as exc:
            if exc.code in AUTH_FAILED_CODES or exc.code >= 500:
                after = " (also with a freshly refreshed access token)" if refreshed else ""
                raise _Failed(Outcome.PERMANENT, Failure.AUTH,
                              f"authentication failed for {username}{after}: "
                              f"{exc.code} {redactor(exc.message)}", "auth", exc.code) from None
            raise _Failed(outcome_for_reply(exc.code), Failure.AUTH,
                          f"temporary authentication failure for {username}: "
                          f"{exc.code} {redactor(exc.message)}", "auth", exc.code) from None
        except SMTPResponseException as exc:
            outcome, failure, detail = _classify_reply(exc.code, exc.message, "authenticating")
            raise _Failed(outcome, failure, redactor(detail), "auth", exc.code) from None
        except (SMTPServerDisconnected, SMTPTimeoutError, OSError) as exc:
            failure = Failure.TIMEOUT if isinstance(exc, TimeoutError) else Failure.CONNECT
            raise _Failed(Outcome.TRANSIENT, failure,
                          f"while authenticating: {redactor(describe(exc))}", "auth") from None

    async def _token(self, server: OutgoingServer, redactor: Redactor, username: str) -> str:
        if self._token_provider is None:
            raise _Failed(Outcome.PERMANENT, Failure.CONFIG,
                          "OAuth2 server but no token provider is configured", "auth")
        try:
            token = await fetch_token(self._token_provider, server)
        except TokenError as exc:
            raise _Failed(token_outcome(exc), Failure.AUTH, f"no access token: {exc}",
                          "auth") from None
        redactor.add(token, username=username)
        return token

    async def _ehlo_name(self) -> str:
        if self._local_hostname is None:
            # getfqdn can block on DNS; once per transport, off the event loop.
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        return self._local_hostname

    # -- results ----------------------------------------------------------

    def _finish(
        self,
        server: OutgoingServer,
        envelope: Envelope,
        progress: _Progress,
        redactor: Redactor,
        outcome: Outcome,
        failure: Failure | None,
        detail: str,
        *,
        recipients: tuple[RecipientResult, ...] = (),
        code: int | None = None,
        server_reply: str = "",
    ) -> SendResult:
        if failure in (Failure.TIMEOUT, Failure.CONNECT) and progress.step == "sending DATA":
            # The reply to DATA never came: the message may be queued already. A
            # retry keeps the Message-ID (compose), so receivers can spot the copy.
            detail += "; the server may have accepted the message"
        return logged_result(log, envelope, server, redactor, outcome, failure, detail,
                             recipients=recipients, code=code, server_reply=server_reply,
                             host=progress.host, used_alternate=progress.used_alternate)

    def _unexpected(
        self,
        exc: Exception,
        server: OutgoingServer,
        envelope: Envelope,
        progress: _Progress,
        redactor: Redactor,
    ) -> SendResult:
        log_unexpected(log, server, exc, redactor)
        return self._finish(server, envelope, progress, redactor, Outcome.TRANSIENT,
                            Failure.PROTOCOL, f"unexpected error while {progress.step}: "
                            f"{describe(exc)}")

    def _trace(self, spec: OutgoingServerSpec, msg: str, *args: object) -> None:
        log.log(logging.INFO if spec.debug else logging.DEBUG, msg, *args)


# -- classification -------------------------------------------------------


def _classify_reply(code: int, message: str, step: str) -> tuple[Outcome, Failure, str]:
    """SMTP reply code -> outcome (the O7 table in docs/dispatch.md)."""
    outcome = outcome_for_reply(code)
    if outcome == Outcome.SENT:  # a success code where an error was expected
        outcome = Outcome.TRANSIENT
    if code in AUTH_FAILED_CODES:
        return Outcome.PERMANENT, Failure.AUTH, f"authentication failed: {code} {message}"
    if code == 530:
        return (Outcome.PERMANENT, Failure.AUTH,
                f"the server requires authentication: {code} {message}")
    return outcome, Failure.REJECTED, f"{code} {message} (while {step})"


def _connect_failure(exc: Exception, endpoint: Endpoint, security: Security) -> Exception:
    """Turn a connect-phase error into _Unreachable (fail over) or _Failed (do not)."""
    where = endpoint.address
    tls = ssl_cause(exc)
    if isinstance(tls, ssl.SSLCertVerificationError):
        return _Failed(Outcome.PERMANENT, Failure.TLS_VERIFY,
                       f"TLS certificate of {where} not trusted: {tls.verify_message or tls}",
                       "tls")
    if tls is not None:
        return _Failed(Outcome.PERMANENT, Failure.TLS,
                       f"TLS handshake with {where} failed ({tls}); check that security "
                       f"{security} matches what port {endpoint.port} expects", "tls")
    if isinstance(exc, SMTPConnectResponseError):
        outcome, failure, detail = _classify_reply(exc.code, exc.message, "greeting")
        return _Failed(outcome, failure, f"{where} refused the session: {detail}", "connect",
                       exc.code)
    # Order matters: aiosmtplib's connect errors are OSErrors and TimeoutErrors too.
    if isinstance(exc, SMTPConnectTimeoutError):
        return _Unreachable(f"timed out connecting ({exc})", Failure.TIMEOUT)
    if isinstance(exc, SMTPConnectError):
        return _Unreachable(str(exc), Failure.CONNECT)
    if isinstance(exc, SMTPTimeoutError):  # greeted, then silent during EHLO/STARTTLS
        return _Failed(Outcome.TRANSIENT, Failure.TIMEOUT, f"{where}: {exc}", "tls")
    if isinstance(exc, SMTPServerDisconnected):
        return _Failed(Outcome.TRANSIENT, Failure.CONNECT, f"{where} closed the connection: {exc}",
                       "connect")
    if isinstance(exc, SMTPResponseException):
        outcome, failure, detail = _classify_reply(exc.code, exc.message, "starting TLS")
        return _Failed(outcome, failure, f"{where}: {detail}", "tls", exc.code)
    if isinstance(exc, TimeoutError):
        return _Unreachable(f"timed out connecting ({exc})", Failure.TIMEOUT)
    if isinstance(exc, OSError):
        return _Unreachable(describe(exc), Failure.CONNECT)
    if isinstance(exc, SMTPException) and "STARTTLS" in str(exc):
        return _Failed(Outcome.PERMANENT, Failure.TLS,
                       f"{where} does not offer STARTTLS; use security tls for an implicit-TLS "
                       "port or fix the port", "tls")
    return _Failed(Outcome.PERMANENT, Failure.PROTOCOL, f"{where}: {describe(exc)}", "connect")


def _no_auth_hint(smtp: aiosmtplib.SMTP, offered: list[str], wanted: str = "PLAIN/LOGIN") -> str:
    if not offered and smtp.get_transport_info("sslcontext") is None:
        return (f"the server offers no {wanted} authentication on an unencrypted connection; "
                "most servers only offer it after STARTTLS or over TLS")
    shown = ", ".join(m.upper() for m in offered) or "none"
    return f"the server does not offer {wanted} authentication (offers: {shown})"


class _Transaction(Protocol):
    """MAIL, RCPT and DATA with aiosmtplib's errors: PipelinedTransaction or _OneAtATime."""

    async def mail(self) -> object: ...
    async def rcpt(self, recipient: str) -> object: ...
    async def data(self, message: bytes) -> SMTPResponse: ...
    async def drain(self) -> None: ...
    def finish(self) -> None: ...


@dataclass(slots=True)
class _OneAtATime:
    """A transaction without PIPELINING: each command waits for its reply (aiosmtplib)."""

    smtp: aiosmtplib.SMTP
    sender: str
    options: list[str]

    async def mail(self) -> SMTPResponse:
        return await self.smtp.mail(self.sender, options=self.options)

    async def rcpt(self, recipient: str) -> SMTPResponse:
        return await self.smtp.rcpt(recipient)

    async def data(self, message: bytes) -> SMTPResponse:
        return await self.smtp.data(message)

    async def drain(self) -> None:
        """Nothing is ever owed: every command has had its reply."""

    def finish(self) -> None:
        """Nothing to hand back."""


async def _greet(smtp: aiosmtplib.SMTP) -> None:
    """EHLO (HELO if EHLO is refused) unless done, as aiosmtplib's mail() starts with."""
    if not smtp.is_ehlo_or_helo_needed:
        return
    try:
        await smtp.ehlo()
    except SMTPHeloError:
        if not smtp.is_connected:
            raise
        await smtp.helo()


async def _rset(smtp: aiosmtplib.SMTP) -> None:
    if not smtp.is_connected:
        return
    try:
        await smtp.rset()
    except (SMTPException, OSError, TimeoutError):
        _close(smtp)


def _is_open(smtp: aiosmtplib.SMTP) -> bool:
    return smtp.is_connected


def _close(smtp: aiosmtplib.SMTP) -> None:
    # A connection we drop is dead to us: abort instead of close, because a
    # graceful TLS shutdown needs round trips that may never come (and would
    # leave the socket open until they do).
    transport = smtp.transport
    if transport is not None and not transport.is_closing():
        transport.abort()
    smtp.close()


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    """Say goodbye, then drop the socket without waiting for the TLS goodbye (see _close)."""
    transport = smtp.transport
    if smtp.is_connected:
        with contextlib.suppress(SMTPException, OSError, TimeoutError):
            await smtp.quit(timeout=2)
    if transport is not None:
        transport.abort()
