"""Notifier (O9): every transition logged; POSTed to a real local webhook receiver as
JSON, retried with backoff on transient failures, never leaking the webhook's token."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from health.kit import WebhookReceiver
from peers.smtp import free_port

from reconciler.config.desired import ResourceKey
from reconciler.runtime.notifier import FAILOVER, RECOVERED, UNREACHABLE, Notifier, Transition

KEY = ResourceKey("OutgoingServer", "acme", "gmail-notifications")
AT = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)


def down() -> Transition:
    return Transition(KEY, UNREACHABLE, "Reachable", "Unreachable", AT,
                      error="tcp: connection refused by smtp.gmail.com:587", failed_step="tcp",
                      hint="Check the port.", address="smtp.gmail.com:587")


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def our_logs(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


async def test_delivers_the_transition_as_json(webhook: WebhookReceiver,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert await Notifier(webhook.url).notify(down())
    assert webhook.received == [{
        "event": "server.unreachable",
        "kind": "OutgoingServer",
        "namespace": "acme",
        "server": "gmail-notifications",
        "oldStatus": "Reachable",
        "newStatus": "Unreachable",
        "error": "tcp: connection refused by smtp.gmail.com:587",
        "failedStep": "tcp",
        "hint": "Check the port.",
        "activeHost": "main",
        "address": "smtp.gmail.com:587",
        "time": "2026-05-01T09:30:00+00:00",
    }]
    assert "outgoing server acme/gmail-notifications is Unreachable" in our_logs(caplog)
    assert "hook-secret-123" not in our_logs(caplog)  # httpx's own request log included


async def test_retries_with_backoff_then_delivers(webhook: WebhookReceiver) -> None:
    webhook.replies = [503, 429]
    sleeps = Sleeps()
    assert await Notifier(webhook.url, backoff_seconds=0.5, sleep=sleeps).notify(down())
    assert webhook.attempts == 3 and len(webhook.received) == 1
    assert sleeps.delays == [0.5, 1.0]


async def test_gives_up_after_the_attempts(webhook: WebhookReceiver,
                                           caplog: pytest.LogCaptureFixture) -> None:
    webhook.replies = [500] * 10
    sleeps = Sleeps()
    assert not await Notifier(webhook.url, attempts=3, sleep=sleeps).notify(down())
    assert webhook.attempts == 3 and webhook.received == []
    assert "not delivered after 3 attempt(s): HTTP 500" in our_logs(caplog)
    assert "hook-secret-123" not in our_logs(caplog)


async def test_a_client_error_is_not_retried(webhook: WebhookReceiver) -> None:
    webhook.replies = [404]
    assert not await Notifier(webhook.url, sleep=Sleeps()).notify(down())
    assert webhook.attempts == 1


async def test_an_unreachable_webhook_is_retried_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sleeps = Sleeps()
    url = f"http://127.0.0.1:{free_port()}/hook?token=hook-secret-123"
    assert not await Notifier(url, attempts=2, sleep=sleeps).notify(down())
    assert sleeps.delays == [0.5]
    assert "ConnectError" in our_logs(caplog) and "hook-secret-123" not in our_logs(caplog)


async def test_webhook_from_a_secret_reference(webhook: WebhookReceiver,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALTH_TEST_WEBHOOK", webhook.url)
    assert await Notifier("env:HEALTH_TEST_WEBHOOK").notify(down())
    assert len(webhook.received) == 1
    assert not await Notifier("env:HEALTH_TEST_WEBHOOK_UNSET").notify(down())


async def test_without_a_webhook_transitions_are_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    notifier = Notifier(None)
    assert notifier.webhook is None
    back = Transition(KEY, RECOVERED, "Unreachable", "Reachable", AT)
    moved = Transition(KEY, FAILOVER, "Reachable", "Reachable", AT, active_host="alternate",
                       address="smtp-relay.gmail.com:587")
    for transition in (down(), back, moved):
        assert await notifier.notify(transition)
    ours = [r for r in caplog.records if r.name == "reconciler.runtime.notifier"]
    levels = [(r.levelname, r.getMessage()) for r in ours]
    assert levels == [
        ("WARNING", "outgoing server acme/gmail-notifications is Unreachable: "
                    "tcp: connection refused by smtp.gmail.com:587"),
        ("INFO", "outgoing server acme/gmail-notifications is Reachable again (via main host)"),
        ("WARNING", "outgoing server acme/gmail-notifications: main host unreachable, sending "
                    "via the alternate host smtp-relay.gmail.com:587"),
    ]
    assert ours[0].health["event"] == "server.unreachable"  # type: ignore[attr-defined]
