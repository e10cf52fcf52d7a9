"""Secret references confined to operator-allowed places (SPEC S2).

A pull request controls the config, so a `file:` or `env:` reference in it
must not reach a file or variable the operator did not set aside for mail
secrets: validate reports it at its line, and resolution refuses it before
anything is read, whatever wrote the store.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from reconciler.config.diagnostics import Diagnostic
from reconciler.config.secrets import SecretError, resolve, resolve_operator
from reconciler.daemon.app import Daemon
from reconciler.policy.validate import validate_path
from reconciler.runtime.settings import DaemonSettings

from .helpers import EXAMPLES, describe, validate_files

VALUE = "forbidden-VALUE-must-never-travel-5150"
OWN_NAMES = ("RECONCILE_TOKEN_KEY", "RECONCILE_SECRET_KEY", "RECONCILE_SECRET_KEY_FILE",
             "RECONCILE_STORE", "RECONCILE_TOKEN_KEY_REF", "PGPASSWORD")


@pytest.fixture(autouse=True)
def _operator_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RECONCILE_SECRET_DIRS", "RECONCILE_SECRET_ENV", "CREDENTIALS_DIRECTORY",
                 "RECONCILE_SECRET_KEY_FILE", "RECONCILE_TOKEN_KEY_REF"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(the one allowed secret directory, a directory beside it holding a secret)."""
    base = tmp_path.resolve()  # messages show canonical paths
    secrets, outside = base / "secrets", base / "outside"
    secrets.mkdir()
    outside.mkdir()
    (secrets / "ok").write_text("allowed-value\n")
    (outside / "secret").write_text(VALUE + "\n")
    monkeypatch.setenv("RECONCILE_SECRET_DIRS", str(secrets))
    return secrets, outside


def proxies(*refs: str) -> str:
    """One ProxyServer per reference; the reference of proxy N sits on line 5N+4."""
    docs = [f"""apiVersion: reconciler.dev/v1
kind: ProxyServer
metadata: {{name: p{i}}}
spec: {{host: proxy.b.example, port: 3128, password: {{secretRef: "{ref}"}}}}
""" for i, ref in enumerate(refs)]
    return "---\n".join(docs)


def errors(tmp_path: Path, *refs: str) -> list[Diagnostic]:
    result = validate_files(tmp_path / "config", {"proxies.yaml": proxies(*refs)})
    found = [d for d in result.diagnostics if d.code == "secret-place"]
    assert result.desired is None or not found, "a refused reference still gave a state"
    return found


def where(d: Diagnostic) -> tuple[str, int, int, str]:
    return Path(d.file).name, d.line, d.col, d.path


# -- validate -----------------------------------------------------------------------


def test_validate_refuses_files_outside_the_secret_dirs_at_their_line(
    tmp_path: Path, places: tuple[Path, Path]
) -> None:
    secrets, outside = places
    (secrets / "link").symlink_to(outside / "secret")
    (secrets / "subdir").symlink_to(outside, target_is_directory=True)
    found = errors(tmp_path, f"file:{secrets}/ok", "file:/etc/shadow",
                   f"file:{secrets}/../outside/secret", f"file:{secrets}/link",
                   f"file:{secrets}/subdir/secret")

    assert [where(d) for d in found] == [
        ("proxies.yaml", line, 53, "spec.password") for line in (9, 14, 19, 24)], \
        describe(found)
    real = outside / "secret"
    assert [d.message for d in found] == [
        f"file:/etc/shadow is outside the secret directories ({secrets})",
        f"file:{secrets}/../outside/secret (which resolves to {real}) is outside the "
        f"secret directories ({secrets})",
        f"file:{secrets}/link (which resolves to {real}) is outside the secret "
        f"directories ({secrets})",
        f"file:{secrets}/subdir/secret (which resolves to {real}) is outside the secret "
        f"directories ({secrets})",
    ]
    assert all("add its directory to RECONCILE_SECRET_DIRS" in d.hint for d in found)
    assert all(VALUE not in d.message + d.hint for d in found)


def test_the_default_secret_dirs_and_how_to_widen_them(tmp_path: Path) -> None:
    [found] = errors(tmp_path, "file:/run/secrets/smtp", "file:/etc/reconciler/secrets/a",
                     "file:/run/secrets/../../etc/shadow")
    assert found.message == ("file:/run/secrets/../../etc/shadow (which resolves to "
                             "/etc/shadow) is outside the secret directories (/run/secrets, "
                             "/etc/reconciler/secrets)")
    assert found.hint.startswith("move the file below one of them, or set "
                                 "RECONCILE_SECRET_DIRS")
    examples = validate_path(EXAMPLES)  # env: names and /run/secrets files: all allowed
    assert examples.ok, describe(examples.diagnostics)


@pytest.mark.parametrize("pattern", [None, "*", "RECONCILE_*,PG*"])
def test_validate_refuses_the_projects_own_variables_whatever_the_pattern(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pattern: str | None
) -> None:
    if pattern:
        monkeypatch.setenv("RECONCILE_SECRET_ENV", pattern)
    found = errors(tmp_path, "env:ACME_SMTP_PASSWORD" if pattern != "RECONCILE_*,PG*"
                   else "env:PGHOST", *(f"env:{name}" for name in OWN_NAMES))
    assert [(d.line, d.path) for d in found] == [
        (4 + 5 * i, "spec.password") for i in range(1, len(OWN_NAMES) + 1)], describe(found)
    for name, d in zip(OWN_NAMES, found, strict=True):
        assert d.message.startswith(f"env:{name} is one of reconciler's own settings")
        assert "never go to a mail server" in d.message
        assert "a variable of its own" in d.hint


