"""``GET /v1/notifications/{id}`` lists what became of each recipient (O14): the same
delivery events the webhook gets, oldest first, a bounce included."""
# ruff: noqa: F811  (api is a fixture from api_kit)

from __future__ import annotations

from reconciler.state.base import AuditEntry, AuditStatus, Completion, OutboxState

from .api_kit import ServedApi, api, notification, serve_api  # noqa: F401
from .test_api import post


def test_the_notification_shows_its_delivery_events(api: ServedApi) -> None:
    accepted = post(api, notification(1)).json()
    [claimed] = api.store.outbox.claim("worker-a", 10, 60)

    def entry(outcome: AuditStatus, reason: str, **details: str) -> AuditEntry:
        return AuditEntry(outcome, reason, server="mailer", recipient="jane@corp.example",
                          message_id="<n-1@desk.example>", outbox_id=claimed.id,
                          details=details or None)

    api.store.outbox.complete_many("worker-a", [Completion(claimed.id, OutboxState.SENT)],
                                   audit=[entry(AuditStatus.SENT, "250 ok")])
    api.store.audit.record([entry(AuditStatus.BOUNCED, "hard bounce 5.1.1: unknown user",
                                  status="5.1.1", kind="hard",
                                  diagnostic="550 5.1.1 unknown user")])
    with api.client() as client:
        view = client.get(f"/v1/notifications/{accepted['id']}").json()
    assert [(e["event"], e["recipient"]) for e in view["events"]] == [
        ("sent", "jane@corp.example"), ("bounced", "jane@corp.example")]
    assert view["events"][1]["bounce"]["status"] == "5.1.1"
    assert view["events"][1]["notificationId"] == accepted["id"]
