"""The EWS connection check (O9, O10) against a real EWS endpoint: each step passes, or
fails with the right reason and a likely fix that speaks of Exchange; secrets never show."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from health.kit import PASSWORD, USER, WRONG, WRONG_ENV, assert_no_secret, basic_auth, fix, steps
from peers.ews_server import EwsPeer, ews_server
from peers.smtp import PeerCerts, free_port

from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.health.probes import probe_server, send_test_message
from reconciler.mail.outcome import Failure
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.steps import ProbeReport, Reason, Step

TOKEN = "eyJ0.health-ews-token-not-for-logs"


@pytest.fixture
def ews(certs: PeerCerts) -> Iterator[EwsPeer]:
    with EwsPeer(certs, user=USER, password=PASSWORD, tokens={TOKEN}) as peer:
        yield peer


def options(certs: PeerCerts | None, **kw: Any) -> ProbeOptions:
    kw.setdefault("timeout", 5.0)
    return ProbeOptions(ca_file=certs.ca_file if certs else None, **kw)


async def probe(server: OutgoingServer, certs: PeerCerts | None, **kw: Any) -> ProbeReport:
    alternate = kw.pop("alternate", False)
    return await probe_server(server, alternate=alternate, options=options(certs, **kw))


OAUTH = {"type": "oauth2", "provider": "microsoft", "clientId": "app-1", "tenant": "corp.example"}


async def test_basic_auth_walks_dns_tcp_tls_and_the_api_call(ews: EwsPeer,
                                                              certs: PeerCerts) -> None:
    report = await probe(ews.server(auth=basic_auth()), certs)
    assert report.ok, report.error
    assert steps(report) == [(Step.DNS, True), (Step.TCP, True), (Step.TLS, True),
                             (Step.API, True)]
    api = report.results[-1].detail
    assert "GetFolder" in api and "helpdesk@desk.example" in api and "2019" in api
    assert ews.sent == []


async def test_oauth_adds_the_token_step(ews: EwsPeer, certs: PeerCerts) -> None:
    report = await probe(ews.server(auth=OAUTH), certs, token_provider=lambda s: TOKEN)
    assert report.ok, report.error
    assert [s for s, _ in steps(report)] == [Step.DNS, Step.TCP, Step.TLS, Step.TOKEN, Step.API]
    assert {r.auth for r in ews.requests if r.operation == "GetFolder"} == {"bearer"}


async def test_wrong_password_fails_the_api_step_with_an_exchange_fix(
        ews: EwsPeer, certs: PeerCerts, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(WRONG_ENV, WRONG)
    caplog.set_level(logging.DEBUG)
    server = ews.server(auth=basic_auth(WRONG_ENV))
    report = await probe(server, certs)

    failed = report.failed
    assert failed is not None
    assert (failed.step, failed.reason, failed.failure, failed.code) == (
        Step.API, Reason.AUTH_FAILED, Failure.AUTH, 401)
    hint = fix(report, server)
    assert f"login for {USER}" in hint and "NTLM" in hint
    texts = [r.detail for r in report.results] + [hint, caplog.text]
    assert_no_secret(texts, WRONG)
    assert base64.b64encode(f"{USER}:{WRONG}".encode()).decode() not in "\n".join(texts)


async def test_exchange_online_basic_auth_hint_says_it_is_switched_off(
        ews: EwsPeer, certs: PeerCerts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WRONG_ENV, WRONG)
    probed = ews.server(auth=basic_auth(WRONG_ENV))
    report = await probe(probed, certs)
    # The same failure, for a server configured against Exchange Online.
    online = ews.server(auth=basic_auth(WRONG_ENV), host="outlook.office365.com",
                        ewsUrl="https://outlook.office365.com/EWS/Exchange.asmx", port=443)
    hint = fix(report, online)
    assert "switched Basic authentication off" in hint and "graph" in hint


async def test_impersonation_refused_is_a_permission_problem(ews: EwsPeer,
                                                             certs: PeerCerts) -> None:
    ews.deny_impersonation()
    server = ews.server(auth={**OAUTH, "grant": "clientCredentials"},
                        mailbox="servicedesk@desk.example")
    report = await probe(server, certs, token_provider=lambda s: TOKEN)

    failed = report.failed
    assert failed is not None
    assert (failed.step, failed.reason) == (Step.API, Reason.PERMISSION)
    assert "ErrorImpersonateUserDenied" in failed.detail
    assert "full_access_as_app" in fix(report, server)


async def test_busy_server_is_temporary(ews: EwsPeer, certs: PeerCerts) -> None:
    ews.fail_next("ConvertId", "http503")
    server = ews.server(auth=basic_auth())
    report = await probe(server, certs)

    failed = report.failed
    assert failed is not None
    assert (failed.step, failed.reason) == (Step.API, Reason.TEMPORARY)
    assert "throttles EWS" in fix(report, server)


async def test_untrusted_certificate_fails_the_tls_step(ews: EwsPeer) -> None:
    report = await probe(ews.server(auth=basic_auth()), None)
    failed = report.failed
    assert failed is not None
    assert (failed.step, failed.reason) == (Step.TLS, Reason.UNTRUSTED)


async def test_certificate_for_another_name_gets_the_exchange_hint(certs: PeerCerts) -> None:
    # Our CA, but a certificate for the Exchange server's internal name only.
    internal = PeerCerts(certs.ca, certs.ca.issue_cert("exch01.corp.internal"), certs.ca_file)
    with EwsPeer(internal, user=USER, password=PASSWORD) as peer:
        server = peer.server(auth=basic_auth())
        report = await probe(server, certs)
    failed = report.failed
    assert failed is not None
    assert (failed.step, failed.reason) == (Step.TLS, Reason.HOSTNAME_MISMATCH)
    assert "published name" in fix(report, server)


async def test_nothing_listening_fails_the_tcp_step(certs: PeerCerts) -> None:
    report = await probe(ews_server(free_port(), auth=basic_auth()), certs)
    failed = report.failed
    assert failed is not None and (failed.step, failed.reason) == (Step.TCP, Reason.REFUSED)


async def test_test_connection_sends_through_ews(ews: EwsPeer, certs: PeerCerts) -> None:
    server = ews.server(auth=basic_auth())
    result = await send_test_message(server, "jane@corp.example", options=options(certs))
    assert result.ok, result.detail
    [sent] = ews.sent
    assert [a.email for a in sent.to] == ["jane@corp.example"]
    assert sent.subject is not None and "test-connection" in sent.subject


async def test_test_connection_of_the_alternate_host_uses_its_url(ews: EwsPeer,
                                                                  certs: PeerCerts) -> None:
    closed = free_port()
    server = ews_server(closed, auth=basic_auth(), alternateHost="127.0.0.1",
                        alternatePort=ews.port)
    report = await probe(server, certs, alternate=True)
    assert report.ok, report.error
    result = await send_test_message(server, "jane@corp.example", alternate=True,
                                     options=options(certs))
    assert result.ok, result.detail
    assert len(ews.sent) == 1


async def test_a_refused_recipient_in_the_test_message(ews: EwsPeer, certs: PeerCerts) -> None:
    ews.refuse("ghost@corp.example")
    server = ews.server(auth=basic_auth())
    result = await send_test_message(server, "ghost@corp.example", options=options(certs))
    assert not result.ok and result.reason == Reason.RECIPIENT
    assert "ErrorInvalidRecipients" in result.detail
