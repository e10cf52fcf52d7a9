"""config.derive: defaults made explicit, each with its reason (SPEC C6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.config.derive import DEFAULT_ATTACHMENT_LIMIT_MB
from reconciler.config.desired import ResourceKey
from reconciler.policy.validate import ValidationResult

from .helpers import describe, validate_files

HEAD = "apiVersion: reconciler.dev/v1\n"


def outgoing(name: str, spec: str, namespace: str = "default") -> str:
    return (f"{HEAD}kind: OutgoingServer\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
            f"spec:\n  email: {name}@b.example\n  replyTo: desk@b.example\n{spec}")


def incoming(name: str, spec: str) -> str:
    return (f"{HEAD}kind: IncomingServer\nmetadata: {{name: {name}}}\n"
            f"spec:\n  email: {name}@b.example\n{spec}")


def derived(result: ValidationResult, name: str) -> dict[str, tuple[Any, str]]:
    """dotted path -> (value, reason) for the resource called ``name``."""
    [res] = [r for r in result.resources if r.model.metadata.name == name]
    return {d.dotted: (d.value, d.reason) for d in res.derivations}


def run(tmp_path: Path, *docs: str) -> ValidationResult:
    return validate_files(tmp_path, {"c.yaml": "---\n".join(docs)})


MICROSOFT_OAUTH = """\
  auth:
    type: oauth2
    provider: microsoft
    tenant: contoso.onmicrosoft.com
    clientId: 3f2a9c1e-0b7d-4e55-9a61-5d2c8e7f1a01
    clientSecret: {secretRef: env:O365_SECRET}
"""
GOOGLE_OAUTH = """\
  auth:
    type: oauth2
    provider: google
    clientId: 123.apps.googleusercontent.com
    clientSecret: {secretRef: env:GOOGLE_SECRET}
