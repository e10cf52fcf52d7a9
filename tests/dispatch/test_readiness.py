"""O8 "configuration is not proper" reasons, and the per-namespace view built from the store."""

from __future__ import annotations

import pytest

from reconciler.config.desired import CanonicalResource, ResourceKey
from reconciler.config.models.base import Resource
from reconciler.dispatch.readiness import server_problems
from reconciler.mail.outcome import NotSentReason
from reconciler.runtime.namespace import NamespaceConfig

from .kit import cond, recipient_filter, rule, server


def test_a_complete_enabled_server_has_no_problems() -> None:
    assert server_problems(server("ok")) == ()


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"enabled": False}, NotSentReason.SERVER_DISABLED),
        ({"replyTo": None}, NotSentReason.NO_REPLY_TO),
        ({"host": None}, NotSentReason.SERVER_INCOMPLETE),
        ({"port": None}, NotSentReason.SERVER_INCOMPLETE),
    ],
)
def test_each_problem_has_an_explicit_reason(spec: dict, reason: NotSentReason) -> None:
    problems = server_problems(server("broken", **spec))
    assert [p.reason for p in problems] == [reason]
    assert "broken" in problems[0].detail


def canonical(resource: Resource) -> CanonicalResource:
    doc = resource.model_dump(mode="json", by_alias=True, exclude_none=True)
    key = ResourceKey(doc["kind"], doc["metadata"]["namespace"], doc["metadata"]["name"])
    return CanonicalResource.build(key, doc["apiVersion"], doc["spec"])


def test_namespace_view_from_stored_json_routes_and_filters() -> None:
    stored = [
        canonical(server("primary", primary=True, recipientFilter="corp")),
        canonical(server("hr")),
        canonical(rule("hr", 1, "hr", cond("department", "equals", "HR"))),
        canonical(recipient_filter("corp", "allow", domains=["corp.example"])),
        canonical(server("elsewhere", namespace="globex")),
    ]
    view = NamespaceConfig.from_canonical("default", stored)
    assert set(view.servers) == {"primary", "hr"}
    assert view.route("request", {"department": "HR"}).server_name == "hr"
    primary = view.route("request", {}).server
    assert primary is not None
    f = view.recipient_filter(primary)
    assert f is not None and f.metadata.name == "corp"
    assert view.recipient_filter(view.servers["hr"]) is None
    assert view.retry_policy(primary).max_attempts == 8


def test_a_dangling_filter_reference_is_an_error_not_an_open_door() -> None:
    view = NamespaceConfig.from_resources("default", [server("s", recipientFilter="gone")])
    with pytest.raises(LookupError, match="gone"):
        view.recipient_filter(view.servers["s"])
