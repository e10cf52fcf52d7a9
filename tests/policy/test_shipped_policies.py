"""Each shipped policy fires on a violating resource and stays quiet on a compliant one."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.config.diagnostics import Severity

from .kit import findings, incoming, outgoing, policy_set

SMTP_OK = """
email: helpdesk@example.com
replyTo: support@example.com
protocol: smtp
host: smtp.example.com
security: starttls
"""


def smtp(extra: str = "", **fields: str) -> str:
    """A compliant SMTP server with ``fields`` replaced and ``extra`` lines added."""
    lines = dict(line.split(": ", 1) for line in SMTP_OK.strip().splitlines())
    lines.update(fields)
    spec = "\n".join(f"{k}: {v}" for k, v in lines.items() if v != "DROP")
    return outgoing(spec + ("\n" + extra.strip() if extra else ""))


BASIC = "auth: {type: basic, password: {secretRef: env:MAIL_PASSWORD}}"
OAUTH = "auth: {type: oauth2, provider: microsoft, clientId: abc, tenant: example.com}"
SETTINGS = "apiVersion: reconciler.dev/v1\nkind: MailSettings\nmetadata: {{name: settings}}\n" \
    "spec: {{{spec}}}\n"

VIOLATIONS = [
    ("tls-required", smtp(security="none")),
    ("tls-required", smtp(security="DROP", extra="port: 25")),
    ("tls-required", incoming("email: a@example.com\nprotocol: imap\nhost: imap.example.com")),
    ("tls-required", incoming("email: a@example.com\nprotocol: pop3\nhost: pop.example.com")),
    ("tls-required", smtp(protocol="ews", host="DROP", security="DROP",
                          extra="ewsUrl: http://mail.corp.example.com/EWS/Exchange.asmx")),
    ("no-basic-auth-microsoft365", smtp(host="smtp.office365.com", extra=BASIC)),
    ("no-basic-auth-microsoft365", smtp(host="smtp-mail.outlook.com", extra=BASIC)),
    ("no-basic-auth-microsoft365", smtp(host="SMTP.Office365.US", extra=BASIC)),
    ("no-basic-auth-microsoft365", smtp(extra="alternateHost: smtp.office365.com\n" + BASIC)),
    ("no-basic-auth-microsoft365", incoming(
        f"email: a@example.com\nprotocol: imaps\nhost: outlook.office365.com\n{BASIC}")),
    ("no-basic-auth-microsoft365", smtp(
        protocol="ews", host="DROP", security="DROP",
        extra=f"ewsUrl: https://outlook.office365.com/EWS/Exchange.asmx\n{BASIC}")),
    ("reply-to-required", smtp(replyTo="DROP")),
    ("attachment-limit-max-25mb", smtp(extra="attachmentLimitMB: 30")),
    ("attachment-limit-max-25mb", SETTINGS.format(spec="attachmentLimitMB: 25.5")),
    ("ews-exchange-online-retiring", smtp(protocol="ews", host="outlook.office365.com",
                                          security="DROP", extra=OAUTH)),
    ("ews-exchange-online-retiring", incoming(
        "email: a@example.com\nprotocol: ews\n"
        "ewsUrl: https://outlook.office365.com/EWS/Exchange.asmx")),
    ("graph-outgoing-throughput", smtp(protocol="graph", host="DROP", security="DROP",
                                       extra=OAUTH)),
]

COMPLIANT = [
    ("tls-required", smtp()),
    ("tls-required", smtp(security="tls")),
    ("tls-required", smtp(security="DROP")),  # derived later; not port 25
    ("tls-required", smtp(security="none", extra="port: 25")
     .replace("{name: mail}", "{name: mail, labels: {env: dev}}")),
    ("tls-required", incoming("email: a@example.com\nprotocol: imaps\nhost: imap.example.com")),
    ("tls-required", incoming(
        "email: a@example.com\nprotocol: imap\nhost: imap.example.com\nstarttls: true")),
    ("tls-required", smtp(protocol="ews", host="DROP", security="DROP",
                          extra="ewsUrl: https://mail.corp.example.com/EWS/Exchange.asmx")),
    ("no-basic-auth-microsoft365", smtp(host="smtp.gmail.com", extra=BASIC)),
    ("no-basic-auth-microsoft365", smtp(host="smtp.notoffice365.com", extra=BASIC)),
    ("no-basic-auth-microsoft365", smtp(host="smtp.office365.com", extra=OAUTH)),
    ("reply-to-required", smtp()),
    ("attachment-limit-max-25mb", smtp(extra="attachmentLimitMB: 25")),
    ("attachment-limit-max-25mb", smtp()),  # unset: derived as 20
    ("attachment-limit-max-25mb", SETTINGS.format(spec="")),
    ("ews-exchange-online-retiring", smtp(protocol="ews", host="mail.corp.example.com",
                                          security="DROP", extra=BASIC)),
    ("ews-exchange-online-retiring", smtp(host="smtp.office365.com", extra=OAUTH)),
    ("graph-outgoing-throughput", smtp()),
]


def _ids(cases: list[tuple[str, str]]) -> list[str]:
    return [f"{name}-{i}" for i, (name, _) in enumerate(cases)]


@pytest.mark.parametrize(("policy", "resource"), VIOLATIONS, ids=_ids(VIOLATIONS))
def test_policy_fires_on_violation(policy: str, resource: str) -> None:
    found = [d for d in findings(resource) if d.code == f"policy:{policy}"]
    assert len(found) == 1
    finding = found[0]
    assert finding.file == "servers.yaml"
    assert finding.line > 0 and finding.col > 0
    assert finding.message and finding.hint


@pytest.mark.parametrize(("policy", "resource"), COMPLIANT, ids=_ids(COMPLIANT))
def test_policy_quiet_on_compliant_resource(policy: str, resource: str) -> None:
    result = findings(resource)
    assert f"policy:{policy}" not in [d.code for d in result]
    assert not [d for d in result if d.code == "policy-error"]


def test_every_shipped_policy_has_both_cases() -> None:
    policies, _ = policy_set()
    shipped = set(policies.policies)
    assert {name for name, _ in VIOLATIONS} == shipped
    assert {name for name, _ in COMPLIANT} == shipped


def test_severity_deny_is_error_and_warn_is_warning() -> None:
    result = findings(smtp(security="none") + "---\n" + smtp(protocol="graph", extra=OAUTH)
                      .replace("{name: mail}", "{name: graph}"))
    severities = {d.code: d.severity for d in result}
    assert severities["policy:tls-required"] is Severity.ERROR
    assert severities["policy:graph-outgoing-throughput"] is Severity.WARNING


def test_finding_points_at_the_offending_field() -> None:
    result = findings(smtp(security="none"))
    (finding,) = [d for d in result if d.code == "policy:tls-required"]
    assert finding.path == "spec.security"
    # smtp() writes: apiVersion, kind, metadata, spec:, email, replyTo, protocol, host, security
    assert (finding.line, finding.col) == (9, 13)


def test_missing_field_points_at_its_parent() -> None:
    result = findings(smtp(replyTo="DROP"))
    (finding,) = [d for d in result if d.code == "policy:reply-to-required"]
    assert finding.path == "spec.replyTo"
    assert finding.line == 5  # the first line of the spec mapping


def test_a_clean_server_passes_every_shipped_policy() -> None:
    assert findings(smtp()) == []


def test_shipped_files_point_editors_at_the_schema() -> None:
    folder = Path(__file__).resolve().parents[2] / "policies"
    files = sorted(folder.glob("*.yaml"))
    assert len(files) >= 6
    for path in files:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first == "# yaml-language-server: $schema=../schemas/policy.json", path.name
