"""The health monitor checks a server through the ProxyServer it names in the live
revision (pproxy on loopback), and records a failing proxy as the proxy step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from peers.pproxy_peer import ProxyPeer
from peers.smtp import HOST, PeerCerts, SmtpPeer

from reconciler.config.models.proxy_server import ProxyServer
from reconciler.health import record as rec
from reconciler.state import SqlStore

from .kit import key_of, monitor_for, put_servers


def _proxy(spec: dict[str, Any]) -> ProxyServer:
    return ProxyServer.model_validate({
        "apiVersion": "reconciler.dev/v1", "kind": "ProxyServer",
        "metadata": {"name": "corp", "namespace": "default"}, "spec": spec})


async def test_the_probe_goes_through_the_proxy_of_the_live_revision(
        store: SqlStore, store_url: str, peer_factory: Callable[..., SmtpPeer],
        certs: PeerCerts, proxy_peer: ProxyPeer, proxy_password: str) -> None:
    peer = peer_factory("tls")
    good = peer.server("good", proxy="corp")
    broken = peer.server("broken", proxy="wrong", primary=False)
    wrong = _proxy({**proxy_peer.spec("http"), "username": "nobody"})
    put_servers(store, _proxy(proxy_peer.spec("socks5")),
                wrong.model_copy(update={"metadata": wrong.metadata.model_copy(
                    update={"name": "wrong"})}), good, broken)
    monitor = monitor_for(store, store_url, ca_file=certs.ca_file)
    await monitor.probe_once()
    ok = rec.read(store.status_get(key_of(good)))
    assert ok is not None and ok.state == rec.REACHABLE, ok
    assert proxy_peer.tunnelled(f"{HOST}:{peer.port}")[0].startswith("socks5")
    down = rec.read(store.status_get(key_of(broken)))
    assert down is not None and down.state == rec.UNREACHABLE
    assert down.failed_step == "proxy" and "refused the login" in (down.last_error or "")
