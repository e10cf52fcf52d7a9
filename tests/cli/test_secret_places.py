"""Secret references confined to operator-allowed places (SPEC S2), from the command
line: validate and `secret check` name the line, `live set` stores nothing, and a
server written to the store by other means never gets the value (real SMTP peer)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from config.helpers import forbidden_secret_file
from health.kit import USER, put_servers
from peers.smtp import SmtpPeer, free_port
from plan.kit import copy_examples

from reconciler.state import open_store

from .helpers_history import apply, assert_user_error, fingerprint, run

VALUE = "forbidden-VALUE-must-never-travel-7c7c"
TO = "jane@corp.example"
SHADOW = "file:/run/secrets/../../etc/shadow"
OUTGOING = "acme/outgoing-servers.yaml"


@pytest.fixture(autouse=True)
def _operator_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RECONCILE_SECRET_DIRS", "RECONCILE_SECRET_ENV", "CREDENTIALS_DIRECTORY",
                 "RECONCILE_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RECONCILE_TOKEN_KEY", VALUE)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """The examples with two secrets pointed at forbidden places."""
    root = copy_examples(tmp_path)
    path = root / OUTGOING
    text = path.read_text()
    for old, new in (("env:ACME_GMAIL_CLIENT_SECRET", "env:RECONCILE_TOKEN_KEY"),
                     ("file:/run/secrets/acme-o365-client-secret", SHADOW)):
        assert old in text
        text = text.replace(old, new)
    path.write_text(text)
    return root


def test_validate_names_file_line_and_field_and_stores_nothing(config: Path,
                                                                tmp_path: Path) -> None:
    result = run("validate", config, code=1)
    out = result.output
    assert (f"{OUTGOING}:22:19  spec.auth.clientSecret  error: env:RECONCILE_TOKEN_KEY is "
            "one of reconciler's own settings") in out
    assert (f"{OUTGOING}:47:19  spec.auth.clientSecret  error: {SHADOW} (which resolves to "
            "/etc/shadow) is outside the secret directories (/run/secrets, "
            "/etc/reconciler/secrets)") in out
    assert "set RECONCILE_SECRET_DIRS" in out
    assert "Traceback" not in out and VALUE not in out
    store = tmp_path / "state.db"
    assert run("apply", config, "--store", store, "--yes", code=1).exit_code == 1
    assert not store.exists() or fingerprint(str(store))[0] == 0


def test_secret_check_reports_the_same_refusals(config: Path) -> None:
    result = run("secret", "check", config, code=1)
    out = result.output
    assert (f"{OUTGOING}:22:19  OutgoingServer/acme/gmail-notifications  "
            "spec.auth.clientSecret  error: env:RECONCILE_TOKEN_KEY is one of reconciler's "
            "own settings") in out
    assert (f"{OUTGOING}:47:19  OutgoingServer/acme/o365-hr  spec.auth.clientSecret  "
            f"error: {SHADOW} (which resolves to /etc/shadow) is outside the secret "
            "directories") in out
    assert VALUE not in out and "Traceback" not in out


def test_live_set_refuses_and_writes_nothing(tmp_path: Path, store_url: str) -> None:
    apply(copy_examples(tmp_path), store_url)
    before = fingerprint(store_url)
    for ref in ("env:RECONCILE_TOKEN_KEY", SHADOW):
        result = run("live", "set", "OutgoingServer/acme/gmail-notifications",
                     "auth.clientSecret={secretRef: " + ref + "}", "--store", store_url,
                     code=None)
        assert_user_error(result, "cannot set OutgoingServer/acme/gmail-notifications",
                          f"spec.auth.clientSecret  error: {ref}")
        assert VALUE not in result.output
    assert fingerprint(store_url) == before


@pytest.mark.parametrize("where", ["env", "dots", "symlink"])
def test_a_server_written_by_other_means_never_gets_the_value(
    peer_factory: Callable[..., SmtpPeer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    where: str
) -> None:
    """The store holds what no validate saw (as if written by hand or an old release);
    test-connection resolves at AUTH and must refuse before the value leaves."""
    secrets = forbidden_secret_file(tmp_path, VALUE)
    monkeypatch.setenv("RECONCILE_SECRET_DIRS", str(secrets))
    ref = {"env": "env:RECONCILE_TOKEN_KEY", "dots": f"file:{secrets}/../outside/shadow",
           "symlink": f"file:{secrets}/link"}[where]
    peer = peer_factory("plain", user=USER, password=VALUE, auth_require_tls=False)
    db = str(tmp_path / "state.db")
    with open_store(db) as store:
        put_servers(store, peer.server("desk", auth={
            "type": "basic", "username": USER, "password": {"secretRef": ref}}))

    result = run("test-connection", "desk", "--to", TO, "--store", db, code=1)

    out = result.output
    assert "Failed at AUTH" in out, out
    assert ("is one of reconciler's own settings" in out if where == "env"
            else "is outside the secret directories" in out), out
    assert "RECONCILE_SECRET_DIRS / RECONCILE_SECRET_ENV" in out.split("Likely fix:")[1]
    assert VALUE not in out and "Traceback" not in out
    assert peer.messages == []


def test_the_daemon_does_not_start_with_a_broken_secret_dirs_setting(tmp_path: Path) -> None:
    env = {**os.environ, "RECONCILE_SECRET_DIRS": f"/run/secrets{os.pathsep}relative/dir",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    try:
        done = subprocess.run(
            [sys.executable, "-c", "from reconciler.cli.main import main; main()", "daemon",
             "--store", str(tmp_path / "state.db"), "--listen", f"127.0.0.1:{free_port()}"],
            capture_output=True, text=True, env=env, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("the daemon started with RECONCILE_SECRET_DIRS holding a relative path")
    assert done.returncode == 1, done.stderr
    assert ("RECONCILE_SECRET_DIRS entry 'relative/dir' is not an absolute path"
            in done.stderr), done.stderr
    assert "Traceback" not in done.stderr
