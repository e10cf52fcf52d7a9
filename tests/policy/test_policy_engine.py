"""parse_policies + evaluate: user policies, selectors, exceptions, errors."""

from __future__ import annotations

import textwrap
from datetime import date
from pathlib import Path

import pytest

from reconciler.config.diagnostics import Diagnostics, Severity
from reconciler.config.loaded import LoadedResource
from reconciler.config.loader import load_tree
from reconciler.config.models import KINDS
from reconciler.policy import cel
from reconciler.policy.engine import (
    MAX_EVAL_ERRORS_PER_POLICY,
    evaluate,
    is_policy_document,
    parse_policies,
    shipped_documents,
)

from .kit import TODAY, codes, findings, outgoing, policy_set, resources

SERVER = outgoing("""
email: helpdesk@example.com
replyTo: support@example.com
host: smtp.example.com
security: starttls
""")


def server(name: str = "mail", metadata: str = "", **fields: str) -> str:
    spec = {"email": "helpdesk@example.com", "replyTo": "support@example.com",
            "protocol": "smtp", "host": "smtp.example.com", "security": "starttls", **fields}
    lines = "\n".join(f"{k}: {v}" for k, v in spec.items() if v != "DROP")
    return outgoing(lines, name=name, metadata=metadata)


def policy(name: str = "host-on-example", **fields: str) -> str:
    spec = {
        "kinds": "[OutgoingServer]",
        "severity": "deny",
        "condition": "'spec.host.endsWith(\".example.com\")'",
        "path": "spec.host",
        "message": "hosts must be ours",
        "hint": "use a host below example.com",
        **fields,
    }
    body = "\n".join(f"  {k}: {v}" for k, v in spec.items() if v != "DROP")
    head = f"apiVersion: reconciler.dev/v1\nkind: Policy\nmetadata: {{name: {name}}}\n"
    return f"{head}spec:\n{body}\n"


def exception(
    resources_: str = "[OutgoingServer/mail]",
    *,
    name: str = "waive",
    policy_name: str = "host-on-example",
    expires: str = "2026-12-31",
    namespace: str = "",
) -> str:
    ns = f", namespace: {namespace}" if namespace else ""
    return textwrap.dedent(f"""\
        apiVersion: reconciler.dev/v1
        kind: PolicyException
        metadata: {{name: {name}{ns}}}
        spec:
          policy: {policy_name}
          resources: {resources_}
          reason: legacy relay, replaced in Q1
          expires: {expires}
        """)


def run(resources_text: str, policies_text: str, today: date = TODAY) -> list:
    policies, diagnostics = policy_set(policies_text, shipped=False)
    assert not diagnostics.items, [f"{d.location} {d.message}" for d in diagnostics]
    return evaluate(policies, resources(resources_text), today=today)


# -- user policies -------------------------------------------------------------
def test_user_policy_fires_with_its_own_message_hint_and_position() -> None:
    (finding,) = run(server(host="smtp.other.org"), policy())
    assert finding.code == "policy:host-on-example"
    assert finding.severity is Severity.ERROR
    assert finding.message == "hosts must be ours"
    assert finding.hint == "use a host below example.com"
    assert (finding.file, finding.line, finding.path) == ("servers.yaml", 8, "spec.host")
    assert finding.location == "servers.yaml:8:9"


def test_user_policy_passes_compliant_resource() -> None:
    assert run(server(), policy()) == []


def test_when_precondition_skips_resources() -> None:
    rules = policy(when="'spec.protocol == \"smtp\"'")
    graph = server(name="graph", protocol="graph", host="DROP", security="DROP")
    # Without `when`, the null host of the Graph server would be an evaluation error.
    assert run(graph, rules) == []
    assert codes(run(server(host="smtp.other.org"), rules)) == ["policy:host-on-example"]


def test_when_must_be_boolean() -> None:
    (finding,) = run(server(), policy(when="spec.host"))
    assert finding.code == "policy-error"
    assert "`when` must be true or false" in finding.message


