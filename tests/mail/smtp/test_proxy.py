"""SMTP through a real proxy (pproxy on loopback, HTTP CONNECT and SOCKS5 with a login):
the transport, the connection check and their failures name the proxy step."""

from __future__ import annotations

from typing import Any

import pytest
from dispatch.kit import USER, basic_auth
from peers.pproxy_peer import ProxyPeer
from peers.smtp import HOST, PeerCerts, SmtpPeer, free_port

from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.health.probes import probe_server
from reconciler.mail.outcome import Failure, Outcome
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.smtp.transport import SmtpTransport
from reconciler.mail.steps import Reason, Step

from .test_transport import PASSWORD, PeerFactory, envelope_for


def _lookup(spec: dict[str, Any]) -> Any:
    proxy = ProxyServerSpec.model_validate(spec)
    return lambda server: proxy


@pytest.mark.parametrize(("kind", "mode"), [("http", "starttls"), ("socks5", "tls")])
async def test_mail_goes_through_the_proxy_with_tls_verified_against_the_mail_host(
        peer_factory: PeerFactory, certs: PeerCerts, proxy_peer: ProxyPeer,
        proxy_password: str, kind: str, mode: str) -> None:
    peer: SmtpPeer = peer_factory(mode, user=USER, password=PASSWORD)
    # "localhost": the proxy resolves it, and the certificate is checked for that name.
    server = peer.server(proxy="corp-proxy", host="localhost", auth=basic_auth())
    transport = SmtpTransport(ca_file=certs.ca_file, local_hostname="client.test",
                              proxy_lookup=_lookup(proxy_peer.spec(kind)))
    try:
        result = await transport.send(envelope_for(server), server)
    finally:
        await transport.aclose()
    assert result.outcome == Outcome.SENT, result.detail
    assert len(peer.messages) == 1
    assert proxy_peer.tunnelled(f"localhost:{peer.port}")[0].startswith(kind)


async def test_the_check_walks_the_proxy_step_instead_of_tcp(
        peer_factory: PeerFactory, certs: PeerCerts, proxy_peer: ProxyPeer,
        proxy_password: str) -> None:
    peer = peer_factory("starttls", user=USER, password=PASSWORD)
    server = peer.server(proxy="corp-proxy", auth=basic_auth())
    options = ProbeOptions(ca_file=certs.ca_file, local_hostname="client.test",
                           proxy_lookup=_lookup(proxy_peer.spec("socks5")))
    report = await probe_server(server, options=options)
    assert report.ok, report.error
    assert report.plan[:3] == (Step.DNS, Step.PROXY, Step.GREETING)
    proxy_step = report.results[1]
    assert f"{HOST}:{peer.port} through the socks5 proxy {HOST}:{proxy_peer.port}" \
        in proxy_step.detail


@pytest.mark.parametrize("kind", ["http", "socks5"])
async def test_a_wrong_proxy_password_fails_at_the_proxy_step(
        peer_factory: PeerFactory, certs: PeerCerts, proxy_peer: ProxyPeer,
        monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    monkeypatch.setenv("PROXY_TEST_PASSWORD", "not-the-proxy-password")
    peer = peer_factory("starttls")
    server = peer.server(proxy="corp-proxy")
    options = ProbeOptions(ca_file=certs.ca_file, local_hostname="client.test",
                           proxy_lookup=_lookup(proxy_peer.spec(kind)))
    report = await probe_server(server, options=options)
    failed = report.failed
    assert failed is not None and failed.step == Step.PROXY
    assert f"proxy {HOST}:{proxy_peer.port}" in failed.detail
    assert "not-the-proxy-password" not in failed.detail
    if kind == "http":  # a SOCKS5 peer that refuses a login may only hang up
        assert failed.reason == Reason.PROXY_AUTH and "407" in failed.detail
    assert "ProxyServer's username" in failed.fix
    transport = SmtpTransport(ca_file=certs.ca_file, proxy_lookup=options.proxy_lookup)
    try:
        result = await transport.send(envelope_for(server), server)
    finally:
        await transport.aclose()
    assert result.outcome != Outcome.SENT and not peer.messages
    assert "proxy" in result.detail


async def test_a_missing_proxy_is_refused_never_bypassed(
        peer_factory: PeerFactory, certs: PeerCerts) -> None:
    peer = peer_factory("plain")
    server = peer.server(proxy="gone")
    transport = SmtpTransport(ca_file=certs.ca_file, proxy_lookup=lambda s: None)
    try:
        result = await transport.send(envelope_for(server), server)
    finally:
        await transport.aclose()
    assert result.outcome == Outcome.PERMANENT and result.failure == Failure.CONFIG
    assert "ProxyServer gone" in result.detail and not peer.messages


async def test_a_proxy_nobody_listens_on_is_named_at_the_proxy_step(
        peer_factory: PeerFactory, certs: PeerCerts) -> None:
    peer = peer_factory("plain")
    port = free_port()
    options = ProbeOptions(ca_file=certs.ca_file, local_hostname="client.test",
                           proxy_lookup=_lookup({"type": "http", "host": HOST, "port": port}))
    report = await probe_server(peer.server(proxy="corp-proxy"), options=options)
    failed = report.failed
    assert failed is not None and failed.step == Step.PROXY and failed.reason == Reason.REFUSED
    assert f"cannot reach the http proxy {HOST}:{port}" in failed.detail
    assert "ProxyServer's host and port" in failed.fix
