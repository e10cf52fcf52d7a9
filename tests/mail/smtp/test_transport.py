"""SmtpTransport against real aiosmtpd peers: security, AUTH, classification, pool, deadline,
failover, probes, and that no secret ever shows up in results or logs."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from dispatch.kit import PASSWORD, PASSWORD_ENV, USER, basic_auth
from peers.smtp import HOST, HangingListener, PeerCerts, SmtpPeer, free_port, server_spec

from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.dispatch.compose import compose
from reconciler.dispatch.filters import filter_notification
from reconciler.mail.envelope import Envelope, Notification
from reconciler.mail.outcome import Failure, HealthStatus, Outcome, SendResult
from reconciler.mail.smtp.transport import SmtpTransport
from reconciler.oauth.source import TokenError
from reconciler.runtime.tls import CA_FILE_ENV

PeerFactory = Callable[..., SmtpPeer]
WRONG = "Wr0ng-Secret-value-42"
TOKEN = "ya29.token-for-the-test-only"


def envelope_for(server: OutgoingServer, **kw: Any) -> Envelope:
    body: dict[str, Any] = {"module": "request", "to": ["Jane <jane@corp.example>"],
                            "subject": "Ticket ##RE-1## — ok", "text_body": "hello"}
    body.update(kw)
    n = Notification.model_validate(body)
    return compose(n, server, filter_notification(n, None))


def transport(certs: PeerCerts | None, **kw: Any) -> SmtpTransport:
    kw.setdefault("connect_timeout", 2.0)
    return SmtpTransport(ca_file=certs.ca_file if certs else None, local_hostname="client.test",
                         **kw)


async def send_once(t: SmtpTransport, server: OutgoingServer, **kw: Any) -> SendResult:
    try:
        return await t.send(envelope_for(server, **kw), server)
    finally:
        await t.aclose()


def our_log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("reconciler"))


def secret_forms(secret: str, user: str = USER) -> list[str]:
    return [secret, base64.b64encode(secret.encode()).decode(),
            base64.b64encode(f"\0{user}\0{secret}".encode()).decode()]


# -- security modes and authentication --------------------------------------


async def test_plain_send_delivers_with_bcc_only_in_the_envelope(
    peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("plain")
    server = peer.server()
    result = await send_once(transport(certs), server, cc=["ops@corp.example"],
                             bcc=["audit@corp.example"])
    assert result.outcome == Outcome.SENT, result.detail
    assert result.host == f"{HOST}:{peer.port}" and not result.used_alternate
    assert result.accepted == ("jane@corp.example", "ops@corp.example", "audit@corp.example")
    assert "queued as peer-1" in result.server_reply
    [got] = peer.messages
    assert got.rcpt_tos == ["jane@corp.example", "ops@corp.example", "audit@corp.example"]
    assert got.mail_from == "helpdesk@desk.example"
    assert "Bcc" not in got.message and b"audit@corp.example" not in got.data
    assert got.message["Subject"] == "Ticket ##RE-1## — ok"


@pytest.mark.parametrize("mode", ["plain", "starttls", "tls"])
async def test_each_security_mode_with_basic_auth(
    mode: str, peer_factory: PeerFactory, certs: PeerCerts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    peer = peer_factory(mode, user=USER, password=PASSWORD, auth_require_tls=mode != "plain")
    server = peer.server(auth=basic_auth(), debug=True)
    result = await send_once(transport(certs), server)
    assert result.outcome == Outcome.SENT, result.detail
    [got] = peer.messages
    assert got.login == USER
    assert got.tls is (mode != "plain")
    text = our_log_text(caplog) + repr(result)
    assert all(form not in text for form in secret_forms(PASSWORD))


@pytest.mark.parametrize("provider_kind", ["sync", "async"])
async def test_xoauth2_with_a_token_from_the_provider(
    provider_kind: str, peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("starttls", user=USER, oauth_token=TOKEN)
    server = peer.server(auth={"type": "oauth2", "provider": "google", "clientId": "desk-app",
                               "username": USER})
    seen: list[str] = []

    def sync_provider(s: OutgoingServer) -> str:
        seen.append(s.metadata.name)
        return TOKEN

    async def async_provider(s: OutgoingServer) -> str:
        return sync_provider(s)

    provider = sync_provider if provider_kind == "sync" else async_provider
    result = await send_once(transport(certs, token_provider=provider), server)
    assert result.outcome == Outcome.SENT, result.detail
    assert seen == ["peer"]
    assert peer.messages[0].login == USER


async def test_rejected_token_is_a_permanent_auth_failure_and_stays_secret(
    peer_factory: PeerFactory, certs: PeerCerts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    peer = peer_factory("starttls", user=USER, oauth_token=TOKEN)
    server = peer.server(auth={"type": "oauth2", "provider": "google", "clientId": "desk-app",
                               "username": USER})
    stale = "ya29.expired-token-value"
    result = await send_once(transport(certs, token_provider=lambda s: stale), server)
    assert (result.outcome, result.failure) == (Outcome.PERMANENT, Failure.AUTH)
    assert "authentication failed" in result.detail
    text = our_log_text(caplog) + repr(result)
    assert stale not in text and base64.b64encode(stale.encode()).decode() not in text


@pytest.mark.parametrize(("permanent", "expected"),
                         [(True, Outcome.PERMANENT), (False, Outcome.TRANSIENT)])
async def test_token_provider_failure(
    permanent: bool, expected: Outcome, peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("starttls", user=USER, oauth_token=TOKEN)
    server = peer.server(auth={"type": "oauth2", "provider": "google", "clientId": "desk-app"})

    async def provider(s: OutgoingServer) -> str:
        raise TokenError("refresh token revoked; run reconcile auth login", permanent=permanent)

    result = await send_once(transport(certs, token_provider=provider), server)
    assert (result.outcome, result.failure) == (expected, Failure.AUTH)
    assert "no access token: refresh token revoked" in result.detail


async def test_oauth_server_without_token_provider_is_a_config_error(
    peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("starttls", user=USER, oauth_token=TOKEN)
    server = peer.server(auth={"type": "oauth2", "provider": "google", "clientId": "desk-app"})
    result = await send_once(transport(certs), server)
    assert (result.outcome, result.failure) == (Outcome.PERMANENT, Failure.CONFIG)
    assert "token provider" in result.detail


async def test_wrong_password_is_permanent_authentication_failure_without_leaking(
    peer_factory: PeerFactory, certs: PeerCerts, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(PASSWORD_ENV, WRONG)
    peer = peer_factory("starttls", user=USER, password=PASSWORD)
    server = peer.server(auth=basic_auth(), debug=True)
    t = transport(certs)
    result = await send_once(t, server)
    assert (result.outcome, result.failure) == (Outcome.PERMANENT, Failure.AUTH)
    assert result.detail.startswith(f"authentication failed for {USER}: 535")
    assert all(r.outcome == Outcome.PERMANENT for r in result.recipients)
    assert peer.messages == []
    health = await t.probe(server)
    assert (health.status, health.step, health.failure) == (
        HealthStatus.UNREACHABLE, "auth", Failure.AUTH)
    text = our_log_text(caplog) + repr(result) + repr(health)
    assert all(form not in text for form in secret_forms(WRONG))


async def test_unset_password_variable_is_a_config_error(
    peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("starttls", user=USER, password=PASSWORD)
    server = peer.server(auth=basic_auth(password_env="DISPATCH_TEST_UNSET_VARIABLE"))
    result = await send_once(transport(certs), server)
    assert (result.outcome, result.failure) == (Outcome.PERMANENT, Failure.CONFIG)
    assert "DISPATCH_TEST_UNSET_VARIABLE is not set" in result.detail


async def test_auth_not_offered_before_tls_says_so(
    peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("plain", user=USER, password=PASSWORD, auth_require_tls=True)
    result = await send_once(transport(certs), peer.server(auth=basic_auth()))
    assert (result.outcome, result.failure) == (Outcome.PERMANENT, Failure.CONFIG)
    assert "unencrypted connection" in result.detail


# -- certificates --------------------------------------------------------------


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_certificate_from_an_untrusted_ca_fails_verification(
    mode: str, peer_factory: PeerFactory, stranger_certs: PeerCerts
) -> None:
    peer = peer_factory(mode)
    result = await send_once(transport(stranger_certs), peer.server())
    assert (result.outcome, result.failure) == (Outcome.PERMANENT, Failure.TLS_VERIFY)
    assert "not trusted" in result.detail
    assert peer.messages == []


async def test_system_trust_store_does_not_know_the_private_ca(peer_factory: PeerFactory) -> None:
    peer = peer_factory("tls")
    result = await send_once(transport(None), peer.server())
    assert result.failure == Failure.TLS_VERIFY


async def test_ca_bundle_from_the_environment(
    peer_factory: PeerFactory, certs: PeerCerts, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CA_FILE_ENV, str(certs.ca_file))
    peer = peer_factory("tls")
    result = await send_once(transport(None), peer.server())
    assert result.outcome == Outcome.SENT, result.detail


async def test_tls_against_a_plain_port_is_a_handshake_failure(
    peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("plain")
    result = await send_once(transport(certs), peer.server(security="tls"))
    assert (result.outcome, result.failure) == (Outcome.PERMANENT, Failure.TLS)
    assert "check that security tls matches" in result.detail


async def test_starttls_required_but_not_offered(
    peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("plain")
    result = await send_once(transport(certs), peer.server(security="starttls"))
    assert (result.outcome, result.failure) == (Outcome.PERMANENT, Failure.TLS)
    assert "does not offer STARTTLS" in result.detail


# -- classification ------------------------------------------------------------


async def test_4xx_for_the_transaction_is_transient(
    peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("plain")
    peer.handler.mail_reply = "451 4.3.0 Try again later"
    result = await send_once(transport(certs), peer.server())
    assert (result.outcome, result.failure) == (Outcome.TRANSIENT, Failure.REJECTED)
    assert "451 4.3.0 Try again later" in result.detail
    assert "may have accepted" not in result.detail
    assert [(r.outcome, r.code) for r in result.recipients] == [(Outcome.TRANSIENT, 451)]


async def test_5xx_after_data_is_permanent(peer_factory: PeerFactory, certs: PeerCerts) -> None:
    peer = peer_factory("plain")
    peer.handler.data_reply = "554 5.7.1 Message rejected as spam"
    result = await send_once(transport(certs), peer.server())
    assert (result.outcome, result.failure) == (Outcome.PERMANENT, Failure.REJECTED)
    assert "while sending DATA" in result.detail and "may have accepted" not in result.detail
    assert [(r.outcome, r.code) for r in result.recipients] == [(Outcome.PERMANENT, 554)]


async def test_partial_refusal_is_reported_per_recipient(
    peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("plain")
    peer.handler.recipient_replies = {"gone@corp.example": "550 5.1.1 No such user",
                                      "full@corp.example": "452 4.2.2 Mailbox full"}
    result = await send_once(transport(certs), peer.server(),
                             to=["jane@corp.example", "gone@corp.example"],
                             cc=["full@corp.example"])
    assert result.outcome == Outcome.SENT
    assert result.detail == "accepted for 1 of 3 recipients"
    by = {r.address: r for r in result.recipients}
    assert (by["jane@corp.example"].outcome, by["jane@corp.example"].code) == (Outcome.SENT, 250)
    assert (by["gone@corp.example"].outcome, by["gone@corp.example"].code) == (
        Outcome.PERMANENT, 550)
    assert "No such user" in by["gone@corp.example"].reason
    assert (by["full@corp.example"].outcome, by["full@corp.example"].code) == (
        Outcome.TRANSIENT, 452)
    assert peer.messages[0].rcpt_tos == ["jane@corp.example"]


@pytest.mark.parametrize(
    ("replies", "expected"),
    [
        ({"a@corp.example": "550 5.1.1 unknown", "b@corp.example": "553 5.1.3 bad"},
         Outcome.PERMANENT),
        ({"a@corp.example": "550 5.1.1 unknown", "b@corp.example": "450 4.2.1 busy"},
         Outcome.TRANSIENT),
    ],
)
async def test_every_recipient_refused(
    replies: dict[str, str], expected: Outcome, peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("plain")
    peer.handler.recipient_replies = replies
    result = await send_once(transport(certs), peer.server(),
                             to=["a@corp.example", "b@corp.example"])
    assert (result.outcome, result.failure) == (expected, Failure.RECIPIENTS)
    assert sorted(r.code or 0 for r in result.recipients) == sorted(
        int(v[:3]) for v in replies.values())
    assert peer.messages == []


async def test_421_closes_the_connection_and_the_next_send_reconnects(
    peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("plain")
    server = peer.server()
    t = transport(certs)
    peer.handler.mail_reply = "421 4.3.2 Service shutting down"
    first = await t.send(envelope_for(server), server)
    peer.handler.mail_reply = None
    second = await t.send(envelope_for(server), server)
    await t.aclose()
    assert first.outcome == Outcome.TRANSIENT and second.outcome == Outcome.SENT
    assert peer.connections == 2


async def test_other_protocols_and_empty_envelopes(
    peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("plain")
    server = peer.server()
    t = transport(certs)
    graph = peer.server(protocol="graph", host=None)
    assert (await t.send(envelope_for(server), graph)).failure == Failure.CONFIG
    empty = replace(envelope_for(server), to=(), cc=(), bcc=())
    assert (await t.send(empty, server)).outcome == Outcome.IGNORED
    assert peer.connections == 0


# -- pool ----------------------------------------------------------------------


async def test_one_connection_serves_several_sends(
    peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("starttls", user=USER, password=PASSWORD)
    server = peer.server(auth=basic_auth())
    t = transport(certs)
    results = [await t.send(envelope_for(server), server) for _ in range(3)]
    stats = t.pool_stats()[f"{HOST}:{peer.port}"]
    await t.aclose()
    assert [r.outcome for r in results] == [Outcome.SENT] * 3
    assert peer.connections == 1
    assert (stats.opened, stats.reused) == (1, 2)


async def test_concurrent_sends_stay_within_max_concurrency(
    peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("plain")
    server = peer.server(maxConcurrency=2)
    t = transport(certs)
    results = await asyncio.gather(*(t.send(envelope_for(server), server) for _ in range(6)))
    await t.aclose()
    assert [r.outcome for r in results] == [Outcome.SENT] * 6
    assert len(peer.messages) == 6
    assert 1 <= peer.connections <= 2


async def test_connection_closed_by_the_server_is_replaced_transparently(
    peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("plain")
    server = peer.server()
    t = transport(certs)
    first = await t.send(envelope_for(server), server)
    peer.drop_connections()  # what an idle timeout on the server does
    second = await t.send(envelope_for(server), server)
    stats = t.pool_stats()[f"{HOST}:{peer.port}"]
    await t.aclose()
    assert (first.outcome, second.outcome) == (Outcome.SENT, Outcome.SENT)
    assert peer.connections == 2
    assert (stats.opened, stats.discarded) == (2, 1)


async def test_a_connection_used_a_moment_ago_is_reused_without_a_liveness_check(
    peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("plain")
    server = peer.server()
    t = transport(certs)
    for _ in range(3):
        assert (await t.send(envelope_for(server), server)).outcome == Outcome.SENT
    assert peer.handler.noops == 0  # no round trip per message under load
    await asyncio.sleep(1.2)  # idle past the pool's one-second window
    assert (await t.send(envelope_for(server), server)).outcome == Outcome.SENT
    await t.aclose()
    assert peer.handler.noops == 1  # an idle connection is checked before it is trusted
    assert peer.connections == 1


async def test_connections_older_than_the_maximum_age_are_retired(
    peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("plain")
    server = peer.server()
    t = transport(certs, max_connection_age=0)
    for _ in range(2):
        assert (await t.send(envelope_for(server), server)).outcome == Outcome.SENT
    await t.aclose()
    assert peer.connections == 2


async def test_servers_with_different_accounts_do_not_share_connections(
    peer_factory: PeerFactory, certs: PeerCerts, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPATCH_TEST_OTHER_PASSWORD", PASSWORD)
    peer = peer_factory("starttls", user=USER, password=PASSWORD)
    one = peer.server("one", auth=basic_auth())
    two = peer.server("two", auth=basic_auth(password_env="DISPATCH_TEST_OTHER_PASSWORD"))
    t = transport(certs)
    for server in (one, two, one, two):
        assert (await t.send(envelope_for(server), server)).outcome == Outcome.SENT
    await t.aclose()
    assert peer.connections == 2


# -- deadline ------------------------------------------------------------------


async def test_deadline_when_the_server_never_greets(certs: PeerCerts) -> None:
    with HangingListener() as hang:
        result = await send_once(transport(certs), server_spec(hang.port, timeoutSeconds=0.3))
    assert (result.outcome, result.failure) == (Outcome.TRANSIENT, Failure.TIMEOUT)
    assert str(hang.port) in result.detail


async def test_a_silent_main_host_leaves_time_to_fail_over(
    peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    alternate = peer_factory("plain")
    with HangingListener() as hang:
        server = server_spec(hang.port, timeoutSeconds=1, alternateHost=HOST,
                             alternatePort=alternate.port)
        t = transport(certs)
        result = await send_once(t, server)
    assert result.outcome == Outcome.SENT and result.used_alternate, result.detail
    assert "timed out connecting" in result.detail
    assert t.selector.is_down(HOST, hang.port)


async def test_deadline_covers_the_whole_transaction(
    peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory("plain")
    peer.handler.hang_on_data = True
    result = await send_once(transport(certs), peer.server(timeoutSeconds=0.5))
    assert (result.outcome, result.failure) == (Outcome.TRANSIENT, Failure.TIMEOUT)
    assert "deadline of 0.5s exceeded while sending DATA" in result.detail
    assert "may have accepted" in result.detail


# -- failover ------------------------------------------------------------------


async def test_failover_to_the_alternate_host_and_back_after_mark_healthy(
    peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    alternate = peer_factory("plain")
    main_port = free_port()  # nothing listens here yet: connection refused
    server = alternate.server(port=main_port, alternateHost=HOST, alternatePort=alternate.port)
    t = transport(certs)

    first = await t.send(envelope_for(server), server)
    assert first.outcome == Outcome.SENT, first.detail
    assert first.used_alternate and first.host == f"{HOST}:{alternate.port}"
    assert f"after failing over from {HOST}:{main_port}" in first.detail
    assert t.selector.is_down(HOST, main_port)

    main = peer_factory("plain", port=main_port)  # the main host comes back...
    second = await t.send(envelope_for(server), server)
    assert second.used_alternate and main.messages == []  # ...but nobody has said so yet

    t.selector.mark_healthy(HOST, main_port)  # what the health monitor will do
    third = await t.send(envelope_for(server), server)
    await t.aclose()
    assert third.outcome == Outcome.SENT and not third.used_alternate
    assert third.host == f"{HOST}:{main_port}"
    assert len(main.messages) == 1 and len(alternate.messages) == 2


async def test_both_hosts_unreachable_is_transient_and_names_both(certs: PeerCerts) -> None:
    main_port, alt_port = free_port(), free_port()
    spec = server_spec(main_port, alternateHost=HOST, alternatePort=alt_port)
    result = await send_once(transport(certs), spec)
    assert (result.outcome, result.failure) == (Outcome.TRANSIENT, Failure.CONNECT)
    assert f"{HOST}:{main_port}" in result.detail and f"{HOST}:{alt_port}" in result.detail


async def test_auth_failure_does_not_fail_over(peer_factory: PeerFactory, certs: PeerCerts,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, WRONG)
    main = peer_factory("starttls", user=USER, password=PASSWORD)
    alternate = peer_factory("starttls", user=USER, password=WRONG)
    server = main.server(auth=basic_auth(), alternateHost=HOST, alternatePort=alternate.port)
    result = await send_once(transport(certs), server)
    assert result.failure == Failure.AUTH and not result.used_alternate
    assert alternate.connections == 0


# -- probe ---------------------------------------------------------------------


async def test_probe_reports_reachable_and_the_failing_step(
    peer_factory: PeerFactory, certs: PeerCerts, stranger_certs: PeerCerts
) -> None:
    peer = peer_factory("tls", user=USER, password=PASSWORD)
    server = peer.server(auth=basic_auth())
    ok = await transport(certs).probe(server)
    assert ok.reachable and ok.host == f"{HOST}:{peer.port}"
    untrusted = await transport(stranger_certs).probe(server)
    assert (untrusted.status, untrusted.step, untrusted.failure) == (
        HealthStatus.UNREACHABLE, "tls", Failure.TLS_VERIFY)
    closed = await transport(certs).probe(peer.server(port=free_port()))
    assert (closed.status, closed.step) == (HealthStatus.UNREACHABLE, "connect")
    assert peer.messages == []
