"""config.checks: semantic facts about mail servers (SPEC C7) beyond the broken-input table."""

from __future__ import annotations

from pathlib import Path

from reconciler.config.checks import check_semantics
from reconciler.config.diagnostics import Severity
from reconciler.policy.functions import is_microsoft_host
from reconciler.policy.validate import validate_path

from .helpers import EXAMPLES, Expect, assert_reported, describe, validate_files

SERVER = """\
apiVersion: reconciler.dev/v1
kind: OutgoingServer
metadata: {{name: {name}, namespace: {ns}}}
spec:
  email: desk@b.example
  replyTo: desk@b.example
  primary: true
{spec}"""


def _codes(tmp_path: Path, spec: str, ns: str = "default") -> list[tuple[str, Severity]]:
    result = validate_files(tmp_path, {"a.yaml": SERVER.format(name="s", ns=ns, spec=spec)})
    return [(d.code, d.severity) for d in check_semantics(result.resources)]


def test_examples_pass_every_semantic_check() -> None:
    result = validate_path(EXAMPLES)
    assert check_semantics(result.resources) == []


def test_matching_or_unusual_ports_give_no_warning(tmp_path: Path) -> None:
    for port, security in ((587, "starttls"), (465, "tls"), (25, "none"), (2525, "starttls")):
        spec = f"  host: smtp.b.example\n  port: {port}\n  security: {security}\n"
        assert _codes(tmp_path / f"p{port}", spec) == []


def test_smtp_without_host(tmp_path: Path) -> None:
    result = validate_files(tmp_path, {"a.yaml": SERVER.format(name="s", ns="x", spec="")})
    assert_reported(result, [Expect("a.yaml", 4, 1, "spec", "protocol smtp needs `host`",
                                    hint="smtp.example.com")])


def test_alternate_host_only_with_smtp(tmp_path: Path) -> None:
    spec = ("  protocol: ews\n  host: mail.b.example\n  alternateHost: mail2.b.example\n"
            "  auth: {type: basic, password: {secretRef: env:EWS_PASSWORD}}\n")
    assert ("alternate-host-unused", Severity.WARNING) in _codes(tmp_path, spec)


def test_ews_against_gmail_is_an_error(tmp_path: Path) -> None:
    spec = "  protocol: ews\n  host: smtp.gmail.com\n"
    result = validate_files(tmp_path, {"a.yaml": SERVER.format(name="s", ns="x", spec=spec)})
    assert_reported(result, [Expect("a.yaml", 9, 9, "spec.host", "smtp.gmail.com is not an "
                                    "Exchange server; EWS will not work")])


def test_starttls_flag_on_implicit_tls_protocol_warns(tmp_path: Path) -> None:
    result = validate_files(tmp_path, {"a.yaml": """
        apiVersion: reconciler.dev/v1
        kind: IncomingServer
        metadata: {name: box}
        spec: {email: s@b.example, protocol: imaps, host: imap.b.example, starttls: true}
        """})
    assert_reported(result, [Expect("a.yaml", 4, 77, "spec.starttls", "starttls applies to "
                                    "plain imap/pop3, not imaps", severity=Severity.WARNING)])


def test_graph_in_and_out_with_different_client_ids_is_fine(tmp_path: Path) -> None:
    auth = ("  auth: {{type: oauth2, grant: clientCredentials, tenant: b.onmicrosoft.com, "
            "clientId: {cid}, clientSecret: {{secretRef: env:S}}}}\n")
    result = validate_files(tmp_path, {"a.yaml": SERVER.format(
        name="out", ns="default", spec="  protocol: graph\n" + auth.format(cid="app-one"))
        + "---\napiVersion: reconciler.dev/v1\nkind: IncomingServer\nmetadata: {name: in}\n"
        "spec:\n  email: desk@b.example\n  protocol: graph\n" + auth.format(cid="app-two")})
    assert not [d for d in result.diagnostics if d.code == "graph-shared-client-id"], describe(
        result.diagnostics)
    assert not result.diagnostics.errors, describe(result.diagnostics)


def test_primary_is_counted_per_namespace(tmp_path: Path) -> None:
    docs = "---\n".join(SERVER.format(name="s", ns=ns, spec="  host: smtp.b.example\n")
                        for ns in ("tenant-a", "tenant-b", "tenant-c"))
    result = validate_files(tmp_path, {"a.yaml": docs})
    assert result.ok, describe(result.diagnostics)


def test_microsoft_hosts() -> None:
    assert is_microsoft_host("smtp.office365.com")
    assert is_microsoft_host("outlook.office365.com.")
    assert is_microsoft_host("SMTP.Office365.us")
    assert not is_microsoft_host("office365.com.evil.example")
    assert not is_microsoft_host("notoffice365.com")
    assert not is_microsoft_host(None)


def test_guest_tickets_off_without_a_sender_directory_warns_once_per_namespace(
        tmp_path: Path) -> None:
    box = ("apiVersion: reconciler.dev/v1\nkind: IncomingServer\nmetadata: {{name: {name}, "
           "namespace: {ns}}}\nspec: {{email: {name}@b.example, host: imap.b.example}}\n")
    docs = [box.format(name=n, ns=ns) for n, ns in (("a", "x"), ("b", "x"), ("c", "y"), ("d", "z"))]
    docs += ["apiVersion: reconciler.dev/v1\nkind: SenderDirectory\nmetadata: {name: staff, "
             "namespace: y}\nspec: {domains: [b.example]}\n",
             "apiVersion: reconciler.dev/v1\nkind: MailSettings\nmetadata: {name: m, "
             "namespace: z}\nspec: {guestTickets: true}\n"]
    result = validate_files(tmp_path, {"a.yaml": "---\n".join(docs)})
    found = [d for d in check_semantics(result.resources) if d.code == "no-sender-directory"]
    assert [(d.severity, d.line) for d in found] == [(Severity.WARNING, 4)]  # at `spec`
    assert "namespace 'x'" in found[0].message and "SenderDirectory" in found[0].hint


PROXY = """\
---
apiVersion: reconciler.dev/v1
kind: ProxyServer
metadata: {{name: corp, namespace: x}}
spec: {{type: {kind}, host: proxy.b.example, port: 3128}}
"""


def test_a_proxy_type_the_protocol_cannot_use_is_an_error_at_the_proxy_line(
        tmp_path: Path) -> None:
    spec = "  host: smtp.b.example\n  proxy: corp\n"
    result = validate_files(tmp_path, {"a.yaml": SERVER.format(name="s", ns="x", spec=spec)
                                       + PROXY.format(kind="https")})
    assert_reported(result, [Expect("a.yaml", 9, 10, "spec.proxy", "protocol smtp cannot go "
                                    "through ProxyServer 'corp' of type https",
                                    hint="type http or socks5")])


def test_http_and_socks5_proxies_validate_for_smtp(tmp_path: Path) -> None:
    spec = "  host: smtp.b.example\n  proxy: corp\n"
    for kind in ("http", "socks5"):
        result = validate_files(tmp_path / kind, {"a.yaml": SERVER.format(
            name="s", ns="x", spec=spec) + PROXY.format(kind=kind)})
        assert "proxy-unsupported" not in [d.code for d in check_semantics(result.resources)]
