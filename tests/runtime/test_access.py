"""SPEC S3 below the API: roles and namespace scopes of a Principal, the tokens that
identify one, and the access file that gives them (errors at file:line:col)."""

from __future__ import annotations

import dataclasses
import json
import secrets
from pathlib import Path

import pytest

from reconciler.daemon.child import _settings
from reconciler.runtime.access import Forbidden, Principal, Role, TokenSpec, full_access
from reconciler.runtime.access_file import AccessFileError, load_access_file
from reconciler.runtime.api_tokens import BearerTokens
from reconciler.runtime.settings import DaemonSettings


def test_roles_grant_what_the_brief_says() -> None:
    viewer = Principal.of("v", [Role.VIEWER])
    assert viewer.has(Role.AUDITOR) and not viewer.has(Role.OPERATOR)
    assert not viewer.has(Role.SENDER)
    operator = Principal.of("o", ["operator"])
    assert operator.has(Role.VIEWER) and not operator.has(Role.SENDER)
    assert all(full_access("a").has(role) for role in Role)
    with pytest.raises(Forbidden, match="this needs the operator role; v has viewer"):
        viewer.require(Role.OPERATOR)


def test_namespaces_limit_what_a_principal_sees() -> None:
    acme = Principal.of("a", [Role.VIEWER], ["acme"])
    assert acme.sees("acme") and not acme.sees("default")
    assert acme.visible(["default", "acme"]) == ["acme"]
    assert full_access("x").visible(["default", "acme"]) == ["default", "acme"]


def test_tokens_identify_their_principal(monkeypatch: pytest.MonkeyPatch) -> None:
    bare, limited = secrets.token_hex(16), secrets.token_hex(16)
    monkeypatch.setenv("RECONCILE_TEST_BARE", bare)
    monkeypatch.setenv("RECONCILE_TEST_LIMITED", limited)
    tokens = BearerTokens(["env:RECONCILE_TEST_BARE"], [TokenSpec(
        "env:RECONCILE_TEST_LIMITED", (Role.SENDER,), ("acme",), "acme-desk")])
    assert tokens.identify(bare) == full_access("api token env:RECONCILE_TEST_BARE")
    assert tokens.identify(limited) == Principal.of("api token acme-desk", [Role.SENDER],
                                                    ["acme"])
    assert tokens.identify(limited + "x") is None
    assert tokens.identify("ünïcode") is None
    assert limited not in repr(tokens) and bare not in repr(tokens)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "access.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_access_file_gives_roles_namespaces_and_the_metrics_setting(
        tmp_path: Path) -> None:
    parsed = load_access_file(_write(tmp_path, """\
tokens:
  - name: acme-desk
    secretRef: env:ACME_DESK_TOKEN
    role: [sender, viewer]
    namespaces: [acme]
  - name: ops
    secretRef: file:/run/secrets/ops
    role: operator
metrics:
  requireToken: false
console:
  enabled: true
"""))
    assert [t.spec() for t in parsed.tokens] == [
        TokenSpec("env:ACME_DESK_TOKEN", (Role.SENDER, Role.VIEWER), ("acme",), "acme-desk"),
        TokenSpec("file:/run/secrets/ops", (Role.OPERATOR,), None, "ops")]
    assert parsed.metrics is not None and parsed.metrics.require_token is False
    assert parsed.console_settings() == {"console": True}  # more: test_access_file_console


def test_access_file_errors_name_file_line_column_field_and_fix(tmp_path: Path) -> None:
    literal = secrets.token_hex(16)
    path = _write(tmp_path, f"""\
tokens:
  - name: desk
    secretRef: {literal}
    role: operatr
  - name: desk
    secretRef: env:B
    role: viewer
    namespaces: []
metrix: {{}}
""")
    with pytest.raises(AccessFileError) as caught:
        load_access_file(path)
    lines = str(caught.value).splitlines()
    assert f"{path}:3:16: tokens.0.secretRef:" in lines[0]
    assert any(line.startswith(f"{path}:4:11: tokens.0.role") and "did you mean 'operator'"
               in line for line in lines)
    assert any(line.startswith(f"{path}:8:17: tokens.1.namespaces") for line in lines)
    assert any(line.startswith(f"{path}:9:1: metrix: unknown field 'metrix'") and
               "did you mean 'metrics'" in line for line in lines)
    assert literal not in str(caught.value)


def test_duplicate_token_names_and_bad_yaml_are_errors(tmp_path: Path) -> None:
    path = _write(tmp_path, "tokens:\n  - {name: a, secretRef: env:A, role: admin}\n"
                            "  - {name: a, secretRef: env:B, role: admin}\n")
    with pytest.raises(AccessFileError, match=r"access.yaml:3:\d+: tokens.1.name: token "
                       r"name 'a' is already used by tokens\[0\]"):
        load_access_file(path)
    with pytest.raises(AccessFileError, match=r"access.yaml:3:1: YAML syntax error"):
        load_access_file(_write(tmp_path, "tokens:\n  - [\n"))
    with pytest.raises(AccessFileError, match="one YAML mapping"):
        load_access_file(_write(tmp_path, "- a\n"))
    with pytest.raises(AccessFileError, match="cannot read the access file"):
        load_access_file(tmp_path / "missing.yaml")


def test_supervised_children_get_the_token_specs() -> None:
    settings = DaemonSettings(store_url="sqlite:///x.db", api_tokens=("env:A",), api_access=(
        TokenSpec("env:B", (Role.SENDER, Role.VIEWER), ("acme",), "desk"),
        TokenSpec("env:C", (Role.ADMIN,), None, None)), metrics_require_token=False)
    # what the supervisor hands a child, through JSON
    again = _settings(json.loads(json.dumps(dataclasses.asdict(settings))))
    assert again == settings
    assert again.metrics_need_token is False
    assert "env:B" in settings.operator_refs()


def test_metrics_need_a_token_by_default_once_any_token_exists() -> None:
    assert not DaemonSettings(store_url="x").metrics_need_token
    assert DaemonSettings(store_url="x", api_tokens=("env:A",)).metrics_need_token
    assert DaemonSettings(store_url="x", metrics_require_token=True).metrics_need_token
