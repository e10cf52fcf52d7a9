"""config.references: every Ref field must name a resource of its kind in its namespace."""

from __future__ import annotations

from pathlib import Path

from reconciler.config.models import KINDS
from reconciler.config.references import check_references, iter_references, ref_fields
from reconciler.policy.validate import validate_path

from .helpers import EXAMPLES, Expect, assert_reported, validate_files


def _refs(kind: str) -> set[tuple[str, str, bool]]:
    spec = KINDS[kind].model_fields["spec"].annotation
    return {(f.alias, f.kind, f.many) for f in ref_fields(spec)}  # type: ignore[arg-type]


def test_reference_fields_are_found_from_the_model_annotations() -> None:
    assert _refs("OutgoingServer") == {
        ("proxy", "ProxyServer", False), ("recipientFilter", "RecipientFilter", False)}
    assert _refs("IncomingServer") == {
        ("proxy", "ProxyServer", False),
        ("recipientFilter", "RecipientFilter", False),
        ("spamFilters", "SpamFilter", True),
        ("emailCommand", "EmailCommand", False),
    }
    assert _refs("OutgoingEmailRule") == {("server", "OutgoingServer", False)}
    assert _refs("IncomingEmailRule") == {("servers", "IncomingServer", True)}
    assert _refs("MailSettings") == {("recipientFilter", "RecipientFilter", False)}
    for kind in ("RecipientFilter", "SpamFilter", "ProxyServer", "EmailCommand"):
        assert _refs(kind) == set()


def test_examples_resolve_every_reference() -> None:
    result = validate_path(EXAMPLES)
    assert check_references(result.resources) == []
    made = {(r.model.metadata.name, target) for r in result.resources
            for _, target, _ in iter_references(r)}
    assert ("gmail-notifications", "acme-no-external") in made
    assert ("gmail-support", "out-of-office") in made
    assert ("vip-to-tier2", "gmail-support") in made


RULE_AND_SERVER = """\
apiVersion: reconciler.dev/v1
kind: IncomingServer
metadata: {name: support, namespace: tenant-a}
spec: {email: s@b.example, host: imap.b.example}
---
apiVersion: reconciler.dev/v1
kind: IncomingEmailRule
metadata: {name: route, namespace: tenant-a}
spec:
  servers: [support, suport, helpdesk]
  order: 1
  conditions: [{field: subject, operator: contains, value: urgent}]
---
apiVersion: reconciler.dev/v1
kind: IncomingServer
metadata: {name: helpdesk, namespace: tenant-b}
spec: {email: h@b.example, host: imap.b.example}
"""


def test_list_references_point_at_the_item(tmp_path: Path) -> None:
    result = validate_files(tmp_path, {"a.yaml": RULE_AND_SERVER})
    assert_reported(result, [
        Expect("a.yaml", 10, 22, "spec.servers.1", "IncomingServer 'suport' does not exist in "
               "namespace 'tenant-a'", hint="did you mean 'support'?"),
        Expect("a.yaml", 10, 30, "spec.servers.2", "IncomingServer 'helpdesk' does not exist in "
               "namespace 'tenant-a'", hint="IncomingServer 'helpdesk' exists in namespace "
               "'tenant-b'; references stay within one namespace"),
    ])
    dangling = [d for d in result.diagnostics if d.code == "dangling-reference"]
    assert len(dangling) == 2


def test_same_name_other_kind_does_not_satisfy_a_reference(tmp_path: Path) -> None:
    result = validate_files(tmp_path, {"a.yaml": """
        apiVersion: reconciler.dev/v1
        kind: SpamFilter
        metadata: {name: shared-name}
        spec: {conditions: [{field: subject, value: x}]}
        ---
        apiVersion: reconciler.dev/v1
        kind: IncomingServer
        metadata: {name: box}
        spec: {email: s@b.example, host: imap.b.example, recipientFilter: shared-name}
        """})
    assert [(d.path, d.message) for d in result.diagnostics if d.code == "dangling-reference"] == [
        ("spec.recipientFilter", "RecipientFilter 'shared-name' does not exist in namespace "
         "'default'")]