def test_label_exemption_with_exclude() -> None:
    rules = policy(exclude="{labels: {env: dev}}")
    dev = server(host="smtp.other.org", metadata="labels: {env: dev}")
    prod = server(name="prod", host="smtp.other.org", metadata="labels: {env: prod}")
    result = run(dev + "---\n" + prod, rules)
    assert [d.line for d in result] == [18]  # only the prod server, the second document


def test_label_exemption_in_the_condition() -> None:
    condition = ("'spec.host.endsWith(\".example.com\") || "
                 "(has(metadata.labels.env) && metadata.labels.env == \"dev\")'")
    rules = policy(condition=condition)
    assert run(server(host="smtp.other.org", metadata="labels: {env: dev}"), rules) == []
    assert len(run(server(host="smtp.other.org"), rules)) == 1


def test_match_selects_labels_and_namespaces() -> None:
    rules = policy(match="{labels: {team: desk}, namespaces: [acme]}")
    hit = server(host="x.org", metadata="namespace: acme, labels: {team: desk}")
    other_ns = server(host="x.org", metadata="namespace: globex, labels: {team: desk}")
    other_label = server(host="x.org", name="m2", metadata="namespace: acme")
    result = run("---\n".join([hit, other_ns, other_label]), rules)
    assert len(result) == 1 and result[0].line == 8


def test_policy_with_namespace_checks_only_that_namespace() -> None:
    rules = policy().replace("metadata: {name: host-on-example}",
                             "metadata: {name: host-on-example, namespace: acme}")
    acme = server(host="x.org", metadata="namespace: acme")
    globex = server(host="x.org", metadata="namespace: globex")
    result = run(acme + "---\n" + globex, rules)
    assert len(result) == 1 and result[0].line == 8


def test_warn_policy_is_a_warning() -> None:
    (finding,) = run(server(host="x.org"), policy(severity="warn"))
    assert finding.severity is Severity.WARNING


def test_policy_only_sees_its_kinds() -> None:
    settings = "apiVersion: reconciler.dev/v1\nkind: MailSettings\nmetadata: {name: s}\nspec: {}\n"
    assert run(settings, policy(condition="'false'")) == []


def test_user_policy_in_a_config_dir_is_picked_up(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "outgoing").mkdir()
    (tmp_path / "policies" / "hosts.yaml").write_text(policy(), encoding="utf-8")
    (tmp_path / "outgoing" / "relay.yaml").write_text(server(host="relay.other.org"),
                                                      encoding="utf-8")
    diagnostics = Diagnostics()
    documents = load_tree(tmp_path, diagnostics)
    policies = parse_policies(shipped_documents(diagnostics) + documents, diagnostics)
    assert not diagnostics.items
    loaded = [
        LoadedResource(KINDS[d.data["kind"]].model_validate(d.data), d)
        for d in documents
        if not is_policy_document(d)
    ]
    result = evaluate(policies, loaded, today=TODAY)
    (finding,) = [d for d in result if d.code == "policy:host-on-example"]
    assert finding.file == "outgoing/relay.yaml" and finding.line == 8


def test_user_policy_overrides_a_shipped_one() -> None:
    off = policy(name="reply-to-required", enabled="false", condition="'true'")
    violating = server(replyTo="DROP")
    assert "policy:reply-to-required" in codes(findings(violating))
    assert "policy:reply-to-required" not in codes(findings(violating, off))
    softer = policy(name="reply-to-required", severity="warn",
                    condition="'spec.replyTo != null'", path="spec.replyTo")
    (finding,) = [d for d in findings(violating, softer) if d.code == "policy:reply-to-required"]
    assert finding.severity is Severity.WARNING


def test_duplicate_user_policy_names_are_an_error() -> None:
    _, diagnostics = policy_set(policy() + "---\n" + policy(), shipped=False)
    (error,) = diagnostics.errors
    assert error.code == "duplicate-name"
    assert error.line == 14 and "first in policies.yaml:1" in error.message


def test_other_documents_are_ignored() -> None:
    policies, diagnostics = policy_set(SERVER + "---\n" + policy(), shipped=False)
    assert list(policies.policies) == ["host-on-example"] and not diagnostics.items


