"""The EWS incoming connection check (SPEC I9) against the EWS peer: every step, read-only;
a refused password at AUTH, a missing folder at Folder, a closed port at TCP; through
a proxy the proxy step replaces TCP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from peers.connect_proxy import ConnectProxy
from peers.dovecot import sample_mail
from peers.ews_server import EwsPeer, ews_incoming
from peers.smtp import HOST, PeerCerts, free_port

from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.health.probes import probe_incoming
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.steps import Step

from .test_fetcher import PASSWORD, PASSWORD_ENV, USER, basic

PLAN = (Step.DNS, Step.TCP, Step.TLS, Step.AUTH, Step.FOLDER, Step.COUNT, Step.SAMPLE)


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


@pytest.fixture
def ews(certs: PeerCerts) -> Iterator[EwsPeer]:
    with EwsPeer(certs, user=USER, password=PASSWORD) as peer:
        yield peer


def details(report: object) -> dict[Step, str]:
    return {r.step: r.detail for r in report.results}  # type: ignore[attr-defined]


async def test_every_step_passes_and_nothing_is_marked_read(ews: EwsPeer,
                                                            certs: PeerCerts) -> None:
    ews.deliver(sample_mail(1), read=True)
    ews.deliver(sample_mail(2))
    report = await probe_incoming(ews.incoming(auth=basic()), ProbeOptions(ca_file=certs.ca_file))
    assert report.ok, report.error
    assert report.plan == PLAN
    said = details(report)
    assert said[Step.AUTH].startswith(f"logged in as {USER} (basic); GetFolder")
    assert said[Step.FOLDER] == "INBOX found"
    assert said[Step.COUNT] == "2 message(s), 1 unread (the daemon fetches unread mail)"
    assert said[Step.SAMPLE].startswith("newest message: From customer@example.test; "
                                        "Subject Request 2; Date ")
    assert [i.is_read for i in ews.items()] == [True, False]
    assert PASSWORD not in " ".join(said.values())


async def test_a_wrong_password_fails_at_auth(ews: EwsPeer, certs: PeerCerts,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "Wr0ng-PLANTED-pass")
    report = await probe_incoming(ews.incoming(auth=basic()), ProbeOptions(ca_file=certs.ca_file))
    failed = report.failed
    assert failed is not None and failed.step == Step.AUTH and failed.code == 401
    assert USER in failed.detail and failed.fix
    assert report.not_run == (Step.FOLDER, Step.COUNT, Step.SAMPLE)
    assert "Wr0ng-PLANTED-pass" not in failed.detail + failed.fix


async def test_a_missing_folder_fails_at_folder(ews: EwsPeer, certs: PeerCerts) -> None:
    ews.add_folder("Support", parent="inbox")
    report = await probe_incoming(ews.incoming(auth=basic(), folder="Inbox/Tickets"),
                                  ProbeOptions(ca_file=certs.ca_file))
    failed = report.failed
    assert failed is not None and failed.step == Step.FOLDER
    assert "; the mailbox has: " in failed.detail and "Inbox/Support" in failed.detail
    assert "has no folder Inbox/Tickets" in failed.detail
    assert failed.fix.startswith("Check folder in the incoming server spec")


async def test_a_closed_port_fails_at_tcp(certs: PeerCerts) -> None:
    port = free_port()
    server = ews_incoming(f"https://{HOST}:{port}/EWS/Exchange.asmx", auth=basic())
    report = await probe_incoming(server, ProbeOptions(ca_file=certs.ca_file))
    assert [(r.step, r.ok) for r in report.results] == [(Step.DNS, True), (Step.TCP, False)]
    assert f"connection refused by {HOST}:{port}" in report.results[1].detail


async def test_through_the_named_proxy_the_proxy_step_replaces_tcp(
        ews: EwsPeer, certs: PeerCerts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EWS_PROXY_PASSWORD", "proxy-Secret-planted")
    proxy = ConnectProxy()
    spec = ProxyServerSpec.model_validate({
        "type": "http", "host": "127.0.0.1", "port": proxy.port, "username": "relay",
        "password": {"secretRef": "env:EWS_PROXY_PASSWORD"}})
    try:
        report = await probe_incoming(
            ews.incoming(auth=basic(), proxy="corp-proxy"),
            ProbeOptions(ca_file=certs.ca_file, proxy_lookup=lambda server: spec))
    finally:
        proxy.close()
    assert report.ok, report.error
    assert [r.step for r in report.results][:3] == [Step.DNS, Step.PROXY, Step.TLS]
    assert set(proxy.tunnels) == {f"localhost:{ews.port}"}  # the check's and the fetcher's
    assert "proxy-Secret-planted" not in " ".join(r.detail for r in report.results)
