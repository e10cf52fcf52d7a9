"""Connection checks per protocol (SPEC O9, O10): which steps, how to walk them.

Each protocol registers a plan (the steps in order) and a walker. SMTP walks
DNS → TCP → TLS → greeting → EHLO → AUTH (TLS before or after the greeting,
by security). Graph and EWS walk DNS → TCP → TLS → token (fetch an access
token) → API (one cheap authenticated call: GET /users/{mailbox}, EWS GetFolder);
EWS with Basic auth has no token step, its API call checks the password.

``send_test_message`` is test-connection's last step: a short message through
the real transport, so what it proves is what the daemon will do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable

from reconciler.config.models.incoming_server import IncomingServer
from reconciler.config.models.outgoing_server import OutgoingProtocol, OutgoingServer
from reconciler.dispatch.compose import compose
from reconciler.dispatch.filters import filter_notification
from reconciler.mail.envelope import Notification
from reconciler.mail.ews.transport import ews_url_for
from reconciler.mail.failover import Endpoint, endpoints_of
from reconciler.mail.outcome import Failure, Outcome, SendResult
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.registry import OUTGOING, check_steps, incoming_check, transport_for
from reconciler.mail.steps import ProbeReport, Reason, Step, StepResult
from reconciler.mail.transport import Transport

log = logging.getLogger(__name__)

class UnsupportedProtocol(Exception):
    """No connection check exists for this protocol yet."""


def supports(server: OutgoingServer) -> bool:
    return OutgoingProtocol(server.spec.protocol) in OUTGOING


def endpoint_of(server: OutgoingServer, *, alternate: bool = False) -> Endpoint:
    """The main host, or the alternate; ValueError when the spec has no such host."""
    endpoints = check_steps(server)[2] if supports(server) else None
    main, alt = endpoints(server) if endpoints is not None else endpoints_of(server.spec)
    if not alternate:
        return main
    if alt is None:
        raise ValueError(f"server {server.metadata.name} has no alternate host")
    return alt


def server_label(server: OutgoingServer | IncomingServer) -> str:
    return f"{server.metadata.namespace}/{server.metadata.name}"


async def probe_server(
    server: OutgoingServer, *, alternate: bool = False, options: ProbeOptions | None = None
) -> ProbeReport:
    """Walk the server's steps against its main (or alternate) host. Never raises for a
    failed check; raises UnsupportedProtocol or ValueError (no host) for what cannot run."""
    protocol = OutgoingProtocol(server.spec.protocol)
    if not supports(server):
        raise UnsupportedProtocol(f"connection checks for protocol {protocol} are not "
                                  "implemented yet")
    planner, walk, _ = check_steps(server)
    endpoint = endpoint_of(server, alternate=alternate)
    options = options or ProbeOptions()
    report = ProbeReport(server_label(server), str(protocol), endpoint, planner(server))
    return await _walked(report, walk(server, endpoint, options))


async def probe_incoming(server: IncomingServer,
                         options: ProbeOptions | None = None) -> ProbeReport:
    """Walk an IncomingServer's steps (SPEC I9), read-only; every incoming protocol has a
    check. Never raises for a failed check; raises a FetchError for a spec that cannot
    be checked (no host)."""
    check = incoming_check(server, options or ProbeOptions())
    report = ProbeReport(server_label(server), str(server.spec.protocol), check.endpoint,
                         check.plan())
    return await _walked(report, check.walk())


async def _walked(report: ProbeReport, walk: Awaitable[list[StepResult]]) -> ProbeReport:
    try:
        results = await walk
    except Exception as exc:  # a bug in a walker must not take the monitor down
        log.exception("connection check of %s crashed", report.server)
        results = [StepResult(report.not_run[0], False, f"unexpected {type(exc).__name__}",
                              0.0, Failure.PROTOCOL, reason=Reason.UNEXPECTED)]
    for result in results:
        report = report.with_result(result)
    return report


def cannot_reach(report: ProbeReport) -> bool:
    """The host is not there at all (the transport's failover rule, docs/dispatch.md):
    no name, no TCP, or silence/hang-up before the greeting. A TLS, AUTH or reply
    error means the host is up and misbehaving; switching hosts would hide it."""
    failed = report.failed
    if failed is None or failed.failure not in (Failure.CONNECT, Failure.TIMEOUT):
        return False
    if failed.step in (Step.DNS, Step.TCP, Step.PROXY, Step.GREETING):
        return True
    implicit_tls = (Step.TLS in report.plan and Step.GREETING in report.plan
                    and report.plan.index(Step.TLS) < report.plan.index(Step.GREETING))
    return failed.step == Step.TLS and implicit_tls and failed.failure == Failure.TIMEOUT


# -- test-connection's send step --------------------------------------------------


def pinned(server: OutgoingServer, endpoint: Endpoint, timeout: float) -> OutgoingServer:
    """The server with only ``endpoint`` and the given deadline: a test must not fail
    over to the other host and report success for the host it was not asked about."""
    update: dict[str, object] = {
        "host": endpoint.host, "port": endpoint.port, "alternate_host": None,
        "alternate_port": None, "timeout_seconds": timeout,
    }
    if OutgoingProtocol(server.spec.protocol) == OutgoingProtocol.EWS:
        update["ews_url"] = ews_url_for(server, endpoint)  # the URL follows the host
    spec = server.spec.model_copy(update=update)
    return server.model_copy(update={"spec": spec})


def sample_notification(server: OutgoingServer, to: str) -> Notification:
    """The short message test-connection sends; raises pydantic's ValidationError for a bad
    address."""
    label = server_label(server)
    return Notification.model_validate({
        "module": "test-connection",
        "namespace": server.metadata.namespace,
        "to": [to],
        "subject": f"Test message from reconcile test-connection ({label})",
        "text_body": (
            f"This message was sent by `reconcile test-connection` to check that the "
            f"outgoing server {label} can deliver mail.\nNo action is needed.\n"
        ),
    })


async def send_test_message(
    server: OutgoingServer, to: str, *, alternate: bool = False,
    options: ProbeOptions | None = None,
) -> StepResult:
    """Send one short message to ``to`` through the real transport, pinned to one host."""
    options = options or ProbeOptions()
    budget = options.budget(server.spec)
    transport = await _transport_for(server, options, budget)
    target = pinned(server, endpoint_of(server, alternate=alternate), budget)
    notification = sample_notification(server, to)
    # The address was given on purpose: recipient filters are for notifications.
    envelope = compose(notification, target, filter_notification(notification, None))
    started = time.perf_counter()
    try:
        result = await transport.send(envelope, target)
    finally:
        await transport.aclose()
    seconds = time.perf_counter() - started
    if result.outcome == Outcome.SENT and not result.refused:
        reply = f": {result.server_reply}" if result.server_reply else ""
        return StepResult(Step.SEND, True, f"test message {envelope.message_id} accepted for "
                          f"{to}{reply}", seconds)
    return _send_failure(result, seconds)


async def _transport_for(server: OutgoingServer, options: ProbeOptions,
                         budget: float) -> Transport:
    """A fresh transport of the server's protocol, configured as the daemon's is."""
    if not supports(server):
        raise UnsupportedProtocol(f"sending through protocol {server.spec.protocol} is not "
                                  "implemented yet")
    wants_name = "local_hostname" in OUTGOING[OutgoingProtocol(server.spec.protocol)].options
    return transport_for(server.spec.protocol, ca_file=options.ca_file,
                         token_provider=options.token_provider, connect_timeout=budget,
                         proxy_lookup=options.proxy_lookup,
                         local_hostname=await options.ehlo_name() if wants_name else None)


def _send_failure(result: SendResult, seconds: float) -> StepResult:
    code = next((r.code for r in result.recipients if r.code is not None), None)
    detail = result.detail
    refused = result.refused[0] if result.refused else None
    if result.failure == Failure.RECIPIENTS and refused is not None and refused.reason:
        detail = f"{detail}: {refused.code} {refused.reason}"
    return StepResult(Step.SEND, False, detail, seconds, result.failure, code,
                      _send_reason(result, code))


# Graph/EWS answers that say what is wrong whatever the failure was classified as.
_HTTP_REASONS = {403: Reason.PERMISSION, 404: Reason.NOT_FOUND}
_SEND_REASONS = {Failure.RECIPIENTS: Reason.RECIPIENT, Failure.AUTH: Reason.AUTH_FAILED,
                 Failure.TIMEOUT: Reason.TIMEOUT, Failure.TLS_VERIFY: Reason.UNTRUSTED,
                 Failure.TLS: Reason.HANDSHAKE, Failure.CONNECT: Reason.CLOSED}


def _send_reason(result: SendResult, code: int | None) -> Reason:
    """The reason a failed test send gives ``likely_fix``."""
    failure, detail = result.failure, result.detail
    if code in _HTTP_REASONS and failure in (Failure.AUTH, Failure.CONFIG):
        return _HTTP_REASONS[code]
    if failure == Failure.AUTH and code == 530:
        return (Reason.ENCRYPTION_REQUIRED if "STARTTLS" in detail.upper()
                else Reason.AUTH_REQUIRED)
    if result.outcome == Outcome.TRANSIENT and failure in (
            Failure.RECIPIENTS, Failure.REJECTED, Failure.AUTH):
        return Reason.TEMPORARY
    if failure == Failure.REJECTED:
        if "MAIL FROM" in detail:
            return Reason.SENDER
        return Reason.CONTENT if "DATA" in detail else Reason.REJECTED
    return _SEND_REASONS.get(failure, Reason.UNEXPECTED) if failure else Reason.UNEXPECTED
