"""Models (SPEC C1, C2): one pydantic model per kind, and examples/config exercising them all."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import ValidationError

from reconciler.config.models import KINDS
from reconciler.config.models.base import API_VERSION, Condition, Metadata
from reconciler.config.models.email_command import EmailCommandSpec
from reconciler.config.models.mail_settings import MailSettingsSpec
from reconciler.policy.validate import validate_path

from .helpers import EXAMPLES, describe

SPEC_C2_KINDS = {
    "OutgoingServer", "IncomingServer", "OutgoingEmailRule", "IncomingEmailRule",
    "RecipientFilter", "SpamFilter", "ProxyServer", "EmailCommand", "MailSettings",
    "SenderDirectory",  # SPEC I11: the desk's users, for guest tickets off
}
SPEC_X5_KINDS = {"SyncPolicy"}


def test_every_kind_of_spec_c2_has_a_model() -> None:
    assert set(KINDS) == SPEC_C2_KINDS | SPEC_X5_KINDS
    for kind, model in KINDS.items():
        assert kind == model.KIND
        assert model.model_fields["kind"].annotation.__args__ == (kind,)  # type: ignore[union-attr]


def test_examples_validate_with_zero_errors_and_use_every_kind_and_protocol() -> None:
    result = validate_path(EXAMPLES)
    assert result.ok, describe(result.diagnostics)
    assert not result.diagnostics.errors
    assert result.desired is not None and len(result.desired) == len(result.resources)

    kinds = Counter(r.model.kind for r in result.resources)
    assert set(kinds) == SPEC_C2_KINDS | SPEC_X5_KINDS
    protocols = {(r.model.kind, str(r.model.spec.protocol)) for r in result.resources
                 if r.model.kind in ("OutgoingServer", "IncomingServer")}
    assert {p for k, p in protocols if k == "OutgoingServer"} >= {"smtp", "ews", "graph"}
    assert {p for k, p in protocols if k == "IncomingServer"} >= {"imaps", "pop3s", "graph", "ews"}
    assert len({r.model.metadata.namespace for r in result.resources}) >= 2


def test_yaml_is_camel_case_python_is_snake_case() -> None:
    spec = KINDS["OutgoingServer"].model_validate({
        "apiVersion": API_VERSION, "kind": "OutgoingServer", "metadata": {"name": "s"},
        "spec": {"email": "a@b.example", "replyTo": "r@b.example", "attachmentLimitMB": 5},
    }).spec
    assert (spec.reply_to, spec.attachment_limit_mb) == ("r@b.example", 5)
    dumped = spec.model_dump(by_alias=True, exclude_none=True)
    assert {"replyTo", "attachmentLimitMB", "saveToSentItems"} <= set(dumped)


def test_metadata_defaults_and_names() -> None:
    assert Metadata(name="a-1").namespace == "default"
    for bad in ("A", "-a", "a-", "a_b", "a" * 64, ""):
        with pytest.raises(ValidationError):
            Metadata(name=bad)
    Metadata(name="a" * 63)


def test_condition_operands() -> None:
    assert Condition(field="subject", value="x").operator == "equals"
    Condition(field="dept", operator="notIn", values=["HR"])
    with pytest.raises(ValidationError, match="needs `value`"):
        Condition(field="subject", operator="contains")
    with pytest.raises(ValidationError, match="invalid regular expression"):
        Condition(field="subject", operator="regex", value="(")


def test_mail_settings_defaults() -> None:
    spec = MailSettingsSpec()
    assert spec.attachment_limit_mb == 20
    assert spec.base_delimiter == "##"
    # the seeds' nine module delimiters
    assert sorted(spec.request_id_prefixes.values()) == sorted(
        ["RE", "TA", "SO", "PO", "PR", "CO", "CH", "PB", "PJ"])
    assert spec.request_id_prefixes["purchaseOrder"] == "PO"
    with pytest.raises(ValidationError, match="must be 2-5 capital letters"):
        MailSettingsSpec(requestIdPrefixes={"request": "re"})


def test_email_command_delimiter() -> None:
    assert EmailCommandSpec(subjectContains="[cmd]").delimiter == "$"
    with pytest.raises(ValidationError, match="delimiter must be 1-2 of the characters"):
        EmailCommandSpec(subjectContains="[cmd]", delimiter="$$$")
