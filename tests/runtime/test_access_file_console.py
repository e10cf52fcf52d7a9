"""The access file's ``console:`` and ``oidc:`` sections: read into the daemon's console
settings (the same fields as its ``--console*`` options), errors at file:line:col."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from reconciler.runtime.access_file import AccessFileError, load_access_file


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "access.yaml"
    path.write_text(text)
    return path


def test_the_console_sections_give_the_console_settings(tmp_path: Path) -> None:
    parsed = load_access_file(_write(tmp_path, """\
console:
  enabled: true
  sessionKeyRef: env:CONSOLE_SESSION_KEY
  sessionHours: 2
  publicUrl: https://reconcile.example
oidc:
  issuer: https://login.example
  clientId: reconcile-console
  clientSecretRef: file:/run/secrets/oidc
  scopes: [openid, email]
  rolesClaim: roles
  namespacesClaim: desks
  roles: {desk-ops: operator, auditors: auditor}
  label: Example Login
"""))
    assert parsed.console_settings() == {
        "console": True, "console_session_key_ref": "env:CONSOLE_SESSION_KEY",
        "console_session_hours": 2.0, "console_public_url": "https://reconcile.example",
        "console_oidc_issuer": "https://login.example",
        "console_oidc_client_id": "reconcile-console",
        "console_oidc_client_secret_ref": "file:/run/secrets/oidc",
        "console_oidc_scopes": ("openid", "email"), "console_oidc_roles_claim": "roles",
        "console_oidc_namespaces_claim": "desks",
        "console_oidc_role_map": ("desk-ops=operator", "auditors=auditor"),
        "console_oidc_label": "Example Login"}


def test_left_out_sections_and_fields_give_nothing(tmp_path: Path) -> None:
    assert load_access_file(_write(tmp_path, "tokens: []\n")).console_settings() == {}
    only = load_access_file(_write(tmp_path, "console:\n  enabled: false\n"))
    assert only.console_settings() == {"console": False}


@pytest.mark.parametrize(("text", "expected"), [
    ("console:\n  enabeld: true\n", r"access.yaml:2:3: console.enabeld: "),
    ("oidc:\n  issuer: https://login.example\n  roles: {desk-ops: operater}\n",
     r"access.yaml:3:21: oidc.roles.desk-ops: .*did you mean 'operator'"),
    ("console:\n  sessionHours: 0\n", r"access.yaml:2:17: console.sessionHours: "),
])
def test_mistakes_are_named_with_file_line_column_and_field(tmp_path: Path, text: str,
                                                            expected: str) -> None:
    with pytest.raises(AccessFileError, match=expected):
        load_access_file(_write(tmp_path, text))


def test_a_literal_secret_is_refused_without_echoing_it(tmp_path: Path) -> None:
    literal = secrets.token_hex(12)  # generated; not a reference
    with pytest.raises(AccessFileError) as caught:
        load_access_file(_write(tmp_path, f"oidc:\n  clientSecretRef: {literal}\n"))
    assert "access.yaml:2:20: oidc.clientSecretRef" in str(caught.value)
    assert literal not in str(caught.value)
