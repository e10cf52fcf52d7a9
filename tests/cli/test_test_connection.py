"""`reconcile test-connection` (O10) against real peers: the success path, and each
failing step with its fix (DNS, TCP, TLS, untrusted certificate, AUTH, sender and
recipient refused); servers from the live store or from a config repo."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from health.kit import PASSWORD, PASSWORD_ENV, USER, WRONG, WRONG_ENV, basic_auth, put_servers
from peers.smtp import HOST, PeerCerts, SmtpPeer, free_port, server_spec
from peers.smtp_sink import SmtpSink

from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.runtime.tls import CA_FILE_ENV
from reconciler.state import open_store

from .helpers_history import assert_user_error, run

TO = "jane@corp.example"
Peers = Callable[..., SmtpPeer]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> PeerCerts:
    return PeerCerts.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CA_FILE_ENV, raising=False)
    monkeypatch.delenv("RECONCILE_STORE", raising=False)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    monkeypatch.setenv(WRONG_ENV, WRONG)


@pytest.fixture
def peers(certs: PeerCerts) -> Iterator[Peers]:
    started: list[SmtpPeer] = []

    def make(mode: str = "plain", **kw: Any) -> SmtpPeer:
        peer = SmtpPeer(mode, certs=certs, **kw).start()  # type: ignore[arg-type]
        started.append(peer)
        return peer

    yield make
    for peer in started:
        peer.stop()


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "state.db")


def stored(db: str, *servers: OutgoingServer) -> str:
    with open_store(db) as store:
        put_servers(store, *servers)
    return db


def check(*args: str | Path, code: int) -> str:
    """`reconcile test-connection ARGS`, its exit code checked; the output."""
    return run("test-connection", *map(str, args), code=code).output


def marks(output: str) -> list[tuple[str, str]]:
    """(mark, step label) of every step line, in order."""
    return re.findall(r"^  ([✓✗·]) (\S+(?: call)?)", output, flags=re.MULTILINE)


# -- success ---------------------------------------------------------------------


def test_every_step_passes_and_the_message_arrives(peers: Peers, certs: PeerCerts,
                                                   db: str) -> None:
    peer = peers("starttls", user=USER, password=PASSWORD)
    stored(db, peer.server("desk", auth=basic_auth()))
    out = check("desk", "--to", TO, "--store", db, "--ca-file", certs.ca_file,
                          code=0)
    assert out.startswith(f"Testing OutgoingServer default/desk: smtp {HOST}:{peer.port}, "
                          "security starttls, auth basic\n")
    assert marks(out) == [("✓", "DNS"), ("✓", "TCP"), ("✓", "Greeting"), ("✓", "EHLO"),
                          ("✓", "TLS"), ("✓", "AUTH"), ("✓", "Send")]
    assert re.search(r"✓ TLS +STARTTLS 220, TLSv1\.\d, certificate for 127\.0\.0\.1", out)
    assert f"✓ AUTH      authenticated as {USER} (PLAIN)" in out
    assert re.search(r"\(\d+ ms\)|\(\d+\.\d s\)", out)
    assert out.rstrip().endswith(f"All checks passed; a test message was sent to {TO}.")
    [got] = peer.messages
    assert got.rcpt_tos == [TO] and got.tls and got.login == USER
    assert PASSWORD not in out


def test_server_from_a_config_repo_and_json_output(peers: Peers, certs: PeerCerts,
                                                   tmp_path: Path) -> None:
    peer = peers("tls", user=USER, password=PASSWORD)
    repo = tmp_path / "config"
    repo.mkdir()
    (repo / "servers.yaml").write_text(f"""\
apiVersion: reconciler.dev/v1
kind: OutgoingServer
metadata: {{name: desk, namespace: acme}}
spec:
  email: helpdesk@desk.example
  replyTo: support@desk.example
  host: {HOST}
  port: {peer.port}
  security: tls
  auth: {{type: basic, username: {USER}, password: {{secretRef: env:{PASSWORD_ENV}}}}}
  primary: true