# -- invalid policies --------------------------------------------------------------
def test_cel_syntax_error_is_positioned_at_the_condition() -> None:
    _, diagnostics = policy_set(policy(condition="'spec.host &&& true'"), shipped=False)
    (error,) = diagnostics.errors
    assert (error.file, error.line, error.col) == ("policies.yaml", 7, 14)
    assert error.path == "spec.condition"
    assert "CEL syntax error at line 1, column 13" in error.message
    assert "^" in error.hint


def test_unknown_variable_and_function_are_reported_once() -> None:
    text = policy(condition="'host == \"x\"'") + "---\n" + policy(
        name="other", condition="'isMicrosoft(spec.host)'")
    _, diagnostics = policy_set(text, shipped=False)
    messages = [d.message for d in diagnostics.errors]
    assert any("unknown name 'host'" in m for m in messages)
    assert any("unknown function 'isMicrosoft'" in m for m in messages)


def test_misspelt_field_is_caught_at_the_policy() -> None:
    policies, diagnostics = policy_set(policy(condition="'spec.secuirty != \"none\"'"),
                                       shipped=False)
    (error,) = diagnostics.errors
    assert error.path == "spec.condition" and error.line == 7
    assert "spec.secuirty is not a field of OutgoingServer" in error.message
    assert "did you mean spec.security?" in error.message
    assert "host-on-example" not in policies.policies


def test_invalid_policy_fields_are_reported_in_plain_words() -> None:
    text = policy(kinds="[OutgoingSrv]", severity="block", path="'a b'", extra="1")
    _, diagnostics = policy_set(text, shipped=False)
    by_path = {d.path: d for d in diagnostics.errors}
    assert "unknown kind 'OutgoingSrv'" in by_path["spec.kinds.0"].message
    assert "'block'" in by_path["spec.severity"].message
    assert "'a b' is not a dotted field path" in by_path["spec.path"].message
    assert by_path["spec.extra"].message.startswith("unknown field")
    assert len(diagnostics.errors) == 4  # one per field: no "or a list" echo for `path`
    assert all(d.line > 0 for d in diagnostics.errors)


def test_missing_required_field() -> None:
    _, diagnostics = policy_set(policy(message="DROP"), shipped=False)
    (error,) = diagnostics.errors
    assert error.path == "spec.message" and error.message == "required field is missing"


# -- evaluation errors ----------------------------------------------------------------
def test_runtime_error_is_a_diagnostic_not_a_crash() -> None:
    rules = policy(condition="'metadata.labels.env == \"prod\"'")
    (finding,) = run(server(), rules)
    assert finding.code == "policy-error" and finding.severity is Severity.ERROR
    assert "host-on-example" in finding.message
    assert "OutgoingServer/default/mail" in finding.message
    assert "metadata.labels has no key 'env'" in finding.message
    assert finding.file == "servers.yaml" and finding.line == 1


def test_runtime_errors_are_capped_per_policy() -> None:
    many = "---\n".join(server(name=f"mail-{i}") for i in range(MAX_EVAL_ERRORS_PER_POLICY + 3))
    result = run(many, policy(condition="'metadata.labels.env == \"prod\"'"))
    assert len(result) == MAX_EVAL_ERRORS_PER_POLICY + 1
    summary = result[-1]
    assert summary.file == "policies.yaml" and summary.path == "spec.condition"
    assert "failed on 8 resources (3 not listed)" in summary.message


def test_non_boolean_condition_is_an_error() -> None:
    (finding,) = run(server(), policy(condition="spec.host"))
    assert finding.code == "policy-error" and "must be true or false" in finding.message


def test_full_cel_runs_on_the_interpreter() -> None:
    rules = policy(condition="'timestamp(\"2026-01-01T00:00:00Z\") < "
                             "timestamp(\"2027-01-01T00:00:00Z\") && spec.replyTo != null'")
    policies, _ = policy_set(rules, shipped=False)
    assert not policies.policies["host-on-example"].condition.fast
    assert run(server(), rules) == []
    assert len(run(server(replyTo="DROP"), rules)) == 1


# -- exceptions ----------------------------------------------------------------------
def test_exception_suppresses_the_finding() -> None:
    assert run(server(host="x.org"), policy() + "---\n" + exception()) == []


