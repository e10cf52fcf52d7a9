"""SPEC S2 for `reconcile test-connection`: it presents a server's password only where an
apply bound it, also when the server comes from a config repo, unless the person running
it approves that on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from health.kit import PASSWORD, PASSWORD_ENV, USER, basic_auth, put_servers
from peers.smtp import HOST, SmtpPeer

from reconciler.cli.main import cli
from reconciler.state import open_store

TO = "jane@corp.example"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECONCILE_STORE", raising=False)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def steps(result: Result) -> dict[str, dict[str, object]]:
    return {s["step"]: s for s in json.loads(result.output)["steps"]}


def test_a_live_set_host_is_not_sent_the_password(peer_factory: object, tmp_path: Path
                                                    ) -> None:
    make = peer_factory  # type: ignore[assignment]
    a: SmtpPeer = make("plain", user=USER, password=PASSWORD, auth_require_tls=False)
    b: SmtpPeer = make("plain", user=USER, password=PASSWORD, auth_require_tls=False)
    db = str(tmp_path / "state.db")
    with open_store(db) as store:
        put_servers(store, a.server("desk", auth=basic_auth()))
    assert run("live", "set", "OutgoingServer/desk", f"port={b.port}", "--store", db,
               "--reason", "move").exit_code == 0

    result = run("test-connection", "desk", "--to", TO, "--store", db, "--format", "json")
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["failedStep"] == "auth"
    assert f"not bound to {HOST}:{b.port}" in steps(result)["auth"]["detail"]
    assert "--approve-credential-move" in data["fix"]
    assert b.auth_attempts == [] and b.messages == []
    assert PASSWORD not in result.output


def test_a_config_repo_server_needs_an_explicit_approval(peer_factory: object,
                                                         tmp_path: Path) -> None:
    make = peer_factory  # type: ignore[assignment]
    peer: SmtpPeer = make("plain", user=USER, password=PASSWORD, auth_require_tls=False)
    repo = tmp_path / "config"
    repo.mkdir()
    (repo / "servers.yaml").write_text(f"""\
apiVersion: reconciler.dev/v1
kind: OutgoingServer
metadata: {{name: desk, labels: {{env: dev}}}}
spec:
  email: helpdesk@desk.example
  replyTo: support@desk.example
  host: {HOST}
  port: {peer.port}
  security: none
  auth: {{type: basic, username: {USER}, password: {{secretRef: env:{PASSWORD_ENV}}}}}
  primary: true
""")
    refused = run("test-connection", "desk", "--to", TO, "--config", repo, "--format", "json")
    assert refused.exit_code == 1, refused.output
    assert f"not bound to {HOST}:{peer.port}" in steps(refused)["auth"]["detail"]
    assert peer.auth_attempts == [] and peer.messages == []

    approved = run("test-connection", "desk", "--to", TO, "--config", repo, "--format", "json",
                   "--approve-credential-move", "OutgoingServer/desk")
    assert approved.exit_code == 0, approved.output
    assert peer.auth_attempts and len(peer.messages) == 1
