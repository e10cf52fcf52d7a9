"""IMAP and POP3 fetchers through a real proxy (pproxy: HTTP CONNECT and SOCKS5 with a
login) against Dovecot, implicit TLS and STARTTLS verified against the mail host."""

from __future__ import annotations

from typing import Any

import pytest
from peers.dovecot import DovecotInstance, MailUser, sample_mail
from peers.pproxy_peer import ProxyPeer
from peers.smtp import PeerCerts

from mail.fetch_kit import (
    PORTS,
    connect_error,
    fetch_all,
    fetch_env,  # noqa: F401  (autouse: password env, no CA env)
    incoming_server,
)
from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.mail.fetcher import FetchErrorKind
from reconciler.mail.registry import fetcher_for
from reconciler.mail.steps import Reason, Step


def _lookup(spec: dict[str, Any]) -> Any:
    proxy = ProxyServerSpec.model_validate(spec)
    return lambda server: proxy


@pytest.mark.parametrize(("protocol", "kind", "starttls"), [
    ("imaps", "socks5", False), ("imap", "http", True),
    ("pop3s", "http", False), ("pop3", "socks5", True)])
async def test_mail_is_fetched_through_the_proxy(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts, proxy_peer: ProxyPeer,
        proxy_password: str, protocol: str, kind: str, starttls: bool) -> None:
    dovecot.deliver(mailbox, sample_mail(1))
    since = len(proxy_peer.lines)
    server = incoming_server(dovecot, mailbox, protocol, host="localhost", proxy="corp-proxy",
                             **({"starttls": True} if starttls else {}))
    async with fetcher_for(server, ca_file=certs.ca_file,
                           proxy_lookup=_lookup(proxy_peer.spec(kind))) as fetcher:
        assert len(await fetch_all(fetcher)) == 1
    port = getattr(dovecot, PORTS[protocol])
    assert proxy_peer.tunnelled(f"localhost:{port}", since=since)[0].startswith(kind)


async def test_wrong_proxy_credentials_name_the_proxy_step(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts, proxy_peer: ProxyPeer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_TEST_PASSWORD", "not-the-proxy-password")
    server = incoming_server(dovecot, mailbox, "imaps", proxy="corp-proxy")
    error = await connect_error(fetcher_for(server, ca_file=certs.ca_file,
                                            proxy_lookup=_lookup(proxy_peer.spec("http"))))
    assert error.step == Step.PROXY and error.reason == Reason.PROXY_AUTH
    assert error.kind == FetchErrorKind.AUTH
    assert f"proxy 127.0.0.1:{proxy_peer.port} refused the login" in error.message
    assert "ProxyServer's username" in error.likely_fix
    assert "not-the-proxy-password" not in error.user_text
