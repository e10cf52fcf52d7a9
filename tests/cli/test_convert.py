"""`reconcile convert` (SPEC C9): older apiVersions rewritten in place, everything else kept."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from reconciler.cli.main import cli
from reconciler.policy.validate import validate_path

OLD = textwrap.dedent("""\
    # yaml-language-server: $schema=../../schemas/reconciler.json
    # Office 365 with the field names of v1alpha1.
    apiVersion: "reconciler.dev/v1alpha1"
    kind: OutgoingServer
    metadata:
      name: o365-hr
      namespace: acme
      labels: {env: 'prod'}
    spec:
      email: hr-desk@acme.example
      replyTo: hr-support@acme.example
      protocol: smtp
      host: smtp.office365.com
      security: starttls
      auth:
        type: oauth2
        provider: microsoft
        tenantId: acme.onmicrosoft.com   # the Entra tenant
        clientId: "3f2a9c1e-0b7d-4e55-9a61-5d2c8e7f1a01"
        authorizationUrl: https://login.microsoftonline.com/acme/oauth2/v2.0/authorize
        clientSecret: {secretRef: env:ACME_O365_SECRET}

      # the one that sends when no rule matches
      primary: true
    ---
    # A current document in the same file stays exactly as written.
    apiVersion: reconciler.dev/v1
    kind: RecipientFilter
    metadata:
      name: hr-blocklist
      namespace: acme
    spec:
      type: ignore
      emails:
      - all-staff@acme.example
    """)

CURRENT = textwrap.dedent("""\
    # yaml-language-server: $schema=../../schemas/reconciler.json
    apiVersion: reconciler.dev/v1
    kind: RecipientFilter
    metadata:
      name: corp-only
      namespace: acme
    spec:
      type:   allow          # odd spacing that a round trip would change
      domains: [ acme.example ]
    """)


def convert(*args: str) -> Result:
    return CliRunner().invoke(cli, ["convert", *args])


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "servers.yaml").write_text(OLD, encoding="utf-8")
    (tmp_path / "acme" / "filters.yaml").write_text(CURRENT, encoding="utf-8")
    return tmp_path


def test_converts_in_place_and_keeps_comments_quotes_and_order(repo: Path) -> None:
    result = convert(str(repo))

    assert result.exit_code == 0, result.output
    text = (repo / "acme" / "servers.yaml").read_text(encoding="utf-8")
    expected = (
        OLD.replace('"reconciler.dev/v1alpha1"', '"reconciler.dev/v1"')
        # ruamel keeps the comment's column, so the shorter key gets two more spaces
        .replace("tenantId: acme.onmicrosoft.com   #", "tenant: acme.onmicrosoft.com     #")
        .replace(
            "    clientSecret: {secretRef: env:ACME_O365_SECRET}\n",
            "    clientSecret: {secretRef: env:ACME_O365_SECRET}\n"
            "    tokenUrl: https://login.microsoftonline.com/acme/oauth2/v2.0/token\n",
        )
    )
    assert text == expected


def test_reports_what_was_converted(repo: Path) -> None:
    result = convert(str(repo))

    servers = repo / "acme" / "servers.yaml"
    assert f"{servers}: converted 1 document(s)" in result.output
    assert (f"{servers}:3  OutgoingServer/acme/o365-hr: converted from reconciler.dev/v1alpha1 "
            "to reconciler.dev/v1") in result.output
    assert "renamed spec.auth.tenantId to spec.auth.tenant" in result.output
    assert "filled spec.auth.tokenUrl = https://login.microsoftonline.com/acme/oauth2/v2.0/token" \
        in result.output
    assert "1 file(s) converted, 1 unchanged" in result.output


def test_converted_file_validates_without_conversion_notice(repo: Path) -> None:
    convert(str(repo))

    result = validate_path(repo / "acme" / "servers.yaml")
    codes = {d.code for d in result.diagnostics}
    assert "converted" not in codes
    assert not [d for d in result.diagnostics.errors if d.code.startswith("schema")]
    server = next(r for r in result.resources if r.model.kind == "OutgoingServer")
    assert server.model.spec.auth.tenant == "acme.onmicrosoft.com"


def test_files_without_older_versions_are_byte_identical(repo: Path) -> None:
    filters = repo / "acme" / "filters.yaml"
    before = filters.read_bytes()
    mtime = filters.stat().st_mtime_ns

    convert(str(repo))

    assert filters.read_bytes() == before
    assert filters.stat().st_mtime_ns == mtime


def test_second_run_changes_nothing(repo: Path) -> None:
    convert(str(repo))
    once = (repo / "acme" / "servers.yaml").read_bytes()

    result = convert(str(repo))

    assert result.exit_code == 0
    assert "0 file(s) converted, 2 unchanged" in result.output
    assert (repo / "acme" / "servers.yaml").read_bytes() == once


def test_check_reports_and_exits_1_without_writing(repo: Path) -> None:
    before = (repo / "acme" / "servers.yaml").read_bytes()

    result = convert(str(repo), "--check")

    assert result.exit_code == 1
    assert "would convert 1 document(s)" in result.output
    assert "1 file(s) would be converted" in result.output
    assert (repo / "acme" / "servers.yaml").read_bytes() == before


def test_check_exits_0_when_everything_is_current(repo: Path) -> None:
    convert(str(repo))

    result = convert(str(repo), "--check")

    assert result.exit_code == 0, result.output
    assert "0 file(s) would be converted, 2 unchanged" in result.output


def test_modeline_before_an_explicit_document_start_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "one.yaml"
    path.write_text(
        "# yaml-language-server: $schema=schemas/reconciler.json\n"
        "---\n"
        "apiVersion: reconciler.dev/v1alpha1\n"
        "kind: ProxyServer\n"
        "metadata: {name: egress}\n"
        "spec: {host: proxy.example, port: 3128}\n"
        "---\n"
        "# an empty document at the end\n",
        encoding="utf-8",
    )

    result = convert(str(path))

    assert result.exit_code == 0, result.output
    assert path.read_text(encoding="utf-8") == (
        "# yaml-language-server: $schema=schemas/reconciler.json\n"
        "---\n"
        "apiVersion: reconciler.dev/v1\n"
        "kind: ProxyServer\n"
        "metadata: {name: egress}\n"
        "spec: {host: proxy.example, port: 3128}\n"
        "---\n"
        "# an empty document at the end\n"
    )


def test_crlf_line_ends_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "win.yaml"
    path.write_bytes(b"apiVersion: reconciler.dev/v1alpha1\r\nkind: ProxyServer\r\n"
                     b"metadata:\r\n  name: egress\r\n")

    convert(str(path))

    assert path.read_bytes() == (b"apiVersion: reconciler.dev/v1\r\nkind: ProxyServer\r\n"
                                 b"metadata:\r\n  name: egress\r\n")


def test_syntax_error_names_the_position_and_leaves_the_file_alone(repo: Path) -> None:
    broken = repo / "acme" / "broken.yaml"
    text = OLD.replace("  protocol: smtp\n", "  protocol: [smtp\n")
    broken.write_text(text, encoding="utf-8")

    result = convert(str(repo))

    assert result.exit_code == 1
    assert f"{broken}:13:" in result.stderr
    assert "error:" in result.stderr
    assert "file left unchanged" in result.stderr
    assert "Traceback" not in result.output
    assert broken.read_text(encoding="utf-8") == text
    # the other files are still converted in the same run
    assert "apiVersion: \"reconciler.dev/v1\"" in (repo / "acme" / "servers.yaml").read_text()
    assert not list(repo.rglob("*.tmp"))


def test_unreadable_file_is_one_message(repo: Path) -> None:
    bad = repo / "acme" / "latin1.yaml"
    bad.write_bytes(b"apiVersion: reconciler.dev/v1alpha1\nkind: ProxyServer\n# caf\xe9\n")

    result = convert(str(repo), "--check")

    assert result.exit_code == 1
    assert f"{bad}:3:6: error: not UTF-8 text; file left unchanged" in result.stderr
    assert "Traceback" not in result.output


def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    result = convert(str(tmp_path / "nope"))

    assert result.exit_code == 2
    assert "no such file or directory" in result.output


def test_check_exit_code_of_the_installed_command(repo: Path) -> None:
    """The real entry point, not only click's test runner, must exit 1 for CI."""
    command = [sys.executable, "-c", "from reconciler.cli.main import main; main()"]

    pending = subprocess.run([*command, "convert", "--check", str(repo)], capture_output=True,
                             text=True, check=False)
    subprocess.run([*command, "convert", str(repo)], capture_output=True, check=True)
    done = subprocess.run([*command, "convert", "--check", str(repo)], capture_output=True,
                          text=True, check=False)

    assert pending.returncode == 1, pending.stdout + pending.stderr
    assert done.returncode == 0, done.stdout + done.stderr