""")
    # Not applied anywhere, so its password is bound nowhere: the test needs the
    # operator's explicit approval to present it (SPEC S2).
    out = check("acme/desk", "--to", TO, "--config", repo, "--ca-file",
                          certs.ca_file, "--format", "json", "--approve-credential-move",
                          "OutgoingServer/acme/desk", code=0)
    data = json.loads(out)
    assert data["ok"] is True and data["server"] == "acme/desk" and data["notRun"] == []
    assert [s["step"] for s in data["steps"]] == ["dns", "tcp", "tls", "greeting", "ehlo",
                                                  "auth", "send"]
    assert data["failedStep"] is None and data["fix"] is None
    assert len(peer.messages) == 1


def test_the_alternate_host_alone(peers: Peers, db: str) -> None:
    alternate = peers("plain")
    stored(db, server_spec(free_port(), "plain", "desk", alternateHost=HOST,
                           alternatePort=alternate.port))
    out = check("desk", "--to", TO, "--store", db, "--alternate", code=0)
    assert f"smtp alternate host {HOST}:{alternate.port}" in out
    assert len(alternate.messages) == 1


def test_store_from_the_fixture_on_both_databases(peers: Peers, store_url: str) -> None:
    peer = peers("plain")
    stored(store_url, peer.server("desk"))
    check("desk", "--to", TO, "--store", store_url, code=0)


# -- each failing step names itself and the fix -----------------------------------------


def test_dns(db: str) -> None:
    stored(db, server_spec(587, "starttls", "desk", host="smtp.desk.invalid"))
    out = check("desk", "--to", TO, "--store", db, code=1)
    assert marks(out) == [("✗", "DNS"), ("·", "TCP"), ("·", "Greeting"), ("·", "EHLO"),
                          ("·", "TLS"), ("·", "Send")]
    assert "Failed at DNS: smtp.desk.invalid does not resolve" in out
    assert "Likely fix: The host name smtp.desk.invalid does not exist in DNS." in out


def test_tcp_refused(db: str) -> None:
    port = free_port()
    stored(db, server_spec(port, "plain", "desk"))
    out = check("desk", "--to", TO, "--store", db, code=1)
    assert marks(out)[:2] == [("✓", "DNS"), ("✗", "TCP")]
    assert f"Failed at TCP: connection refused by {HOST}:{port}" in out
    assert f"Likely fix: Nothing accepts connections on {HOST}:{port}. Check the port" in out
    assert "firewall" in out


def test_tls_against_a_plain_port(peers: Peers, db: str) -> None:
    peer = peers("plain")
    stored(db, server_spec(peer.port, "tls", "desk"))
    out = check("desk", "--to", TO, "--store", db, code=1)
    assert marks(out)[:3] == [("✓", "DNS"), ("✓", "TCP"), ("✗", "TLS")]
    assert "Failed at TLS: TLS handshake with" in out
    assert "Likely fix: The TLS handshake failed: the security type does not match the " \
           "port; security is tls" in out
    assert "use security starttls" in out
    assert peer.messages == []


def test_untrusted_certificate_then_trusted_with_ca_file(peers: Peers, certs: PeerCerts,
                                                         db: str) -> None:
    peer = peers("starttls")
    stored(db, peer.server("desk"))
    out = check("desk", "--to", TO, "--store", db, code=1)
    assert ("✗", "TLS") in marks(out)
    assert "is not trusted" in out
    assert "Likely fix: The server's certificate is not signed by a CA this machine trusts." \
        in out and "--ca-file PEM" in out
    check("desk", "--to", TO, "--store", db, "--ca-file", certs.ca_file, code=0)


def test_wrong_password(peers: Peers, certs: PeerCerts, db: str) -> None:
    peer = peers("starttls", user=USER, password=PASSWORD)
    stored(db, peer.server("desk", auth=basic_auth(WRONG_ENV)))
    out = check("desk", "--to", TO, "--store", db, "--ca-file", certs.ca_file,
                          code=1)
    assert marks(out)[-2:] == [("✗", "AUTH"), ("·", "Send")]
    assert f"Failed at AUTH: authentication failed for {USER}: 535" in out
    assert "Likely fix: The server refused the login for desk-sender." in out
    assert "app password" in out and "SMTP AUTH is enabled for this mailbox" in out
    assert WRONG not in out and PASSWORD not in out
    assert peer.messages == []


@pytest.mark.parametrize(("fault", "words"), [
    ("MAIL", "Likely fix: The server refused the sender helpdesk@desk.example: it may accept "
             "only certain sender addresses or domains"),
    ("RCPT", "Likely fix: The server refused the recipient: check the address given with "
             "--to"),
])
def test_send_refused(fault: str, words: str, db: str) -> None:
    sink = SmtpSink(["-f", fault]).start()
    try:
        stored(db, server_spec(sink.port, "plain", "desk"))
        out = check("desk", "--to", TO, "--store", db, code=1)
    finally:
        sink.stop()
    assert marks(out)[-1] == ("✗", "Send")
    assert "Failed at Send: " in out and "500 5.3.0 Error: command failed" in out
    assert words in out


# -- finding the server, and usage errors ---------------------------------------------------


def test_ambiguous_unknown_and_bad_arguments(db: str, tmp_path: Path) -> None:
    stored(db, server_spec(25, "plain", "desk"),
           server_spec(25, "plain", "desk").model_copy(update={
               "metadata": server_spec(25, "plain", "desk").metadata.model_copy(
                   update={"namespace": "acme"})}))
    assert_user_error(run("test-connection", "desk", "--to", TO, "--store", db, code=1),
                      "server 'desk' exists in namespaces acme, default; choose one with "
                      "--namespace")
    assert_user_error(run("test-connection", "dsek", "--to", TO, "--store", db, code=1),
                      "no OutgoingServer or IncomingServer 'dsek' in the live store; "
                      "did you mean 'desk'?")
    assert_user_error(run("test-connection", "desk", "-n", "acme", "--to", "not an address",
                          "--store", db, code=1),
                      "--to 'not an address' is not a usable email address")
    assert_user_error(run("test-connection", "desk", "-n", "acme", "--to", TO, "--store", db,
                          "--alternate", code=1), "has no alternate host")
    assert_user_error(run("test-connection", "desk", "--to", TO, "--store", db, "--config",
                          tmp_path, code=1), "give either --store or --config, not both")


# -- OAuth2 servers: the token comes from the store-backed provider, like the daemon's -----


GRAPH_SECRET = "Gr4ph~client~secret~value~77"
GRAPH_SECRET_ENV = "DESK_GRAPH_SECRET"


def test_a_graph_server_is_checked_with_a_token_from_the_identity_provider(
        certs: PeerCerts, db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from peers.graph_server import GraphPeer
    from peers.oauth_server import OAuthPeer

    from reconciler.config.sealing import new_key

    monkeypatch.setenv(GRAPH_SECRET_ENV, GRAPH_SECRET)
    monkeypatch.setenv("RECONCILE_TOKEN_KEY", new_key())
    idp = OAuthPeer(certs).start()
    graph = GraphPeer(certs, token="never-issued", accept=idp.valid_access).start()
    try:
        idp.register("11111111-2222-3333-4444-555555555555", GRAPH_SECRET)
        server = graph.server("m365", auth={
            "type": "oauth2", "provider": "microsoft", "grant": "clientCredentials",
            "clientId": "11111111-2222-3333-4444-555555555555", "tenant": "desk-tenant",
            "clientSecret": {"secretRef": f"env:{GRAPH_SECRET_ENV}"},
            "tokenUrl": idp.token_url(), "scope": ["https://graph.microsoft.com/.default"]})
        stored(db, server)
        out = check("m365", "--to", TO, "--store", db, "--ca-file", certs.ca_file, code=0)
    finally:
        graph.stop()
        idp.stop()
    assert marks(out) == [("✓", "DNS"), ("✓", "TCP"), ("✓", "TLS"), ("✓", "Token"),
                          ("✓", "API call"), ("✓", "Send")]
    [mail] = graph.sent
    assert mail.mailbox == "desk@corp.example"
    assert mail.addresses("to") == [TO]
    assert idp.count("client_credentials") == 1  # the probe's token is reused for the send
    assert GRAPH_SECRET not in out
    with open(db, "rb") as raw:
        assert GRAPH_SECRET.encode() not in raw.read()


# -- the sender domain's SPF, DKIM and DMARC (a DNS peer on loopback) -------------------


def test_the_sender_domain_records_are_checked_and_what_is_missing_is_said(
        peers: Peers, certs: PeerCerts, db: str, dns_peer: Any) -> None:
    peer = peers("starttls", user=USER, password=PASSWORD)
    stored(db, peer.server("desk", auth=basic_auth()))
    dns_peer.records.update({"desk.example": ["v=spf1 ip4:192.0.2.10 -all"],
                             "mx2026._domainkey.desk.example": ["v=DKIM1; k=rsa; p=MIIB"]})
    out = check("desk", "--to", TO, "--store", db, "--ca-file", certs.ca_file,
                "--dns-server", dns_peer.address, "--dkim-selector", "mx2026", code=0)
    assert f"Sender domain desk.example (DNS: {dns_peer.address}; advice" in out
    assert "    ✓ SPF    v=spf1 ip4:192.0.2.10 -all" in out
    assert "    ✓ DKIM   key published at mx2026._domainkey.desk.example" in out
    assert "    ✗ DMARC  no DMARC record at _dmarc.desk.example" in out
    assert 'Fix DMARC: Publish a TXT record at _dmarc.desk.example, e.g. "v=DMARC1;' in out
    report = json.loads(check("desk", "--to", TO, "--store", db, "--ca-file", certs.ca_file,
                              "--dns-server", dns_peer.address, "--format", "json", code=0))
    assert [(r["record"], r["ok"]) for r in report["senderDomain"]["records"]] == [
        ("SPF", True), ("DKIM", False), ("DMARC", False)]  # no selector: none of the common


def test_through_a_proxy_every_step_and_the_send_use_the_tunnel(
        peers: Peers, certs: PeerCerts, db: str, proxy_peer: Any, proxy_password: str) -> None:
    from reconciler.config.models.proxy_server import ProxyServer

    peer = peers("tls", user=USER, password=PASSWORD)
    proxy = ProxyServer.model_validate({
        "apiVersion": "reconciler.dev/v1", "kind": "ProxyServer",
        "metadata": {"name": "corp", "namespace": "default"},
        "spec": proxy_peer.spec("socks5")})
    stored(db, proxy, peer.server("desk", auth=basic_auth(), proxy="corp"))
    out = check("desk", "--to", TO, "--store", db, "--ca-file", certs.ca_file, code=0)
    assert [label for _, label in marks(out)][:3] == ["DNS", "Proxy", "TLS"]
    assert len(peer.messages) == 1
    proxy_peer.tunnelled(f"{HOST}:{peer.port}", 2)  # the check's and the send's
    assert proxy_password not in out
