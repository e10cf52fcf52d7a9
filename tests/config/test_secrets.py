"""Secret references (SPEC C5): never a value in git, redacted everywhere, resolved on demand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from reconciler.config.models.auth import BasicAuth
from reconciler.config.sealing import new_key
from reconciler.config.secrets import (
    ENV_KEY,
    ENV_KEY_FILE,
    SecretError,
    SecretRef,
    encrypt,
    redact,
    redact_ref,
    resolve,
)

from .helpers import describe, validate_files

PLAINTEXT = "correct horse battery staple"


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    value = new_key()
    monkeypatch.setenv(ENV_KEY, value)
    monkeypatch.delenv(ENV_KEY_FILE, raising=False)
    return value


def test_redact_shows_env_and_file_names_and_fingerprints_ciphertext(key: str) -> None:
    token = encrypt(PLAINTEXT)
    data = {
        "host": "smtp.example.com",
        "auth": {"password": {"secretRef": "env:SMTP_PASSWORD"},
                 "clientSecret": SecretRef(secretRef="file:/run/secrets/client")},
        "list": [{"secretRef": token}, "plain"],
    }
    shown = redact(data)
    assert shown["host"] == "smtp.example.com"
    assert shown["auth"]["password"] == {"secretRef": "env:SMTP_PASSWORD"}
    assert shown["auth"]["clientSecret"] == {"secretRef": "file:/run/secrets/client"}
    enc = shown["list"][0]["secretRef"]
    assert enc.startswith("enc:v1:***") and len(enc) == len("enc:v1:***") + 8
    assert shown["list"][1] == "plain"
    text = json.dumps(shown)
    assert token[len("enc:v1:"):] not in text
    assert PLAINTEXT not in text
    # the same ciphertext always has the same fingerprint; a re-encryption a different one
    assert redact_ref(token) == enc
    assert redact_ref(encrypt(PLAINTEXT)) != enc
    assert redact_ref("Hunter2") == "***"


def test_secret_ref_repr_never_shows_a_value(key: str) -> None:
    token = encrypt(PLAINTEXT)
    ref = SecretRef(secretRef=token)
    for text in (repr(ref), str(ref), repr(BasicAuth(password=ref)), f"{ref}"):
        assert token[len("enc:v1:"):] not in text
        assert PLAINTEXT not in text
    assert repr(SecretRef(secretRef="env:SMTP_PASSWORD")) == "SecretRef(env:SMTP_PASSWORD)"
    assert ref.scheme == "enc"


def test_encrypt_resolve_round_trip(key: str) -> None:
    token = encrypt(PLAINTEXT)
    assert token.startswith("enc:v1:")
    assert PLAINTEXT not in token
    assert resolve(token) == PLAINTEXT
    assert resolve(SecretRef(secretRef=token)) == PLAINTEXT


def test_key_from_a_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(new_key() + "\n", encoding="utf-8")
    monkeypatch.delenv(ENV_KEY, raising=False)
    monkeypatch.setenv(ENV_KEY_FILE, str(key_file))
    assert resolve(encrypt(PLAINTEXT)) == PLAINTEXT


def test_wrong_key_is_a_secret_error_without_the_value(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = encrypt(PLAINTEXT)
    monkeypatch.setenv(ENV_KEY, new_key())
    with pytest.raises(SecretError) as info:
        resolve(token)
    message = str(info.value)
    assert message == f"cannot decrypt {redact_ref(token)}: wrong key or damaged value"
    assert PLAINTEXT not in message
    assert token[len("enc:v1:"):] not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_no_key_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KEY, raising=False)
    monkeypatch.delenv(ENV_KEY_FILE, raising=False)
    with pytest.raises(SecretError, match=f"set {ENV_KEY} or {ENV_KEY_FILE}"):
        encrypt(PLAINTEXT)


def test_missing_env_var_names_the_variable_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECONCILER_TEST_UNSET_SECRET", raising=False)
    with pytest.raises(SecretError) as info:
        resolve("env:RECONCILER_TEST_UNSET_SECRET")
    assert str(info.value) == "environment variable RECONCILER_TEST_UNSET_SECRET is not set"
    monkeypatch.setenv("RECONCILER_TEST_SET_SECRET", PLAINTEXT)
    assert resolve(SecretRef(secretRef="env:RECONCILER_TEST_SET_SECRET")) == PLAINTEXT


def test_file_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILE_SECRET_DIRS", str(tmp_path))  # file: is confined (S2)
    secret = tmp_path / "smtp"
    secret.write_text(PLAINTEXT + "\r\n", encoding="utf-8")
    assert resolve(f"file:{secret}") == PLAINTEXT
    with pytest.raises(SecretError) as info:
        resolve(f"file:{tmp_path / 'missing'}")
    assert str(info.value) == (
        f"cannot read secret file {tmp_path / 'missing'}: No such file or directory")


def test_literal_and_malformed_references_are_rejected_without_echo() -> None:
    for value in (PLAINTEXT, 12345, {"secretRef": PLAINTEXT}, {"secretRef": "enc:v1:not base64!"}):
        with pytest.raises(ValidationError) as info:
            SecretRef.model_validate(value)
        assert PLAINTEXT not in str(info.value.errors(include_input=False))
    with pytest.raises(SecretError, match=r"unsupported secret reference \*\*\*"):
        resolve(PLAINTEXT)


def test_validated_config_keeps_references_not_values(
    tmp_path: Path, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROXY_PASSWORD", PLAINTEXT)
    token = encrypt(PLAINTEXT)
    result = validate_files(tmp_path, {"a.yaml": f"""
        apiVersion: reconciler.dev/v1
        kind: ProxyServer
        metadata: {{name: env-proxy}}
        spec: {{host: proxy.b.example, port: 3128, password: {{secretRef: env:PROXY_PASSWORD}}}}
        ---
        apiVersion: reconciler.dev/v1
        kind: ProxyServer
        metadata: {{name: enc-proxy}}
        spec: {{host: proxy.b.example, port: 3128, password: {{secretRef: "{token}"}}}}
        """})
    assert result.ok, describe(result.diagnostics)
    assert result.desired is not None
    stored = json.dumps([r.body() for r in result.desired])
    assert PLAINTEXT not in stored
    assert "env:PROXY_PASSWORD" in stored
    assert token in stored  # ciphertext is safe in git and in the state store
