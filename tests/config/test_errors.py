"""config.errors: pydantic errors in plain words, at the key the user wrote (SPEC C4)."""

from __future__ import annotations

from pathlib import Path

from .helpers import Expect, assert_reported, describe, validate_files

SERVER = """\
apiVersion: reconciler.dev/v1
kind: OutgoingServer
metadata: {{name: {name}, namespace: {name}}}
spec:
  email: a@b.example
  replyTo: a@b.example
  host: smtp.b.example
  primary: true
{spec}"""


def _run(tmp_path: Path, spec: str) -> list[str]:
    result = validate_files(tmp_path, {"a.yaml": SERVER.format(name="s", spec=spec)})
    return [f"{d.location}  {d.path}: {d.message} | {d.hint}" for d in result.diagnostics]


def test_auth_type_typo_points_at_the_type(tmp_path: Path) -> None:
    result = validate_files(tmp_path, {"a.yaml": SERVER.format(
        name="s", spec="  auth: {type: oauth, clientId: x}\n")})
    assert_reported(result, [Expect(
        "a.yaml", 9, 16, "spec.auth.type",
        "'oauth' is not a known type; expected one of 'none', 'basic', 'oauth2'",
        hint="did you mean 'oauth2'?")])


def test_auth_without_type(tmp_path: Path) -> None:
    assert _run(tmp_path, "  auth: {password: {secretRef: env:X}}\n") == [
        "a.yaml:9:9  spec.auth: `type` is required here | "]


def test_union_branch_names_never_leak_into_paths(tmp_path: Path) -> None:
    out = _run(tmp_path, "  auth: {type: basic, username: '', password: {secretRef: env:X}}\n")
    assert out == ["a.yaml:9:33  spec.auth.username: must not be empty | "]


def test_limits_read_as_written(tmp_path: Path) -> None:
    out = _run(tmp_path, "  timeoutSeconds: 601\n  maxConcurrency: 0\n")
    assert out == [
        "a.yaml:9:19  spec.timeoutSeconds: 601 is above the maximum 600 | ",
        "a.yaml:10:19  spec.maxConcurrency: 0 is below the minimum 1 | ",
    ]


def test_values_of_secret_looking_fields_are_never_echoed(tmp_path: Path) -> None:
    out = _run(tmp_path, "  auth:\n    type: oauth2\n    clientId: x\n"
                         "    clientSecret: {secretRef: [s3cr3t-value]}\n")
    text = "\n".join(out)
    assert "s3cr3t-value" not in text
    assert "spec.auth.clientSecret.secretRef: expected text, got this value" in text


def test_unknown_field_without_close_match(tmp_path: Path) -> None:
    out = _run(tmp_path, "  frobnicate: 1\n")
    assert out == ["a.yaml:9:3  spec.frobnicate: unknown field 'frobnicate' | "
                   "remove it; see the schema in schemas/"]


def test_all_errors_of_one_document_are_reported(tmp_path: Path) -> None:
    result = validate_files(tmp_path, {"a.yaml": SERVER.format(
        name="s", spec="  port: 0\n  security: ssl\n  protocol: SMTP\n  enabled: perhaps\n")})
    found = {(d.path, d.message) for d in result.diagnostics}
    assert found == {
        ("spec.port", "0 is below the minimum 1"),
        ("spec.security", "'ssl' is not one of 'none', 'starttls' or 'tls'"),
        ("spec.protocol", "'SMTP' is not one of 'smtp', 'ews' or 'graph'"),
        ("spec.enabled", "'perhaps' is not a boolean"),
    }, describe(result.diagnostics)
