"""Connection checks step by step (O9, O10) against real peers: each step passes, or
fails with the right classification and fix; secrets never show."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import trustme
from peers.smtp import HOST, HangingListener, PeerCerts, SmtpPeer, free_port, server_spec
from peers.smtp_sink import SmtpSink

from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.health.diagnose import likely_fix
from reconciler.health.probes import (
    cannot_reach,
    probe_server,
    send_test_message,
)
from reconciler.mail.outcome import Failure, HealthStatus
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.steps import ProbeReport, Reason, Step

from .kit import PASSWORD, USER, WRONG, WRONG_ENV, assert_no_secret, basic_auth, fix, steps

PeerFactory = Callable[..., SmtpPeer]
TOKEN = "ya29.health-probe-token"


def options(certs: PeerCerts | None, **kw: Any) -> ProbeOptions:
    kw.setdefault("timeout", 5.0)
    return ProbeOptions(ca_file=certs.ca_file if certs else None, local_hostname="client.test",
                        **kw)


async def probe(server: OutgoingServer, certs: PeerCerts | None, **kw: Any) -> ProbeReport:
    alternate = kw.pop("alternate", False)
    return await probe_server(server, alternate=alternate, options=options(certs, **kw))


# -- every step passes -----------------------------------------------------------


async def test_plain_server_without_auth(peer_factory: PeerFactory) -> None:
    peer = peer_factory("plain")
    server = peer.server()
    report = await probe(server, None)
    assert report.ok, report.error
    assert steps(report) == [(Step.DNS, True), (Step.TCP, True), (Step.GREETING, True),
                             (Step.EHLO, True)]
    dns, tcp, greeting, _ = report.results
    assert dns.detail == f"{HOST} is an IP address (no lookup needed)"
    assert tcp.detail == f"connected to {HOST}:{peer.port}"
    assert greeting.detail.startswith("220 ")
    assert report.health().status == HealthStatus.REACHABLE
    assert peer.messages == []  # a probe never sends mail


async def test_starttls_with_basic_auth(peer_factory: PeerFactory, certs: PeerCerts) -> None:
    peer = peer_factory("starttls", user=USER, password=PASSWORD)
    report = await probe(peer.server(auth=basic_auth()), certs)
    assert report.ok, report.error
    assert [s for s, _ in steps(report)] == [Step.DNS, Step.TCP, Step.GREETING, Step.EHLO,
                                             Step.TLS, Step.AUTH]
    ehlo, tls, auth = report.results[3:]
    assert "STARTTLS" in ehlo.detail
    assert tls.detail.startswith("STARTTLS 220, TLSv1.")
    assert f"certificate for {HOST}, localhost verified" in tls.detail
    assert auth.detail == f"authenticated as {USER} (PLAIN)"
    assert all(r.seconds >= 0 for r in report.results)


async def test_implicit_tls_handshake_comes_before_the_greeting(
    peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("tls", user=USER, password=PASSWORD)
    report = await probe(peer.server(auth=basic_auth()), certs)
    assert report.ok, report.error
    assert [s for s, _ in steps(report)] == [Step.DNS, Step.TCP, Step.TLS, Step.GREETING,
                                             Step.EHLO, Step.AUTH]
    assert report.results[2].detail.startswith("implicit TLS, TLSv1.")


async def test_xoauth2_with_a_token_provider(peer_factory: PeerFactory, certs: PeerCerts) -> None:
    peer = peer_factory("starttls", user=USER, oauth_token=TOKEN)
    server = peer.server(auth={"type": "oauth2", "provider": "google", "clientId": "desk-app",
                               "username": USER})
    ok = await probe(server, certs, token_provider=lambda s: TOKEN)
    assert ok.ok and ok.results[-1].detail == f"authenticated as {USER} (XOAUTH2)"
    stale = "ya29.stale-token"
    refused = await probe(server, certs, token_provider=lambda s: stale)
    assert refused.failed is not None and refused.failed.reason == Reason.AUTH_FAILED
    assert stale not in repr(refused)
    missing = await probe(server, certs)
    assert missing.failed is not None and missing.failed.reason == Reason.NO_TOKEN_PROVIDER
    assert "auth login" in fix(missing, server)


async def test_the_alternate_host_is_probed_on_its_own_port(
    peer_factory: PeerFactory
) -> None:
    alternate = peer_factory("plain")
    server = server_spec(free_port(), "plain", alternateHost=HOST, alternatePort=alternate.port)
    main = await probe(server, None)
    alt = await probe(server, None, alternate=True)
    assert not main.ok and cannot_reach(main)
    assert alt.ok and alt.endpoint is not None and alt.endpoint.alternate
    assert alt.endpoint.address == f"{HOST}:{alternate.port}"


# -- each failing step, its classification and its fix ----------------------------


async def test_dns_failure_names_the_host(certs: PeerCerts) -> None:
    server = server_spec(587, "starttls", host="smtp.desk.invalid")
    report = await probe(server, certs)
    assert steps(report) == [(Step.DNS, False)]
    failed = report.failed
    assert failed is not None and failed.reason == Reason.NXDOMAIN
    assert "smtp.desk.invalid does not resolve" in failed.detail
    assert report.not_run == (Step.TCP, Step.GREETING, Step.EHLO, Step.TLS)
    assert "host name smtp.desk.invalid does not exist in DNS" in fix(report, server)
    assert cannot_reach(report)
    assert report.error is not None and report.error.startswith("dns: ")


async def test_closed_port_is_connection_refused() -> None:
    port = free_port()
    server = server_spec(port, "plain")
    report = await probe(server, None)
    assert steps(report) == [(Step.DNS, True), (Step.TCP, False)]
    failed = report.failed
    assert failed is not None
    assert (failed.failure, failed.reason) == (Failure.CONNECT, Reason.REFUSED)
    assert failed.detail == f"connection refused by {HOST}:{port}"
    hint = fix(report, server)
    assert "Check the port" in hint and "587 with security starttls" in hint
    assert "firewall" in hint
    assert cannot_reach(report)


async def test_implicit_tls_against_a_plain_port(peer_factory: PeerFactory,
                                                 certs: PeerCerts) -> None:
    peer = peer_factory("plain")
    server = server_spec(peer.port, "tls")
    report = await probe(server, certs)
    assert steps(report) == [(Step.DNS, True), (Step.TCP, True), (Step.TLS, False)]
    failed = report.failed
    assert failed is not None
    assert (failed.failure, failed.reason) == (Failure.TLS, Reason.HANDSHAKE)
    hint = fix(report, server)
    assert "security is tls" in hint and "use security starttls" in hint
    assert not cannot_reach(report)  # the host is up; failing over would hide the mistake


async def test_starttls_security_on_an_implicit_tls_port_hangs_at_the_greeting(
    peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("tls")
    server = server_spec(peer.port, "starttls")
    report = await probe(server, certs, timeout=1.0)
    failed = report.failed
    assert failed is not None and failed.step == Step.GREETING
    assert failed.reason in (Reason.TIMEOUT, Reason.CLOSED)
    assert "use security tls" in fix(report, server)


async def test_silent_listener_is_a_greeting_timeout() -> None:
    with HangingListener() as listener:
        server = server_spec(listener.port, "plain")
        report = await probe(server, None, timeout=0.5)
    failed = report.failed
    assert failed is not None
    assert (failed.step, failed.failure, failed.reason) == (
        Step.GREETING, Failure.TIMEOUT, Reason.TIMEOUT)
    assert "waiting for the greeting" in failed.detail
    assert "never sent its greeting" in fix(report, server)
    assert cannot_reach(report)


async def test_starttls_required_but_not_offered(peer_factory: PeerFactory,
                                                 certs: PeerCerts) -> None:
    peer = peer_factory("plain")
    server = server_spec(peer.port, "starttls")
    report = await probe(server, certs)
    failed = report.failed
    assert failed is not None and (failed.step, failed.reason) == (Step.TLS, Reason.NO_STARTTLS)
    assert "does not offer STARTTLS" in fix(report, server)


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_untrusted_certificate(mode: str, peer_factory: PeerFactory,
                                     stranger_certs: PeerCerts) -> None:
    peer = peer_factory(mode)
    server = peer.server()
    report = await probe(server, stranger_certs)
    failed = report.failed
    assert failed is not None
    assert (failed.step, failed.failure, failed.reason) == (
        Step.TLS, Failure.TLS_VERIFY, Reason.UNTRUSTED)
    assert "is not trusted" in failed.detail
    hint = fix(report, server)
    assert "--ca-file" in hint and "cannot be switched off" in hint


async def test_certificate_for_another_host_name(
    peer_factory: PeerFactory, tmp_path: Any
) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    other = PeerCerts(ca, ca.issue_cert("mail.elsewhere.test"), ca_file)
    peer = peer_factory("tls", certs=other)
    server = peer.server()
    report = await probe_server(server, options=ProbeOptions(ca_file=ca_file, timeout=5.0,
                                                             local_hostname="client.test"))
    failed = report.failed
    assert failed is not None and failed.reason == Reason.HOSTNAME_MISMATCH
    assert f"not for {HOST}" in fix(report, server)


async def test_wrong_password_is_an_auth_failure_without_leaking(
    peer_factory: PeerFactory, certs: PeerCerts, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(WRONG_ENV, WRONG)
    peer = peer_factory("starttls", user=USER, password=PASSWORD)
    server = peer.server(auth=basic_auth(WRONG_ENV))
    report = await probe(server, certs)
    failed = report.failed
    assert failed is not None
    assert (failed.step, failed.failure, failed.code, failed.reason) == (
        Step.AUTH, Failure.AUTH, 535, Reason.AUTH_FAILED)
    hint = fix(report, server)
    assert f"refused the login for {USER}" in hint and "app password" in hint
    assert "SMTP AUTH is enabled" in hint
    assert not cannot_reach(report)
    assert_no_secret([repr(report), hint, *(r.getMessage() for r in caplog.records)], WRONG)


async def test_auth_not_offered_before_encryption(peer_factory: PeerFactory) -> None:
    peer = peer_factory("plain", user=USER, password=PASSWORD)  # AUTH only after STARTTLS
    server = server_spec(peer.port, "plain", auth=basic_auth())
    report = await probe(server, None)
    failed = report.failed
    assert failed is not None and failed.reason == Reason.AUTH_NOT_OFFERED_PLAINTEXT
    assert "use security starttls" in fix(report, server)


async def test_unset_password_reference(peer_factory: PeerFactory, certs: PeerCerts) -> None:
    peer = peer_factory("starttls", user=USER, password=PASSWORD)
    server = peer.server(auth=basic_auth("HEALTH_TEST_NOT_SET"))
    report = await probe(server, certs)
    failed = report.failed
    assert failed is not None
    assert (failed.failure, failed.reason) == (Failure.CONFIG, Reason.SECRET)
    assert "HEALTH_TEST_NOT_SET is not set" in failed.detail


async def test_graph_without_an_endpoint_cannot_be_checked() -> None:
    # Graph's own checks are in test_graph_probe.py; without graphEndpoint there is no host.
    server = server_spec(443, "tls", protocol="graph", host=None, port=None)
    with pytest.raises(ValueError, match="graphEndpoint"):
        await probe_server(server)


# -- the send step (test-connection) through the real transport --------------------


async def test_send_step_delivers_a_short_message(peer_factory: PeerFactory,
                                                  certs: PeerCerts) -> None:
    peer = peer_factory("starttls", user=USER, password=PASSWORD)
    server = peer.server(auth=basic_auth())
    result = await send_test_message(server, "jane@corp.example", options=options(certs))
    assert result.ok, result.detail
    assert "accepted for jane@corp.example" in result.detail
    [got] = peer.messages
    assert got.rcpt_tos == ["jane@corp.example"] and got.tls
    assert "reconcile test-connection" in got.message["Subject"]


@pytest.mark.parametrize(("fault", "reason", "words"), [
    ("MAIL", Reason.SENDER, "refused the sender helpdesk@desk.example"),
    ("RCPT", Reason.RECIPIENT, "refused the recipient"),
])
async def test_send_step_refusals(fault: str, reason: Reason, words: str) -> None:
    sink = SmtpSink(["-f", fault]).start()
    try:
        server = server_spec(sink.port, "plain")
        result = await send_test_message(server, "jane@corp.example", options=options(None))
    finally:
        sink.stop()
    assert not result.ok and result.reason == reason and result.code == 500
    assert result.step == Step.SEND
    assert words in likely_fix(result, server, server_endpoint(server))


async def test_send_step_sender_not_owned_by_the_account(peer_factory: PeerFactory,
                                                         certs: PeerCerts) -> None:
    peer = peer_factory("starttls", user=USER, password=PASSWORD)
    peer.handler.mail_reply = "553 5.7.1 Sender address rejected: not owned by user"
    server = peer.server(auth=basic_auth())
    result = await send_test_message(server, "jane@corp.example", options=options(certs))
    assert (result.ok, result.reason, result.code) == (False, Reason.SENDER, 553)
    assert "not owned by user" in result.detail
    assert "may not send as that From address" in likely_fix(result, server,
                                                              server_endpoint(server))
    assert peer.messages == []


def server_endpoint(server: OutgoingServer) -> Any:
    from reconciler.health.probes import endpoint_of

    return endpoint_of(server)


def test_status_knows_which_protocols_are_checked() -> None:
    from reconciler.health.record import CHECKED_PROTOCOLS
    from reconciler.mail.registry import OUTGOING

    assert {str(p) for p in OUTGOING} == CHECKED_PROTOCOLS
