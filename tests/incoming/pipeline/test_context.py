from __future__ import annotations

import pytest

from reconciler.config.models.incoming_server import IncomingServer
from reconciler.incoming.pipeline.context import PipelineContext

from .kit import context, resource, resources, server_spec


def test_from_resources_resolves_and_compiles() -> None:
    ctx = context()
    assert ctx.mailboxes == {"support@acme.example", "help@acme.example"}
    assert {"notifications@acme.example", "support@acme.example"} <= ctx.own_addresses
    assert ctx.sender_filter is not None and ctx.sender_filter.name == "acme-ignore"
    assert [s.name for s in ctx.spam_filters] == ["prizes"]
    assert [r.name for r in ctx.rules] == ["newsletters", "board"]
    assert ctx.command is not None and ctx.command.subject_contains == "[desk-cmd]"
    assert ctx.defaults == (("technicianGroup", "Service Desk"), ("category", "General"))
    assert ctx.attachments.limit_bytes == 10485
    assert "exe" in ctx.attachments.blocked


def test_rules_for_other_servers_and_disabled_ones_are_left_out() -> None:
    found = [
        *resources(),
        resource("IncomingEmailRule", "other-server", {
            "order": 1, "servers": ["elsewhere"], "action": "ignore",
            "conditions": [{"field": "subject", "operator": "contains", "value": "x"}]}),
        resource("IncomingEmailRule", "off", {
            "order": 2, "enabled": False, "action": "ignore",
            "conditions": [{"field": "subject", "operator": "contains", "value": "x"}]})]
    server = next(r for r in found if isinstance(r, IncomingServer))
    ctx = PipelineContext.from_resources(server, found)
    assert [r.name for r in ctx.rules] == ["newsletters", "board"]
    assert ctx.directory is None


@pytest.mark.parametrize(("field", "value", "kind"), [
    ("recipientFilter", "gone", "RecipientFilter"),
    ("spamFilters", ["gone"], "SpamFilter"),
    ("emailCommand", "gone", "EmailCommand"),
])
def test_missing_reference_fails_closed(field: str, value: object, kind: str) -> None:
    with pytest.raises(LookupError, match=f"uses {kind} gone, which does not exist"):
        context(server=server_spec(**{field: value}))


def test_request_id_pattern_follows_the_settings() -> None:
    from .kit import settings_spec

    ctx = context(settings=settings_spec(baseDelimiter="@!",
                                         requestIdPrefixes={"request": "RQ", "change": "CHG"}))
    assert ctx.request_ids.find("Re: @!CHG-0012@! moved") == (("change", "12"), None)
    assert ctx.request_ids.find("##RE-1## @!XX-3@!") == (None, "@!XX-3@!")
    assert ctx.request_ids.find("@!77@!") == (("request", "77"), None)


@pytest.mark.parametrize(("subject", "module"), [
    ("Re: ##RE-1##", "request"), ("Re: ##TA-2##", "task"), ("Re: ##SO-3##", "solution"),
    ("Re: ##PO-4##", "purchaseOrder"), ("Re: ##PR-5##", "purchaseRequest"),
    ("Re: ##CO-6##", "contract"), ("Re: ##CH-7##", "change"), ("Re: ##PB-8##", "problem"),
    ("Re: ##PJ-9##", "project"),
])
def test_default_prefixes_thread_every_seed_module(subject: str, module: str) -> None:
    from reconciler.config.models.mail_settings import MailSettingsSpec
    from reconciler.incoming.pipeline.context import request_id_pattern

    found, unknown = request_id_pattern(MailSettingsSpec()).find(subject)
    assert found is not None and found[0] == module and unknown is None


def test_spam_filter_fields_are_the_fields_the_pipeline_tests() -> None:
    from email.message import EmailMessage

    from reconciler.config.models.spam_filter import MAIL_FIELDS
    from reconciler.incoming.pipeline.parse import parse
    from reconciler.incoming.pipeline.stages import _MailFields

    msg = EmailMessage()
    msg["From"] = "a@b.example"
    msg.set_content("hi")
    assert tuple(_MailFields(parse(msg.as_bytes()))) == MAIL_FIELDS
