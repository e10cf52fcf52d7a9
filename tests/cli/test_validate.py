"""`reconcile validate` end to end (SPEC C4, C6): every problem at once, never a traceback,
text / JSON / GitHub output, exit codes, --strict and --show-derived."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from config.broken_cases import CASES
from config.helpers import EXAMPLES, write_tree

from reconciler.cli.main import cli

DIAGNOSTIC_FIELDS = {"file", "line", "col", "path", "code", "message", "hint", "severity"}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["validate", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def broken_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("broken")
    for case in CASES:
        write_tree(root / case.id, case.files)
    return root


def test_every_broken_input_reported_at_once_without_traceback(broken_repo: Path) -> None:
    result = invoke(str(broken_repo))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = set(result.output.splitlines())
    missing = [exp.text_line(f"{case.id}/") for case in CASES for exp in case.expect
               if exp.text_line(f"{case.id}/") not in lines]
    assert not missing, "\n".join(missing) + "\n--- output:\n" + result.output
    for case in CASES:
        for secret in case.absent:
            assert secret not in result.output
    assert result.output.splitlines()[-1].startswith("invalid: ")


def test_real_entry_point_on_broken_repo(broken_repo: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from reconciler.cli.main import main; main()", "validate",
         str(broken_repo)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "port-out-of-range/outgoing/gmail.yaml:9:9  spec.port  error: 70000 is above the " \
           "maximum 65535" in proc.stdout


def test_json_format(broken_repo: Path) -> None:
    result = invoke(str(broken_repo), "--format", "json")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["valid"] is False
    assert data["resources"] > 0
    for d in data["diagnostics"]:
        assert set(d) == DIAGNOSTIC_FIELDS
        assert d["severity"] in ("error", "warning", "notice")
        assert isinstance(d["line"], int) and isinstance(d["col"], int)
    rows = {(d["file"], d["line"], d["col"], d["path"], d["severity"], d["message"])
            for d in data["diagnostics"]}
    for case in CASES:
        for exp in case.expect:
            prefix = f"{case.id}/"
            assert (prefix + exp.file, exp.line, exp.col, exp.path, str(exp.severity),
                    exp.message.replace("{dir}", prefix)) in rows
    port = next(d for d in data["diagnostics"]
                if d["file"] == "port-out-of-range/outgoing/gmail.yaml")
    assert port["code"] == "schema:less_than_equal"
    unknown = next(d for d in data["diagnostics"] if d["file"] == "unknown-field/a.yaml"
                   and d["path"] == "spec.replyTO")
    assert unknown["hint"] == "did you mean 'replyTo'?"
    for case in CASES:
        for secret in case.absent:
            assert secret not in result.output


def test_github_format(broken_repo: Path) -> None:
    result = invoke(str(broken_repo), "--format", "github", "--github-prefix", "config/")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert ("::error file=config/port-out-of-range/outgoing/gmail.yaml,line=9,col=9,"
            "title=schema%3Aless_than_equal::spec.port: 70000 is above the maximum 65535"
            ) in lines
    assert any(line.startswith(
        "::warning file=config/port-security-mismatch/a.yaml,line=8,col=9,"
        "title=port-security-mismatch::spec.port: port 465 usually means security tls")
        for line in lines)
    assert ("::error file=config/unknown-kind/a.yaml,line=2,col=7,title=unknown-kind::kind: "
            "unknown kind 'OutgoingSever' (hint: did you mean 'OutgoingServer'?)") in lines
    annotations = [line for line in lines if line.startswith("::")]
    assert all(line.startswith(("::error ", "::warning ", "::notice ")) for line in annotations)
    assert len(annotations) == len(lines) - 1  # and the summary


def test_examples_are_valid() -> None:
    result = invoke(str(EXAMPLES))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith("valid: 0 errors, ")


SERVER = """
    apiVersion: reconciler.dev/v1
    kind: OutgoingServer
    metadata: {name: relay}
    spec:
      email: desk@b.example
      replyTo: desk@b.example
      senderName: Desk
      host: smtp.b.example
      security: tls
      primary: true
    """


def test_strict_turns_warnings_into_failure(tmp_path: Path) -> None:
    clean = write_tree(tmp_path / "clean", {"server.yaml": SERVER})
    result = invoke(str(clean), "--strict")
    assert result.exit_code == 0, result.output
    assert result.output == "valid: 0 errors, 0 warnings, 1 resource\n"

    # port 587 with implicit TLS: a warning, not an error
    warned = write_tree(tmp_path / "warned", {
        "server.yaml": SERVER.replace("security: tls", "security: tls\n      port: 587")})
    result = invoke(str(warned))
    assert result.exit_code == 0, result.output
    assert "server.yaml:10:9  spec.port  warning: port 587 usually means security starttls, " \
        "but security is tls" in result.output
    assert result.output.splitlines()[-1] == "valid: 0 errors, 1 warning, 1 resource"
    assert invoke(str(warned), "--strict").exit_code == 1


def test_missing_path(tmp_path: Path) -> None:
    result = invoke(str(tmp_path / "nope"))
    assert result.exit_code == 1
    assert "error: no such file or directory" in result.output


DERIVED_REPO = {
    "smtp.yaml": """
        apiVersion: reconciler.dev/v1
        kind: OutgoingServer
        metadata: {name: o365-smtp}
        spec:
          email: desk@contoso.example
          replyTo: desk@contoso.example
          host: smtp.office365.com
          security: starttls
          primary: true
          auth:
            type: oauth2
            tenant: contoso.onmicrosoft.com
            clientId: 3f2a9c1e-0b7d-4e55-9a61-5d2c8e7f1a01
            clientSecret: {secretRef: env:O365_SECRET}
        ---
        apiVersion: reconciler.dev/v1
        kind: OutgoingServer
        metadata: {name: gmail-smtp}
        spec:
          email: desk@gmail-tenant.example
          replyTo: desk@gmail-tenant.example
          host: smtp.gmail.com
          security: tls
          auth:
            type: oauth2
            provider: google
            clientId: 123.apps.googleusercontent.com
            clientSecret: {secretRef: env:GOOGLE_SECRET}
        ---
        apiVersion: reconciler.dev/v1
        kind: OutgoingServer
        metadata: {name: exchange-ews}
        spec:
          email: desk@contoso.example
          replyTo: desk@contoso.example
          protocol: ews
          host: outlook.office365.com
          auth: {type: oauth2, tenant: contoso.onmicrosoft.com, clientId: ews-app,
                 clientSecret: {secretRef: env:EWS_SECRET}}
        """,
    "graph.yaml": """
        apiVersion: reconciler.dev/v1
        kind: OutgoingServer
        metadata: {name: graph-us, namespace: gov}
        spec:
          email: desk@agency.example
          replyTo: desk@agency.example
          protocol: graph
          nationalCloud: usGovL4
          primary: true
          auth: {type: oauth2, tenant: agency.onmicrosoft.us, clientId: graph-app,
                 clientSecret: {secretRef: env:GRAPH_SECRET}}
        ---
        apiVersion: reconciler.dev/v1
        kind: IncomingServer
        metadata: {name: graph-cn, namespace: gov}
        spec:
          email: desk@agency.example
          protocol: graph
          nationalCloud: china
          auth: {type: oauth2, tenant: agency.partner.onmschina.cn, clientId: graph-read,
                 clientSecret: {secretRef: env:GRAPH_SECRET}}
        ---
        apiVersion: reconciler.dev/v1
        kind: MailSettings
        metadata: {name: gov, namespace: gov}
        spec: {attachmentLimitMB: 12}
        """,
}


def _sections(output: str) -> dict[str, list[str]]:
    """resource display -> its derived lines, from the text output of --show-derived."""
    sections: dict[str, list[str]] = {}
    current = ""
    for line in output.split("\nderived values:\n", 1)[1].splitlines():
        if line.startswith("  ") and not line.startswith("    "):
            current = line.split()[0]
            sections[current] = []
        elif line.startswith("    "):
            sections[current].append(line.strip())
    return sections


def test_show_derived_text(tmp_path: Path) -> None:
    result = invoke(str(write_tree(tmp_path, DERIVED_REPO)), "--show-derived")
    assert result.exit_code == 0, result.output
    s = _sections(result.output)
    o365 = s["OutgoingServer/default/o365-smtp"]
    assert "spec.port = 587  # SMTP with security starttls" in o365
    assert "spec.attachmentLimitMB = 20.0  # default attachment limit" in o365
    assert ('spec.auth.scope = ["https://outlook.office365.com/SMTP.Send", "offline_access"]'
            "  # Microsoft delegated scope for smtp") in o365
    gmail = s["OutgoingServer/default/gmail-smtp"]
    assert "spec.port = 465  # SMTP with security tls" in gmail
    assert any(line.startswith('spec.auth.scope = ["https://mail.google.com/"]  # ')
               for line in gmail)
    ews = s["OutgoingServer/default/exchange-ews"]
    assert "spec.port = 443  # ews runs over HTTPS" in ews
    assert any(line.startswith('spec.auth.scope = ["https://outlook.office365.com/EWS.AccessAsU'
                               'ser.All", "offline_access"]') for line in ews)
    graph = s["OutgoingServer/gov/graph-us"]
    assert ('spec.graphEndpoint = "https://graph.microsoft.us"  # Graph endpoint of the usGovL4 '
            "cloud") in graph
    assert any(line.startswith('spec.auth.scope = ["Mail.ReadWrite", "Mail.Send.Shared", '
                               '"offline_access"]') for line in graph)
    assert ("spec.attachmentLimitMB = 12.0  # MailSettings.attachmentLimitMB of the namespace"
            in graph)
    assert any(line.startswith('spec.graphEndpoint = "https://microsoftgraph.chinacloudapi.cn"')
               for line in s["IncomingServer/gov/graph-cn"])


def test_show_derived_json_is_one_document(tmp_path: Path) -> None:
    result = invoke(str(write_tree(tmp_path, DERIVED_REPO)), "--show-derived", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["valid"] is True
    rows = {(r["resource"], r["path"]): r for r in data["derived"]}
    port = rows[("OutgoingServer/default/o365-smtp", "spec.port")]
    assert port == {"resource": "OutgoingServer/default/o365-smtp", "file": "smtp.yaml",
                    "path": "spec.port", "value": 587, "reason": "SMTP with security starttls"}
    assert rows[("OutgoingServer/gov/graph-us", "spec.auth.tokenUrl")]["value"] == (
        "https://login.microsoftonline.us/agency.onmicrosoft.us/oauth2/v2.0/token")


KNOCK_ON_SERVERS = """\
apiVersion: reconciler.dev/v1
kind: OutgoingServer
metadata: {name: hr, namespace: knock}
spec: {email: hr@b.example, replyTo: s@b.example, host: smtp.b.example}
---
apiVersion: reconciler.dev/v1
kind: OutgoingEmailRule
metadata: {name: to-main, namespace: knock}
spec: {module: request, order: 1, server: main}
---
apiVersion: reconciler.dev/v1
kind: OutgoingEmailRule
metadata: {name: to-typo, namespace: knock}
spec: {module: change, order: 1, server: hr-typo}
"""


@pytest.mark.parametrize("primary", [
    # a tab: the file does not load at all
    "apiVersion: reconciler.dev/v1\nkind: OutgoingServer\nmetadata: {name: main, namespace: "
    "knock}\nspec:\n\temail: a@b.example\n  primary: true\n",
    # loads as YAML, but the model refuses it
    "apiVersion: reconciler.dev/v1\nkind: OutgoingServer\nmetadata: {name: main, namespace: "
    "knock}\nspec: {email: a@b.example, host: smtp.b.example, port: 99999, primary: true}\n",
])
def test_the_root_cause_comes_first_and_its_knock_on_errors_are_left_out(
    tmp_path: Path, primary: str
) -> None:
    (tmp_path / "a-servers.yaml").write_text(KNOCK_ON_SERVERS)
    (tmp_path / "b-primary.yaml").write_text(primary)
    result = invoke(str(tmp_path))
    assert result.exit_code == 1
    first = result.output.splitlines()[0]
    assert first.startswith("b-primary.yaml:"), result.output
    assert "tab character" in first or "99999 is above the maximum" in first
    # "no primary" and "main does not exist" only follow from the broken file ...
    assert "no enabled primary" not in result.output
    assert "'main' does not exist" not in result.output
    # ... a reference the broken file cannot explain is still reported.
    assert "OutgoingServer 'hr-typo' does not exist in namespace 'knock'" in result.output
    assert result.output.endswith("invalid: 2 errors, 0 warnings, 3 resources\n")
