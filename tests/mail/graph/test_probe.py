"""The Graph connection check (DNS, TCP, TLS, token, API call) and test-connection's send
step against the local Graph (tests/peers/graph_server.py), and the health monitor
recording a Graph server (SPEC O9, O10)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from health.kit import key_of, put_servers
from peers.graph_server import TOKEN, GraphPeer, graph_peers
from peers.smtp import PeerCerts
from peers.tokens import Tokens

from reconciler.health import record as rec
from reconciler.health.diagnose import likely_fix
from reconciler.health.monitor import HealthMonitor
from reconciler.health.probes import endpoint_of, probe_server, send_test_message
from reconciler.mail.failover import HostSelector
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.steps import Reason, Step
from reconciler.runtime.live_config import ConfigHolder
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.runtime.notifier import Notifier
from reconciler.runtime.settings import DaemonSettings
from reconciler.state import SqlStore

STALE = "stale-graph-probe-token-Yy71"


@pytest.fixture
def graph(certs: PeerCerts) -> Iterator[Callable[..., GraphPeer]]:
    with graph_peers(certs) as make:
        yield make


def options(certs: PeerCerts, tokens: Any = None, **kw: Any) -> ProbeOptions:
    return ProbeOptions(ca_file=certs.ca_file, token_provider=tokens or Tokens(TOKEN),
                        timeout=5.0, **kw)


async def test_every_step_passes_against_a_working_graph(graph, certs) -> None:
    peer = graph()
    server = peer.server()
    report = await probe_server(server, options=options(certs))
    assert report.ok, report.error
    assert report.plan == (Step.DNS, Step.TCP, Step.TLS, Step.TOKEN, Step.API)
    assert report.endpoint is not None and report.endpoint.port == peer.port
    tls, api = report.results[2], report.results[4]
    assert "certificate for" in tls.detail and "verified" in tls.detail
    assert "mailbox desk@corp.example readable (200" in api.detail
    assert peer.requests == [("GET", "/v1.0/users/desk@corp.example", 200)]


async def test_an_untrusted_certificate_fails_the_tls_step(graph, certs,
                                                           stranger_certs) -> None:
    peer = graph()
    server = peer.server()
    report = await probe_server(server, options=options(stranger_certs))
    failed = report.failed
    assert failed is not None and failed.step == Step.TLS
    assert failed.reason == Reason.UNTRUSTED
    assert "ca-file" in likely_fix(failed, server, endpoint_of(server)).lower()
    assert report.not_run == (Step.TOKEN, Step.API)


async def test_no_token_provider_fails_the_token_step(graph, certs) -> None:
    peer = graph()
    server = peer.server()
    report = await probe_server(server, options=ProbeOptions(ca_file=certs.ca_file,
                                                             timeout=5.0))
    failed = report.failed
    assert failed is not None and (failed.step, failed.reason) == (Step.TOKEN,
                                                                   Reason.NO_TOKEN_PROVIDER)
    assert "reconcile auth login default/graph" in likely_fix(failed, server,
                                                              endpoint_of(server))
    assert peer.requests == []


@pytest.mark.parametrize(("mailbox", "reason", "words"), [
    ("hr@corp.example", Reason.PERMISSION, "Mail.Send"),
    ("nobody@corp.example", Reason.NOT_FOUND, "spec.mailbox"),
])
async def test_api_step_says_what_is_wrong_with_the_mailbox(graph, certs, mailbox, reason,
                                                            words) -> None:
    peer = graph(mailboxes=("desk@corp.example", "hr@corp.example"),
                 forbidden=("hr@corp.example",))
    server = peer.server(mailbox=mailbox)
    report = await probe_server(server, options=options(certs))
    failed = report.failed
    assert failed is not None and (failed.step, failed.reason) == (Step.API, reason)
    assert words in likely_fix(failed, server, endpoint_of(server))


async def test_a_refused_token_is_refreshed_once_then_reported(graph, certs) -> None:
    peer = graph()
    server = peer.server()
    healed = await probe_server(server, options=options(certs, Tokens(STALE, TOKEN)))
    assert healed.ok, healed.error
    stuck_tokens = Tokens(STALE, STALE)
    stuck = await probe_server(server, options=options(certs, stuck_tokens))
    failed = stuck.failed
    assert failed is not None and (failed.step, failed.reason, failed.code) == (
        Step.API, Reason.AUTH_FAILED, 401)
    assert "InvalidAuthenticationToken" in failed.detail
    assert stuck_tokens.invalidated == [STALE]
    fix = likely_fix(failed, server, endpoint_of(server))
    assert "national cloud" in fix
    assert all(STALE not in r.detail for r in stuck.results)


async def test_test_connection_sends_through_graph(graph, certs) -> None:
    peer = graph()
    server = peer.server()
    step = await send_test_message(server, "jane@corp.example", options=options(certs))
    assert step.ok, step.detail
    assert "202 Accepted" in step.detail
    [mail] = peer.sent
    assert mail.addresses("to") == ["jane@corp.example"]
    assert mail.subject.startswith("Test message from reconcile test-connection")


async def test_test_connection_send_refused_for_permission(graph, certs) -> None:
    peer = graph()
    server = peer.server()
    peer.fail_next(403, "ErrorAccessDenied", "Access is denied.", path="sendMail")
    step = await send_test_message(server, "jane@corp.example", options=options(certs))
    assert not step.ok and step.reason == Reason.PERMISSION
    assert "Mail.Send" in likely_fix(step, server, endpoint_of(server))


async def test_the_monitor_checks_graph_servers(graph, certs, store: SqlStore,
                                                store_url: str) -> None:
    peer = graph(mailboxes=("desk@corp.example",))
    good = peer.server("m365")
    missing = peer.server("m365-typo", mailbox="nobody@corp.example")
    put_servers(store, good, missing)
    holder = ConfigHolder()
    holder.refresh(store)
    monitor = HealthMonitor(
        store, DaemonSettings(store_url=store_url, worker_id="daemon-g"), DaemonMetrics(),
        holder, HostSelector(), Notifier(None), probe_options=options(certs))
    cycle = await monitor.probe_once()
    records = {k.name: c.record for k, c in cycle.checks.items()}
    assert records["m365"] is not None and records["m365"].state == rec.REACHABLE
    broken = records["m365-typo"]
    assert broken is not None and broken.state == rec.UNREACHABLE
    assert broken.failed_step == "api" and "ErrorInvalidUser" in (broken.last_error or "")
    assert broken.hint and "spec.mailbox" in broken.hint
    assert rec.read(store.status_get(key_of(good))) is not None
