"""`reconcile secret` (SPEC C5): keygen, encrypt, check; no command ever prints a secret."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.fernet import Fernet

from reconciler.cli.main import cli
from reconciler.config.secrets import ENC_PREFIX, ENV_KEY, ENV_KEY_FILE, resolve

PLAINTEXT = "Tr0ub4dor&3-plaintext"  # looked for in every output: it must never appear

SERVER = textwrap.dedent("""\
    apiVersion: reconciler.dev/v1
    kind: OutgoingServer
    metadata:
      name: relay
      namespace: acme
    spec:
      email: desk@acme.example
      replyTo: desk@acme.example
      host: smtp.acme.example
      security: starttls
      auth:
        type: basic
        password: {secretRef: env:BENCH_SMTP_PASSWORD}
      primary: true
    ---
    apiVersion: reconciler.dev/v1
    kind: ProxyServer
    metadata:
      name: egress
      namespace: acme
    spec:
      host: proxy.acme.example
      port: 3128
      password: {secretRef: file:%(secret_file)s}
    """)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (ENV_KEY, ENV_KEY_FILE, "BENCH_SMTP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["secret", *args], input=input)


@pytest.fixture()
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RECONCILE_SECRET_DIRS", str(tmp_path))  # file: is confined (S2)
    secret_file = tmp_path / "proxy-password"
    secret_file.write_text(PLAINTEXT + "\n", encoding="utf-8")
    config = tmp_path / "config"
    config.mkdir()
    (config / "servers.yaml").write_text(SERVER % {"secret_file": secret_file},
                                         encoding="utf-8")
    return config


def test_keygen_prints_a_valid_key_and_where_to_store_it() -> None:
    result = run("keygen")

    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    Fernet(key.encode())  # raises if it is not a valid key
    assert ENV_KEY in result.stderr
    assert ENV_KEY_FILE in result.stderr
    assert run("keygen").stdout.strip() != key


def test_keygen_out_creates_a_private_file_and_does_not_print_the_key(tmp_path: Path) -> None:
    out = tmp_path / "secret.key"

    result = run("keygen", "--out", str(out))

    assert result.exit_code == 0, result.output
    key = out.read_text(encoding="ascii").strip()
    Fernet(key.encode())
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert key not in result.output
    assert f"{ENV_KEY_FILE}={out}" in result.output


def test_keygen_out_never_overwrites_a_key(tmp_path: Path) -> None:
    out = tmp_path / "secret.key"
    out.write_text("old-key\n", encoding="ascii")

    result = run("keygen", "--out", str(out))

    assert result.exit_code == 1
    assert "refusing to overwrite" in result.output
    assert out.read_text(encoding="ascii") == "old-key\n"


def test_encrypt_from_stdin_gives_a_reference_that_resolves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv(ENV_KEY, key)

    result = run("encrypt", input=PLAINTEXT + "\n")

    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    assert line.startswith("{secretRef: " + ENC_PREFIX) and line.endswith("}")
    reference = line.removeprefix("{secretRef: ").removesuffix("}")
    assert resolve(reference) == PLAINTEXT
    assert PLAINTEXT not in result.output


def test_encrypt_with_a_key_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    assert run("keygen", "--out", str(key_file)).exit_code == 0
    monkeypatch.setenv(ENV_KEY_FILE, str(key_file))

    result = run("encrypt", input=PLAINTEXT)

    reference = result.stdout.strip().removeprefix("{secretRef: ").removesuffix("}")
    assert resolve(reference) == PLAINTEXT


def test_encrypt_without_a_key_says_how_to_get_one() -> None:
    result = run("encrypt", input=PLAINTEXT)

    assert result.exit_code == 1
    assert ENV_KEY in result.output and "keygen" in result.output
    assert PLAINTEXT not in result.output


def test_encrypt_with_a_malformed_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KEY, "not-a-key")

    result = run("encrypt", input=PLAINTEXT)

    assert result.exit_code == 1
    assert "not a valid key" in result.output
    assert PLAINTEXT not in result.output and "not-a-key" not in result.output


def test_encrypt_refuses_an_empty_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KEY, Fernet.generate_key().decode())

    result = run("encrypt", input="\n")

    assert result.exit_code == 1
    assert "empty" in result.output


def test_encrypt_takes_no_value_argument() -> None:
    result = run("encrypt", PLAINTEXT)

    assert result.exit_code == 2  # usage error: the value is never accepted from argv


def test_check_names_a_missing_variable_and_fails(repo: Path) -> None:
    result = run("check", str(repo))

    assert result.exit_code == 1
    assert ("servers.yaml:13:15  OutgoingServer/acme/relay  spec.auth.password  error: "
            "env:BENCH_SMTP_PASSWORD: environment variable BENCH_SMTP_PASSWORD is not set"
            ) in result.output
    assert "2 secret reference(s): 1 resolved, 1 cannot be resolved" in result.output
    assert PLAINTEXT not in result.output


def test_check_succeeds_when_set_and_never_prints_values(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENCH_SMTP_PASSWORD", PLAINTEXT)

    result = run("check", str(repo), "--verbose")

    assert result.exit_code == 0, result.output
    assert "2 secret reference(s): 2 resolved, 0 cannot be resolved" in result.output
    assert "spec.auth.password  ok: env:BENCH_SMTP_PASSWORD" in result.output
    assert PLAINTEXT not in result.output


def test_check_reports_an_unreadable_file_and_an_empty_value(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENCH_SMTP_PASSWORD", "")
    (tmp_path / "proxy-password").unlink()

    result = run("check", str(repo))

    assert result.exit_code == 1
    assert "spec.auth.password  error: env:BENCH_SMTP_PASSWORD: resolves to an empty value" \
        in result.output
    assert "ProxyServer/acme/egress  spec.password  error: file:" in result.output
    assert "No such file or directory" in result.output


def test_check_encrypted_values_with_right_and_wrong_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Fernet.generate_key()
    monkeypatch.setenv(ENV_KEY, key.decode())
    reference = run("encrypt", input=PLAINTEXT).stdout.strip()
    config = tmp_path / "enc"
    config.mkdir()
    (config / "proxy.yaml").write_text(textwrap.dedent(f"""\
        apiVersion: reconciler.dev/v1
        kind: ProxyServer
        metadata: {{name: egress}}
        spec:
          host: proxy.example
          port: 3128
          password: {reference}
        """), encoding="utf-8")

    ok = run("check", str(config), "-v")
    monkeypatch.setenv(ENV_KEY, Fernet.generate_key().decode())
    wrong = run("check", str(config))
    monkeypatch.delenv(ENV_KEY)
    missing = run("check", str(config))

    assert ok.exit_code == 0, ok.output
    assert wrong.exit_code == 1
    assert "wrong key or damaged value" in wrong.output
    assert missing.exit_code == 1
    assert "needs a key" in missing.output
    ciphertext = reference.removeprefix("{secretRef: enc:v1:").removesuffix("}")
    for result in (ok, wrong, missing):
        assert PLAINTEXT not in result.output
        assert ciphertext not in result.output  # shown only as a fingerprint


def test_check_reports_a_malformed_reference_without_echoing_it(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(textwrap.dedent(f"""\
        apiVersion: reconciler.dev/v1
        kind: ProxyServer
        metadata: {{name: egress}}
        spec:
          host: proxy.example
          port: 3128
          password: {{secretRef: {PLAINTEXT}}}
        """), encoding="utf-8")

    result = run("check", str(tmp_path))

    assert result.exit_code == 1
    assert "unknown secret reference scheme" in result.output
    assert PLAINTEXT not in result.output


def test_check_exit_codes_of_the_installed_command(repo: Path) -> None:
    command = [sys.executable, "-c", "from reconciler.cli.main import main; main()",
               "secret", "check", str(repo)]
    env = {k: v for k, v in os.environ.items() if k != "BENCH_SMTP_PASSWORD"}

    missing = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    present = subprocess.run(command, capture_output=True, text=True, check=False,
                             env={**env, "BENCH_SMTP_PASSWORD": PLAINTEXT})

    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert present.returncode == 0, present.stdout + present.stderr
    assert PLAINTEXT not in missing.stdout + missing.stderr + present.stdout + present.stderr
