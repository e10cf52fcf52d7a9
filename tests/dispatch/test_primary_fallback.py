"""The namespace's primary as fallback for a rule's unreachable server (SPEC O15) and the
namespace default recipient filter (O16), with real SMTP peers, the real health monitor
and real stores."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from daemon.app_kit import (
    audit_of,
    commit,
    cond,
    enqueue,
    note,
    recipient_filter,
    resource,
    rule,
    running_worker,
    sent,
    smtp_server,
)
from health.kit import monitor_for
from peers.smtp import SmtpPeer, free_port

from reconciler.config.desired import CanonicalResource
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.runtime.fallback import Reachability, primary_fallback
from reconciler.runtime.namespace import NamespaceConfig, resource_from_canonical
from reconciler.state import SqlStore
from reconciler.state.base import AuditStatus

PeerFactory = Callable[..., SmtpPeer]
FAST_RETRY = {"initialBackoffSeconds": 0.05, "maxBackoffSeconds": 0.1, "maxAttempts": 100,
              "lifetimeMinutes": 60}


def mail_settings(**spec: Any) -> CanonicalResource:
    return resource("MailSettings", "settings", {"retry": FAST_RETRY, **spec})


async def test_mail_for_an_unreachable_rule_server_goes_through_the_primary_after_the_delay(
    store: SqlStore, store_url: str, peer_factory: PeerFactory
) -> None:
    main = peer_factory("plain")
    commit(store, smtp_server("main", main.port, primary=True),
           smtp_server("hr", free_port()),  # nothing listens: both health and sends fail
           rule("hr-requests", 10, "hr", cond("department", "HR")),
           mail_settings(primaryFallbackAfterSeconds=0.5))
    monitor = monitor_for(store, store_url)
    stop = asyncio.Event()
    checks = asyncio.create_task(monitor.run(stop))
    try:
        async with running_worker(store, reachability=monitor.reachability):
            outbox_id = enqueue(store, note("jane@corp.example", context={"department": "HR"}))
            await sent(store, outbox_id)
    finally:
        stop.set()
        await checks
    rows = audit_of(store, outbox_id)
    done = rows[-1]
    assert (done.status, done.server, done.recipient) == (
        AuditStatus.SENT, "main", "jane@corp.example")
    assert done.details is not None
    fallback = done.details["fallback"]
    assert (fallback["from"], fallback["to"]) == ("hr", "main")
    # Not before the server had been down for the delay.
    assert done.created_at is not None
    down = datetime.fromisoformat(fallback["unreachableSince"])
    assert done.created_at - down >= timedelta(seconds=0.5)
    assert all(r.server == "hr" for r in rows if r.status == AuditStatus.RETRYING)
    [got] = main.messages
    assert got.rcpt_tos == ["jane@corp.example"]


def _namespace(delay: float) -> tuple[NamespaceConfig, OutgoingServer, OutgoingServer]:
    found = [smtp_server("main", 2525, primary=True), smtp_server("hr", 2526),
             mail_settings(primaryFallbackAfterSeconds=delay)]
    ns = NamespaceConfig.from_resources("default", [resource_from_canonical(r) for r in found])
    return ns, ns.servers["hr"], ns.servers["main"]


def test_the_fallback_waits_for_the_delay_and_needs_a_primary_that_is_up() -> None:
    ns, hr, main = _namespace(300)
    since = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    health = Reachability()
    assert primary_fallback(ns, hr, health, since + timedelta(hours=1)) is None  # hr is up
    health.replace({("default", "hr"): since})
    assert primary_fallback(ns, hr, health, since + timedelta(seconds=299)) is None
    found = primary_fallback(ns, hr, health, since + timedelta(seconds=300))
    assert found is not None and found.primary is main
    assert "sent through the primary main" in found.reason
    assert primary_fallback(ns, main, Reachability(), since) is None  # the primary itself
    health.replace({("default", "hr"): since, ("default", "main"): since})
    assert primary_fallback(ns, hr, health, since + timedelta(hours=1)) is None
    off, hr_off, _ = _namespace(0)
    health.replace({("default", "hr"): since})
    assert primary_fallback(off, hr_off, health, since + timedelta(days=1)) is None


async def test_the_namespace_default_filter_applies_to_servers_without_their_own(
    store: SqlStore, peer_factory: PeerFactory
) -> None:
    main, hr = peer_factory("plain"), peer_factory("plain")
    commit(store, smtp_server("main", main.port, primary=True, recipientFilter="only-lists"),
           smtp_server("hr", hr.port),
           rule("hr-requests", 10, "hr", cond("department", "HR")),
           recipient_filter("no-partners", "ignore", domains=["partner.example"]),
           recipient_filter("only-lists", "ignore", domains=["lists.corp.example"]),
           mail_settings(recipientFilter="no-partners"))
    async with running_worker(store):
        to_hr = enqueue(store, note("jane@corp.example", "bob@partner.example",
                                    context={"department": "HR"}))
        to_main = enqueue(store, note("ann@partner.example", context={"department": "IT"}))
        await sent(store, to_hr)
        await sent(store, to_main)
    rows = {r.recipient: r for r in audit_of(store, to_hr)}
    bob = rows["bob@partner.example"]
    assert bob.status == AuditStatus.SEND_IGNORED and bob.server == "hr"
    assert bob.details is not None and bob.details["filter"] == "no-partners"
    assert [m.rcpt_tos for m in hr.messages] == [["jane@corp.example"]]
    # A server naming its own filter keeps it: the default does not add to it.
    assert [m.rcpt_tos for m in main.messages] == [["ann@partner.example"]]
