"""The transport and the connection check share AUTH, the session steps and the
classifier (mail/smtp/auth, session, errors): the same server fault reads the same in a
send's result (the audit) and in the failed step (health, test-connection)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from dispatch.kit import USER, basic_auth
from peers.smtp import PeerCerts, SmtpPeer

from reconciler.mail.failover import endpoints_of
from reconciler.mail.outcome import Failure, Outcome
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.smtp.probe import walk_smtp
from reconciler.mail.steps import Reason, Step

from .test_transport import WRONG, send_once, transport

PeerFactory = Callable[..., SmtpPeer]


@pytest.mark.parametrize(("mode", "security", "peer_kw", "step", "failure", "reason"), [
    ("starttls", "starttls", {"user": USER, "password": WRONG}, Step.AUTH,
     Failure.AUTH, Reason.AUTH_FAILED),
    ("plain", "starttls", {}, Step.TLS, Failure.TLS, Reason.NO_STARTTLS),
    ("plain", "tls", {}, Step.TLS, Failure.TLS, Reason.HANDSHAKE),
    ("plain", "none", {"user": USER, "password": WRONG, "auth_require_tls": True}, Step.AUTH,
     Failure.CONFIG, Reason.AUTH_NOT_OFFERED_PLAINTEXT),
])
async def test_a_fault_reads_the_same_in_the_send_and_the_check(
    mode: str, security: str, peer_kw: dict[str, object], step: Step, failure: Failure,
    reason: Reason, peer_factory: PeerFactory, certs: PeerCerts,
) -> None:
    peer = peer_factory(mode, **peer_kw)
    server = peer.server(security=security, auth=basic_auth())
    result = await send_once(transport(certs), server)
    main, _ = endpoints_of(server.spec)
    steps = await walk_smtp(server, main, ProbeOptions(ca_file=certs.ca_file, timeout=5.0,
                                                       local_hostname="client.test"))
    failed = steps[-1]
    assert (failed.ok, failed.step, failed.failure, failed.reason) == (False, step, failure,
                                                                       reason)
    assert (result.outcome, result.failure) == (Outcome.PERMANENT, failure)
    assert result.detail == failed.detail
    assert peer.messages == []


async def test_the_transports_probe_is_the_connection_check(
    peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("starttls", user=USER, password=WRONG)
    server = peer.server(auth=basic_auth())
    health = await transport(certs).probe(server)
    steps = await walk_smtp(server, endpoints_of(server.spec)[0],
                            ProbeOptions(ca_file=certs.ca_file, local_hostname="client.test"))
    assert (health.step, health.failure, health.detail) == ("auth", Failure.AUTH,
                                                            steps[-1].detail)