"""


@pytest.mark.parametrize(
    ("security", "port"), [("none", 25), ("starttls", 587), ("tls", 465)])
def test_smtp_port_from_security(tmp_path: Path, security: str, port: int) -> None:
    result = run(tmp_path, outgoing("s", f"  host: smtp.b.example\n  security: {security}\n"
                                         "  primary: true\n"))
    assert derived(result, "s")["spec.port"] == (port, f"SMTP with security {security}")
    assert result.resources[0].model.spec.port == port


def test_smtp_without_security_or_port_is_starttls_587(tmp_path: Path) -> None:
    result = run(tmp_path, outgoing("s", "  host: smtp.b.example\n  primary: true\n"))
    d = derived(result, "s")
    assert d["spec.security"] == ("starttls",
                                  "STARTTLS on the submission port is the safe default")
    assert d["spec.port"] == (587, "SMTP with security starttls")


def test_smtp_security_from_a_well_known_port(tmp_path: Path) -> None:
    result = run(tmp_path, outgoing("s", "  host: smtp.b.example\n  port: 465\n"
                                         "  primary: true\n"))
    d = derived(result, "s")
    assert d["spec.security"] == ("tls", "port 465 is the usual port for it")
    assert "spec.port" not in d


@pytest.mark.parametrize("protocol", ["ews", "graph"])
def test_ews_and_graph_use_https_on_443(tmp_path: Path, protocol: str) -> None:
    result = run(tmp_path, outgoing("h", f"  protocol: {protocol}\n  host: outlook.office365.com\n"
                                         f"  primary: true\n{MICROSOFT_OAUTH}"))
    d = derived(result, "h")
    assert d["spec.port"] == (443, f"{protocol} runs over HTTPS")
    assert d["spec.security"] == ("tls", f"{protocol} runs over HTTPS")
    assert d["spec.mailbox"] == ("h@b.example", "the server's email address")


def test_ews_url_from_host(tmp_path: Path) -> None:
    result = run(tmp_path, outgoing("e", "  protocol: ews\n  host: mail.b.example\n"
                                         f"  primary: true\n{MICROSOFT_OAUTH}"))
    assert derived(result, "e")["spec.ewsUrl"] == (
        "https://mail.b.example/EWS/Exchange.asmx", "standard EWS path on the host")


@pytest.mark.parametrize(
    ("protocol", "port"),
    [("imap", 143), ("imaps", 993), ("pop3", 110), ("pop3s", 995), ("ews", 443),
     ("graph", 443)])
def test_incoming_port_from_protocol(tmp_path: Path, protocol: str, port: int) -> None:
    result = run(tmp_path, incoming("i", f"  protocol: {protocol}\n  host: mail.b.example\n"
                                         f"{MICROSOFT_OAUTH}"))
    assert derived(result, "i")["spec.port"] == (port, f"standard port of {protocol}")


@pytest.mark.parametrize(
    ("kind", "protocol", "auth", "scope"),
    [
        ("out", "smtp", MICROSOFT_OAUTH,
         ["https://outlook.office365.com/SMTP.Send", "offline_access"]),
        ("out", "smtp", GOOGLE_OAUTH, ["https://mail.google.com/"]),
        ("in", "imaps", GOOGLE_OAUTH, ["https://mail.google.com/"]),
        ("out", "ews", MICROSOFT_OAUTH,
         ["https://outlook.office365.com/EWS.AccessAsUser.All", "offline_access"]),
        ("out", "graph", MICROSOFT_OAUTH, ["Mail.ReadWrite", "Mail.Send.Shared", "offline_access"]),
        ("in", "imaps", MICROSOFT_OAUTH,
         ["https://outlook.office365.com/IMAP.AccessAsUser.All", "offline_access"]),
        ("in", "pop3s", MICROSOFT_OAUTH,
         ["https://outlook.office365.com/POP.AccessAsUser.All", "offline_access"]),
    ],
    ids=["o365-smtp", "gmail-smtp", "gmail-imaps", "o365-ews", "graph", "o365-imaps",
         "o365-pop3s"],
)
def test_oauth_scope_per_provider_and_protocol(
    tmp_path: Path, kind: str, protocol: str, auth: str, scope: list[str]
) -> None:
    host = "smtp.office365.com" if "microsoft" in auth else "smtp.gmail.com"
    body = f"  protocol: {protocol}\n  host: {host}\n{auth}"
    doc = outgoing("o", body + "  primary: true\n") if kind == "out" else incoming("o", body)
    result = run(tmp_path, doc)
    value, reason = derived(result, "o")["spec.auth.scope"]
    assert value == scope
    assert reason
    assert result.resources[0].model.spec.auth.scope == scope


def test_microsoft_delegated_oauth_urls_and_redirect(tmp_path: Path) -> None:
    result = run(tmp_path, outgoing("m", "  host: smtp.office365.com\n  primary: true\n"
                                         f"{MICROSOFT_OAUTH}"))
    d = derived(result, "m")
    base = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0"
    assert d["spec.auth.authorizationUrl"][0] == f"{base}/authorize"
    assert d["spec.auth.tokenUrl"][0] == f"{base}/token"
    assert d["spec.auth.redirectUrl"][0] == "http://localhost:8765/oauth/callback"
    assert d["spec.auth.username"] == ("m@b.example", "the server's email address")


def test_client_credentials_ask_for_default_scope(tmp_path: Path) -> None:
    auth = MICROSOFT_OAUTH.replace("    provider: microsoft\n",
                                   "    provider: microsoft\n    grant: clientCredentials\n")
    result = run(tmp_path, outgoing("g", f"  protocol: graph\n  primary: true\n{auth}"))
    d = derived(result, "g")
    assert d["spec.auth.scope"] == (["https://graph.microsoft.com/.default"],
                                    "app-only tokens ask for the resource's .default scope")
    assert "spec.auth.redirectUrl" not in d


@pytest.mark.parametrize(
    ("cloud", "endpoint", "authority"),
    [
        ("global", "https://graph.microsoft.com", "https://login.microsoftonline.com"),
        ("usGovL4", "https://graph.microsoft.us", "https://login.microsoftonline.us"),
        ("usGovL5", "https://dod-graph.microsoft.us", "https://login.microsoftonline.us"),
        ("china", "https://microsoftgraph.chinacloudapi.cn", "https://login.chinacloudapi.cn"),
        ("germany", "https://graph.microsoft.de", "https://login.microsoftonline.de"),
    ],
)
def test_graph_endpoint_per_national_cloud(
    tmp_path: Path, cloud: str, endpoint: str, authority: str
) -> None:
    result = run(
        tmp_path,
        outgoing("g", f"  protocol: graph\n  nationalCloud: {cloud}\n  primary: true\n"
                      f"{MICROSOFT_OAUTH}"),
        incoming("i", f"  protocol: graph\n  nationalCloud: {cloud}\n{MICROSOFT_OAUTH}"),
    )
    for name in ("g", "i"):
        d = derived(result, name)
        assert d["spec.graphEndpoint"] == (endpoint, f"Graph endpoint of the {cloud} cloud")
        assert d["spec.auth.tokenUrl"][0].startswith(f"{authority}/contoso.onmicrosoft.com/")


def test_graph_without_cloud_is_global(tmp_path: Path) -> None:
    result = run(tmp_path, outgoing("g", f"  protocol: graph\n  primary: true\n{MICROSOFT_OAUTH}"))
    d = derived(result, "g")
    assert d["spec.nationalCloud"] == ("global", "the worldwide Microsoft cloud")
    assert d["spec.graphEndpoint"][0] == "https://graph.microsoft.com"


def test_attachment_limit_defaults_to_20_mb(tmp_path: Path) -> None:
    result = run(tmp_path, outgoing("s", "  host: smtp.b.example\n  primary: true\n"))
    assert DEFAULT_ATTACHMENT_LIMIT_MB == 20
    assert derived(result, "s")["spec.attachmentLimitMB"] == (20, "default attachment limit")


def test_attachment_limit_and_retry_from_mail_settings(tmp_path: Path) -> None:
    settings = (f"{HEAD}kind: MailSettings\nmetadata: {{name: s, namespace: tenant}}\n"
                "spec:\n  attachmentLimitMB: 15\n  retry: {lifetimeMinutes: 60}\n")
    result = run(
        tmp_path,
        settings,
        outgoing("t", "  host: smtp.b.example\n  primary: true\n", namespace="tenant"),
        outgoing("u", "  host: smtp.b.example\n  primary: true\n"),  # other namespace
    )
    assert result.ok, describe(result.diagnostics)
    d = derived(result, "t")
    assert d["spec.attachmentLimitMB"] == (15, "MailSettings.attachmentLimitMB of the namespace")
    assert d["spec.retryLifetimeMinutes"] == (60, "MailSettings.retry.lifetimeMinutes")
    assert derived(result, "u")["spec.attachmentLimitMB"] == (20, "default attachment limit")


def test_values_written_in_git_always_win(tmp_path: Path) -> None:
    result = run(tmp_path, outgoing(
        "w", "  host: smtp.b.example\n  port: 2525\n  security: starttls\n"
             "  attachmentLimitMB: 5\n  maxConcurrency: 9\n  primary: true\n"))
    d = derived(result, "w")
    assert not {"spec.port", "spec.security", "spec.attachmentLimitMB",
                "spec.maxConcurrency"} & set(d)
    spec = result.resources[0].model.spec
    assert (spec.port, spec.attachment_limit_mb, spec.max_concurrency) == (2525, 5, 9)


def test_alternate_host_gets_the_main_port(tmp_path: Path) -> None:
    result = run(tmp_path, outgoing("a", "  host: smtp.b.example\n  alternateHost: smtp2.b.example"
                                         "\n  security: tls\n  primary: true\n"))
    assert derived(result, "a")["spec.alternatePort"] == (465, "same port as the main host")


def test_derived_values_are_in_the_desired_state(tmp_path: Path) -> None:
    result = run(tmp_path, outgoing("s", "  host: smtp.b.example\n  security: starttls\n"
                                         "  primary: true\n"))
    assert result.ok, describe(result.diagnostics)
    assert result.desired is not None
    key = ResourceKey("OutgoingServer", "default", "s")
    spec = result.desired.resources[key].spec
    assert (spec["port"], spec["attachmentLimitMB"], spec["maxConcurrency"]) == (587, 20, 4)
    assert "spec.port" in result.derivations()[key]


def test_oversize_attachments_are_dropped_unless_the_server_refuses_them(tmp_path: Path) -> None:
    result = run(tmp_path,
                 outgoing("d", "  host: smtp.b.example\n  primary: true\n"),
                 outgoing("r", "  host: smtp.b.example\n  attachments: {oversize: refuse}\n"))
    assert result.ok, describe(result.diagnostics)
    assert derived(result, "d")["spec.attachments.oversize"] == (
        "drop", "attachments over the limit are left out and named, as the desk products do")
    assert "spec.attachments.oversize" not in derived(result, "r")
    assert result.desired is not None
    specs = {k.name: r.spec for k, r in result.desired.resources.items()}
    assert specs["d"]["attachments"] == {"oversize": "drop"}
    assert specs["r"]["attachments"] == {"oversize": "refuse"}


def test_an_unknown_oversize_choice_is_named_with_its_place(tmp_path: Path) -> None:
    result = run(tmp_path, outgoing("b", "  host: smtp.b.example\n  primary: true\n"
                                         "  attachments: {oversize: bounce}\n"))
    [problem] = [d for d in result.diagnostics if d.severity == "error"]
    assert problem.path == "spec.attachments.oversize"
    assert "'drop' or 'refuse'" in problem.message, describe(result.diagnostics)
    assert problem.location.endswith("c.yaml:9:27"), problem.location
