"""SMTP transport (SPEC O5) on aiosmtplib.

- Security ``none`` never upgrades (not even opportunistically: what the
  config says is what runs); ``starttls`` requires the upgrade; ``tls`` is TLS
  from the first byte. Certificates and host names are always verified,
  against the system CAs plus an optional extra CA bundle (``ca_file`` or the
  ``RECONCILE_TLS_CA_FILE`` environment variable) for private CAs. There is
  deliberately no switch to turn verification off.
- AUTH is :mod:`~reconciler.mail.smtp.auth`, the one the connection check uses
  too. Secrets are resolved per connection and never stored on the transport.
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
- ``probe`` is the connection check (:mod:`~reconciler.mail.smtp.probe`).

Classification (O7) is :mod:`~reconciler.mail.smtp.errors` and ``docs/dispatch.md``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtplib
from aiosmtplib import (
    SMTPRecipientRefused,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from reconciler.config.desired import digest_of
from reconciler.config.models.auth import NoAuth
from reconciler.config.models.outgoing_server import (
    OutgoingProtocol,
    OutgoingServer,
    OutgoingServerSpec,
    Security,
)
from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.config.secrets import redact
from reconciler.mail.envelope import Envelope
from reconciler.mail.failover import Endpoint, HostSelector, SendProgress, endpoints_of
from reconciler.mail.failure import MailFailure
from reconciler.mail.outcome import (
    Failure,
    Health,
    HealthStatus,
    Outcome,
    RecipientResult,
    SendResult,
    outcome_for_reply,
)
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.proxies import open_tunnel_async
from reconciler.mail.results import (
    config_result,
    describe,
    log_unexpected,
    logged_result,
    unsendable,
)
from reconciler.mail.smtp.auth import authenticate
from reconciler.mail.smtp.errors import error_failure, reply_failure, unreached
from reconciler.mail.smtp.pipelining import PipelinedTransaction
from reconciler.mail.smtp.pool import ConnectionPool, PoolStats
from reconciler.mail.smtp.probe import walk_smtp
from reconciler.mail.smtp.session import close, greet, new_session, rset, starttls
from reconciler.mail.steps import Reason, Step
from reconciler.mail.trace import trace
from reconciler.mail.transport import Redactor, Transport
from reconciler.oauth.source import TokenProvider

log = logging.getLogger(__name__)

DEFAULT_POOL_SIZE = 4
# Which refusal a 5xx at each point of the transaction is (test-connection's send step).
_REFUSED = {"sending MAIL FROM": Reason.SENDER, "sending RCPT TO": Reason.RECIPIENT,
            "sending DATA": Reason.CONTENT}
# Health.step names the stage of a probe that failed: connect | tls | auth.
_HEALTH_STEP = {Step.DNS: "connect", Step.TCP: "connect", Step.GREETING: "connect",
                Step.EHLO: "connect"}


class _Stale(Exception):
    """A pooled connection was found closed before the transaction got a reply."""


@dataclass(kw_only=True)
class _Attempt(SendProgress):
    """One send: the message, the server, the secrets to keep out of texts, where it is."""

    server: OutgoingServer
    envelope: Envelope
    redactor: Redactor = field(default_factory=Redactor)
    step: str = "waiting for a connection"
    unreachable_failures: list[Failure] = field(default_factory=list)

    def result(self, outcome: Outcome, failure: Failure | None, detail: str, *,
               recipients: tuple[RecipientResult, ...] = (), code: int | None = None,
               server_reply: str = "") -> SendResult:
        if failure in (Failure.TIMEOUT, Failure.CONNECT) and self.step == "sending DATA":
            # The reply to DATA never came: the message may be queued already. A
            # retry keeps the Message-ID (compose), so receivers can spot the copy.
            detail += "; the server may have accepted the message"
        return logged_result(log, self.envelope, self.server, self.redactor, outcome, failure,
                             detail, recipients=recipients, code=code,
                             server_reply=server_reply, host=self.host,
                             used_alternate=self.used_alternate)

    def answers(self, refused: dict[str, RecipientResult], outcome: Outcome, code: int,
                reply: str) -> tuple[RecipientResult, ...]:
        """Each recipient's own refusal, else the message's ``outcome`` with this reply."""
        reason = self.redactor(reply)
        return tuple(refused.get(a) or RecipientResult(a, outcome, code, reason)
                     for a in self.envelope.rcpt_to)

    def failed(self, failure: MailFailure,
               recipients: tuple[RecipientResult, ...] = ()) -> SendResult:
        return self.result(failure.outcome, failure.failure, failure.message,
                           recipients=recipients, code=failure.code)

    def unexpected(self, exc: Exception) -> SendResult:
        log_unexpected(log, self.server, exc, self.redactor)
        return self.result(Outcome.TRANSIENT, Failure.PROTOCOL,
                           f"unexpected error while {self.step}: {describe(exc)}")

    def trace(self, msg: str, *args: object) -> None:
        trace(self, msg, *args)


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
        proxy_lookup: Callable[[OutgoingServer], ProxyServerSpec | None] | None = None,
    ) -> None:
        # What the connection check is given too: trusted CAs, tokens, the EHLO name, proxies.
        self._options = ProbeOptions(ca_file=ca_file, token_provider=token_provider,
                                     local_hostname=local_hostname, proxy_lookup=proxy_lookup)
        self._tls = self._options.tls()  # now: an unreadable CA bundle fails at start-up
        self.selector = selector or HostSelector()
        self._max_age = max_connection_age
        self._connect_timeout = connect_timeout
        self._liveness_timeout = liveness_timeout
        self._pools: dict[tuple[object, ...], ConnectionPool] = {}

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
        attempt = _Attempt(server=server, envelope=envelope)
        timeout = asyncio.timeout(spec.timeout_seconds)
        try:
            async with timeout:
                return await self._send(candidates, attempt)
        except TimeoutError as exc:
            if not timeout.expired():
                return attempt.unexpected(exc)
            return attempt.result(Outcome.TRANSIENT, Failure.TIMEOUT, f"deadline of "
                                  f"{spec.timeout_seconds:g}s exceeded while {attempt.step}")
        except Exception as exc:
            return attempt.unexpected(exc)

    async def probe(self, server: OutgoingServer, *, alternate: bool = False) -> Health:
        """The connection check of one host (the main one unless ``alternate``) within the
        server's deadline; never touches the pool."""
        spec = server.spec
        try:
            main, alt = endpoints_of(spec)
        except ValueError as exc:
            return Health(HealthStatus.UNREACHABLE, None, str(exc), Failure.CONFIG, "config")
        endpoint = alt if alternate and alt is not None else main
        options = ProbeOptions(self._options.ca_file, self._options.token_provider,
                               spec.timeout_seconds, await self._options.ehlo_name(),
                               self._options.proxy_lookup)
        results = await walk_smtp(server, endpoint, options)
        failed = next((r for r in results if not r.ok), None)
        if failed is not None:
            return Health(HealthStatus.UNREACHABLE, endpoint.address, failed.detail,
                          failed.failure, _HEALTH_STEP.get(failed.step, str(failed.step)))
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

    async def _send(self, candidates: tuple[Endpoint, ...], attempt: _Attempt) -> SendResult:
        spec = attempt.server.spec
        # With a host to fail over to, one host may not eat the whole deadline.
        connect_timeout = min(self._connect_timeout, spec.timeout_seconds)
        if len(candidates) > 1:
            connect_timeout = min(connect_timeout, spec.timeout_seconds / 2)
        for endpoint in candidates:
            attempt.endpoint = endpoint
            pool = self._pool(spec, endpoint)
            attempt.step = f"waiting for a connection to {endpoint.address}"
            async with pool.slot():
                reuse = True
                for _ in range(2):
                    try:
                        item = await pool.acquire(
                            lambda ep=endpoint: self._open(attempt, ep, connect_timeout),
                            reuse=reuse)
                    except MailFailure as exc:
                        if not unreached(exc):  # reached and refused: no other host helps
                            return attempt.failed(exc)
                        attempt.unreachable_failures.append(exc.failure)
                        attempt.give_up_on(self.selector, endpoint,
                                           attempt.redactor(exc.message))
                        break
                    attempt.reached(self.selector, endpoint)
                    reusable = stale = False
                    try:
                        result, reusable = await self._transact(
                            item.conn, attempt, stale_possible=reuse and item.uses > 1)
                        return result
                    except _Stale:
                        # The server had closed this pooled connection before our MAIL
                        # FROM (it skipped the liveness check, see pool): nothing was
                        # sent, so once more on a new connection.
                        attempt.trace("pooled connection to %s was closed; reconnecting",
                                      endpoint.address)
                        reuse, stale = False, True
                    finally:
                        if stale:
                            pool.discard(item)
                        else:
                            pool.release(item, reusable=reusable and item.conn.is_connected)
        failure = (Failure.TIMEOUT if set(attempt.unreachable_failures) == {Failure.TIMEOUT}
                   else Failure.CONNECT)
        return attempt.result(Outcome.TRANSIENT, failure,
                              "cannot reach " + "; ".join(attempt.unreachable))

    async def _transact(self, smtp: aiosmtplib.SMTP, attempt: _Attempt, *,
                        stale_possible: bool = False) -> tuple[SendResult, bool]:
        """MAIL, RCPT per recipient, DATA; the result and whether the connection is reusable.

        Raises :class:`_Stale` when ``stale_possible`` (a reused connection) and the
        connection turns out closed before MAIL FROM got any reply.

        Pipelined (RFC 2920) when the server offers it, else one command at a time;
        both raise the same errors at the same steps, so one classification serves both.
        """
        envelope, redactor = attempt.envelope, attempt.redactor
        message = envelope.as_bytes()
        rcpt_to = envelope.rcpt_to  # a property that builds a new tuple each time
        refused: dict[str, RecipientResult] = {}
        pipelined: PipelinedTransaction | None = None
        try:
            attempt.step = "sending MAIL FROM"
            await greet(smtp)  # what mail() would do first; PIPELINING and SIZE are known after
            options = [f"SIZE={len(message)}"] if smtp.supports_extension("size") else []
            if smtp.supports_extension("pipelining"):
                attempt.trace("pipelining MAIL FROM, %d RCPT TO and DATA to %s",
                              len(rcpt_to), attempt.host)
                pipelined = PipelinedTransaction(smtp, rcpt_to)
            transaction = pipelined or smtp  # the same calls, the same errors
            await transaction.mail(envelope.mail_from, options=options)
            attempt.step = "sending RCPT TO"
            for address in rcpt_to:
                try:
                    await transaction.rcpt(address)
                except SMTPRecipientRefused as exc:
                    refused[address] = RecipientResult(
                        address, outcome_for_reply(exc.code), exc.code, redactor(exc.message))
            if len(refused) == len(rcpt_to):
                await _give_up(smtp, pipelined)
                outcome = (Outcome.TRANSIENT
                           if any(r.outcome == Outcome.TRANSIENT for r in refused.values())
                           else Outcome.PERMANENT)
                return attempt.result(outcome, Failure.RECIPIENTS, "every recipient was refused",
                                      recipients=tuple(refused.values())), True
            attempt.step = "sending DATA"
            reply = await transaction.data(message)
        except SMTPResponseException as exc:
            await _give_up(smtp, pipelined)
            failure = reply_failure(exc.code, exc.message, Step.SEND, attempt.step,
                                    _REFUSED.get(attempt.step))
            recipients = attempt.answers(refused, failure.outcome, exc.code, exc.message)
            return attempt.failed(failure, recipients), exc.code != 421
        except (SMTPServerDisconnected, SMTPTimeoutError) as exc:
            if (stale_possible and attempt.step == "sending MAIL FROM"
                    and isinstance(exc, SMTPServerDisconnected)):
                raise _Stale from exc
            assert attempt.endpoint is not None  # set before a connection is taken
            return attempt.failed(error_failure(exc, Step.SEND, attempt.step, attempt.endpoint,
                                                Security(attempt.server.spec.security))), False
        finally:
            if pipelined is not None:
                pipelined.finish()
        detail = f"accepted for {len(rcpt_to) - len(refused)} of " \
                 f"{len(rcpt_to)} recipients{attempt.failover_note()}"
        return attempt.result(Outcome.SENT, None, detail, recipients=attempt.answers(
            refused, Outcome.SENT, reply.code, reply.message),
            server_reply=f"{reply.code} {reply.message}"), True

    # -- connections ------------------------------------------------------

    def _pool(self, spec: OutgoingServerSpec,
              endpoint: Endpoint) -> ConnectionPool:
        size = spec.max_concurrency or DEFAULT_POOL_SIZE
        # The credentials' references (never values) are part of the key: a
        # session authenticated as one account must not carry another's mail.
        auth = digest_of(redact(spec.auth.model_dump(mode="json", by_alias=True)))
        key = (endpoint.host.lower(), endpoint.port, str(spec.security), auth, size, spec.proxy)
        pool = self._pools.get(key)
        if pool is None:
            pool = ConnectionPool(size, self._max_age, self._liveness_timeout)
            self._pools[key] = pool
        return pool

    async def _open(self, attempt: _Attempt, endpoint: Endpoint,
                    connect_timeout: float) -> aiosmtplib.SMTP:
        """Connect, secure and authenticate; raises MailFailure."""
        server = attempt.server
        security = Security(server.spec.security)
        attempt.step = f"connecting to {endpoint.address}"
        attempt.trace("connecting to %s (%s)", endpoint.address, security)
        proxy = self._options.proxy_for(server, endpoint.host)
        sock = None if proxy is None else await open_tunnel_async(
            proxy, endpoint.host, endpoint.port, connect_timeout, attempt.redactor)
        smtp = new_session(endpoint, security, self._tls, await self._options.ehlo_name(),
                           timeout=server.spec.timeout_seconds, sock=sock)
        step = Step.TCP
        try:
            await smtp.connect(timeout=connect_timeout)
            if security == Security.STARTTLS:
                step = Step.EHLO
                await greet(smtp)
                step = Step.TLS
                await starttls(smtp, endpoint)
            if not isinstance(server.spec.auth, NoAuth):
                step, attempt.step = Step.AUTH, f"authenticating to {endpoint.address}"
                await authenticate(smtp, server, endpoint, attempt.redactor,
                                   self._options.token_provider)
        except BaseException as exc:
            close(smtp)
            if sock is not None:
                sock.close()  # asyncio does not always close a socket it was handed
            if isinstance(exc, MailFailure) or not isinstance(exc, Exception):
                raise
            raise error_failure(exc, step, attempt.step, endpoint, security) from None
        attempt.trace("connected to %s", endpoint.address)
        return smtp


async def _give_up(smtp: aiosmtplib.SMTP, pipelined: PipelinedTransaction | None) -> None:
    """After a refusal: read the replies still owed, then RSET for the next message."""
    if pipelined is not None:
        await pipelined.drain()
    await rset(smtp)