def test_exception_covers_only_named_resources() -> None:
    two = server(host="x.org") + "---\n" + server(name="other", host="x.org")
    result = run(two, policy() + "---\n" + exception())
    assert codes(result) == ["policy:host-on-example"] and result[0].line == 18


def test_exception_by_namespace_and_full_name() -> None:
    acme = server(host="x.org", metadata="namespace: acme")
    globex = server(host="x.org", metadata="namespace: globex")
    waive = exception("[OutgoingServer/mail, OutgoingServer/globex/mail]", namespace="acme")
    assert run(acme + "---\n" + globex, policy() + "---\n" + waive) == []
    # Without a namespace in the reference, the exception's own namespace is meant.
    only_acme = exception(namespace="acme")
    result = run(acme + "---\n" + globex, policy() + "---\n" + only_acme)
    assert codes(result) == ["policy:host-on-example"] and result[0].line == 18


def test_expired_exception_is_an_error_and_does_not_suppress() -> None:
    result = run(server(host="x.org"), policy() + "---\n" + exception(expires="2026-05-31"))
    assert codes(result) == ["policy-exception-expired", "policy:host-on-example"]
    (expired,) = [d for d in result if d.code == "policy-exception-expired"]
    assert expired.severity is Severity.ERROR
    assert (expired.file, expired.line, expired.path) == ("policies.yaml", 19, "spec.expires")
    assert "expired on 2026-05-31" in expired.message


def test_exception_holds_through_its_expiry_day() -> None:
    result = run(server(host="x.org"), policy() + "---\n" + exception(expires="2026-06-01"))
    assert codes(result) == ["policy-exception-expiring"]
    assert result[0].severity is Severity.NOTICE


def test_exception_naming_an_unknown_policy_is_an_error() -> None:
    text = policy() + "---\n" + exception(policy_name="host-on-exmaple")
    result = run(server(host="x.org"), text)
    (error,) = [d for d in result if d.code == "policy-exception-policy"]
    assert error.severity is Severity.ERROR
    assert (error.line, error.path) == (16, "spec.policy")
    assert "did you mean 'host-on-example'" in error.hint
    assert "policy:host-on-example" in codes(result)  # and it waives nothing


def test_exception_naming_an_unknown_resource_is_an_error() -> None:
    text = policy() + "---\n" + exception("[OutgoingServer/mail, OutgoingServer/nope]")
    result = run(server(host="x.org"), text)
    assert codes(result) == ["policy-exception-target"]
    (error,) = result
    assert error.path == "spec.resources.1" and error.line == 17
    assert "OutgoingServer/default/nope, which does not exist" in error.message


def test_exception_for_a_kind_the_policy_does_not_check() -> None:
    settings = "apiVersion: reconciler.dev/v1\nkind: MailSettings\nmetadata: {name: s}\nspec: {}\n"
    text = policy() + "---\n" + exception("[MailSettings/s]")
    result = run(settings, text)
    assert codes(result) == ["policy-exception-target"]
    assert "does not check MailSettings" in result[0].message


def test_unneeded_exception_gets_a_notice() -> None:
    result = run(server(), policy() + "---\n" + exception())
    (notice,) = result
    assert notice.code == "policy-exception-unused" and notice.severity is Severity.NOTICE


def test_exception_reference_format_is_validated() -> None:
    _, diagnostics = policy_set(exception("[legacy-relay, Outgoing/x]"), shipped=False)
    paths = sorted(d.path for d in diagnostics.errors)
    assert paths == ["spec.resources.0", "spec.resources.1"]
    assert "unknown kind 'Outgoing'" in diagnostics.errors[1].message


def test_a_crashing_helper_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(value: object) -> object:
        raise ZeroDivisionError("boom")

    monkeypatch.setitem(cel.FUNCTIONS, "hostOf", broken)
    rules = policy(condition="'hostOf(spec.host) == \"crash-test.example.com\"'")
    (finding,) = run(server(), rules)
    assert finding.code == "policy-error"
    assert "internal error ZeroDivisionError: boom" in finding.message


def test_waiver_of_a_failing_check_is_not_called_unneeded() -> None:
    rules = policy(condition="'metadata.labels.env == \"prod\"'")
    result = run(server(), rules + "---\n" + exception())
    assert codes(result) == ["policy-error"]