def test_env_names_outside_the_configured_pattern(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILE_SECRET_ENV", "DESK_*, MAIL_SMTP_?")
    found = errors(tmp_path, "env:DESK_SMTP_PASSWORD", "env:MAIL_SMTP_1", "env:AWS_SECRET",
                   "env:desk_lower")
    assert [(d.line, d.message) for d in found] == [
        (14, "env:AWS_SECRET does not match RECONCILE_SECRET_ENV (DESK_*,MAIL_SMTP_?)"),
        (19, "env:desk_lower does not match RECONCILE_SECRET_ENV (DESK_*,MAIL_SMTP_?)"),
    ]
    assert found[0].hint == ("rename the variable to match, or set RECONCILE_SECRET_ENV "
                             "(comma-separated glob patterns) to include it")


def test_a_relative_secret_dir_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILE_SECRET_DIRS", f"/run/secrets{os.pathsep}secrets")
    [found] = errors(tmp_path, "file:/run/secrets/smtp")
    assert found.message == ("RECONCILE_SECRET_DIRS entry 'secrets' is not an absolute path; "
                             "give the secret directories as absolute paths separated by "
                             f"{os.pathsep!r}")
    with pytest.raises(SecretError, match="RECONCILE_SECRET_DIRS entry 'secrets'"):
        resolve("file:/run/secrets/smtp")


# -- resolution: refused before anything is read ---------------------------------------


@pytest.mark.parametrize("ref", [
    "file:{outside}/secret",
    "file:{secrets}/../outside/secret",
    "file:{secrets}/link",
    "file:{secrets}/subdir/secret",
])
def test_resolve_refuses_files_outside_even_through_dots_and_symlinks(
    places: tuple[Path, Path], ref: str
) -> None:
    secrets, outside = places
    (secrets / "link").symlink_to(outside / "secret")
    (secrets / "subdir").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SecretError) as info:
        resolve(ref.format(secrets=secrets, outside=outside))
    assert "is outside the secret directories" in str(info.value)
    assert VALUE not in str(info.value)
    assert resolve(f"file:{secrets}/ok") == "allowed-value"
    assert resolve_operator(f"file:{outside}/secret") == VALUE  # the operator's own: unconfined


def test_a_refused_file_is_never_opened(places: tuple[Path, Path]) -> None:
    """A FIFO blocks whoever opens it for reading until a writer comes: a resolve that
    returns at once, with the FIFO still without a reader, never touched it."""
    secrets, outside = places
    fifo = outside / "fifo"
    os.mkfifo(fifo)
    (secrets / "fifo-link").symlink_to(fifo)
    outcome: list[BaseException | str] = []

    def attempt() -> None:
        try:
            outcome.append(resolve(f"file:{secrets}/fifo-link"))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout=60)
    if thread.is_alive():
        # It opened the FIFO and waits for a writer: release it, then fail.
        with open(fifo, "w") as writer:
            writer.write(VALUE)
        thread.join(timeout=60)
        pytest.fail(f"resolve opened {fifo} outside the secret directories")
    [result] = outcome
    assert isinstance(result, SecretError) and "outside the secret directories" in str(result)


@pytest.mark.parametrize("name", OWN_NAMES)
def test_resolve_refuses_the_projects_own_variables(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("RECONCILE_SECRET_ENV", "*")
    monkeypatch.setenv(name, VALUE)
    with pytest.raises(SecretError) as info:
        resolve(f"env:{name}")
    assert str(info.value).startswith(f"env:{name} is one of reconciler's own settings")
    assert VALUE not in str(info.value)
    # The operator's own references (API tokens, token key) still resolve it.
    assert resolve_operator(f"env:{name}") == VALUE


def test_resolve_refuses_names_outside_the_pattern(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILE_SECRET_ENV", "DESK_*")
    monkeypatch.setenv("DESK_SMTP_PASSWORD", "allowed-value")
    monkeypatch.setenv("HOME_SECRET", VALUE)
    assert resolve("env:DESK_SMTP_PASSWORD") == "allowed-value"
    with pytest.raises(SecretError, match="env:HOME_SECRET does not match"):
        resolve("env:HOME_SECRET")


def test_the_daemons_own_secrets_are_refused_even_inside_the_allowed_places(
    tmp_path: Path, places: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An API token or the token key kept under /run/secrets, or in a variable the
    pattern allows, is still not a mail server's password."""
    secrets, _ = places
    (secrets / "token.key").write_text(VALUE)
    (secrets / "enc.key").write_text(VALUE)
    monkeypatch.setenv("S2_TEST_DESK_API_TOKEN", VALUE)
    monkeypatch.setenv("RECONCILE_SECRET_KEY_FILE", str(secrets / "enc.key"))
    Daemon(DaemonSettings(store_url="sqlite:///unused.db",
                          api_tokens=("env:S2_TEST_DESK_API_TOKEN",),
                          token_key_ref=f"file:{secrets}/token.key"))
    refs = ("env:S2_TEST_DESK_API_TOKEN", f"file:{secrets}/token.key",
            f"file:{secrets}/./enc.key")
    for ref in refs:
        with pytest.raises(SecretError, match="own") as info:
            resolve(ref)
        assert VALUE not in str(info.value)
    found = errors(tmp_path, *refs)
    assert [d.line for d in found] == [4, 9, 14], describe(found)
    assert resolve(f"file:{secrets}/ok") == "allowed-value"
