"""Connection failures become one FetchError each, with a kind and a likely fix (SPEC I7)."""

from __future__ import annotations

import socket
import ssl

import pytest
from peers.dovecot import DovecotInstance, MailUser
from peers.smtp import PeerCerts
from peers.smtp_sink import free_port

from mail.fetch_kit import (
    connect_error,
    fetch_env,  # noqa: F401  (autouse: password env, no CA env)
    incoming_server,
)
from reconciler.config.models.incoming_server import IncomingServer
from reconciler.mail.failure import MailFailure
from reconciler.mail.fetch_errors import Where, classify
from reconciler.mail.fetcher import FetchError, FetchErrorKind
from reconciler.mail.registry import fetcher_for


async def _connect_error(server: object, **options: object) -> FetchError:
    return await connect_error(fetcher_for(server, **options))  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", ["imaps", "pop3s"])
async def test_nothing_listening_names_the_port_and_the_usual_ports(
        dovecot: DovecotInstance, mailbox: MailUser, protocol: str) -> None:
    port = free_port()
    error = await _connect_error(incoming_server(dovecot, mailbox, protocol, port=port))
    assert error.kind == FetchErrorKind.CONNECT
    assert f"nothing accepts connections on 127.0.0.1:{port}" in error.message
    assert ("993" if protocol == "imaps" else "995") in error.likely_fix


async def test_unknown_host_is_a_connect_error(dovecot: DovecotInstance,
                                               mailbox: MailUser) -> None:
    error = await _connect_error(incoming_server(dovecot, mailbox, "imaps",
                                                 host="imap.desk.invalid"))
    assert error.kind == FetchErrorKind.CONNECT
    assert "imap.desk.invalid does not resolve" in error.message


async def test_untrusted_certificate_says_how_to_trust_a_private_ca(
        dovecot: DovecotInstance, mailbox: MailUser, stranger_certs: PeerCerts) -> None:
    for protocol, starttls in (("imaps", False), ("imap", True), ("pop3", True)):
        server = incoming_server(dovecot, mailbox, protocol, starttls=starttls)
        error = await _connect_error(server, ca_file=stranger_certs.ca_file)
        assert error.kind == FetchErrorKind.TLS, protocol
        assert "is not trusted" in error.message
        assert "RECONCILE_TLS_CA_FILE" in error.likely_fix


async def test_implicit_tls_against_a_plain_port_suggests_starttls(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts) -> None:
    server = incoming_server(dovecot, mailbox, "imaps", port=dovecot.imap)
    error = await _connect_error(server, ca_file=certs.ca_file)
    assert error.kind == FetchErrorKind.TLS
    assert "starttls: true" in error.likely_fix


async def test_plain_client_on_an_implicit_tls_port_suggests_the_tls_protocol(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts) -> None:
    # the server waits for a TLS hello, the client for a greeting: the timeout decides
    server = incoming_server(dovecot, mailbox, "pop3", port=dovecot.pop3s)
    error = await _connect_error(server, ca_file=certs.ca_file, timeout=0.5)
    assert error.kind in (FetchErrorKind.CONNECT, FetchErrorKind.PROTOCOL)
    assert "pop3s" in error.likely_fix


async def test_unreadable_password_reference_is_a_config_error(
        dovecot: DovecotInstance, mailbox: MailUser, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INCOMING_TEST_PASSWORD")
    error = await _connect_error(incoming_server(dovecot, mailbox, "imaps"))
    assert error.kind == FetchErrorKind.CONFIG
    assert "INCOMING_TEST_PASSWORD is not set" in error.message


async def test_oauth_without_a_token_provider_is_a_config_error(
        dovecot: DovecotInstance, mailbox: MailUser) -> None:
    error = await _connect_error(incoming_server(dovecot, mailbox, "pop3s", auth="oauth2"))
    assert error.kind == FetchErrorKind.CONFIG
    assert "reconcile auth login" in error.likely_fix


async def test_missing_folder_is_a_config_error(dovecot: DovecotInstance, mailbox: MailUser,
                                                certs: PeerCerts) -> None:
    server = incoming_server(dovecot, mailbox, "imaps", folder="Support/Tickets")
    error = await _connect_error(server, ca_file=certs.ca_file)
    assert error.kind == FetchErrorKind.CONFIG
    assert "Support/Tickets cannot be opened" in error.message


@pytest.mark.parametrize("protocol, fetcher", [("ews", "EwsFetcher"),
                                               ("graph", "GraphFetcher")])
def test_ews_and_graph_have_their_fetchers(protocol: str, fetcher: str) -> None:
    server = IncomingServer.model_validate({
        "apiVersion": "reconciler.dev/v1", "kind": "IncomingServer",
        "metadata": {"name": "desk"},
        "spec": {"email": "desk@example.test", "protocol": protocol,
                 "ewsUrl": "https://mail.example.invalid/EWS/Exchange.asmx"}})
    assert type(fetcher_for(server)).__name__ == fetcher  # nothing connects before use


@pytest.mark.parametrize("exc, doing, kind, step, reason, permanent", [
    (socket.gaierror(socket.EAI_NONAME, "x"), "opening the session", "connect", "dns",
     "nxdomain", False),
    (socket.gaierror(socket.EAI_AGAIN, "x"), "opening the session", "connect", "dns",
     "dns-temporary", False),
    (TimeoutError(), "tls", "tls", "tls", "timeout", False),
    (TimeoutError(), "searching for unread mail", "connect", "fetch", "timeout", False),
    (ConnectionResetError(104, "Connection reset by peer"), "greeting", "connect", "greeting",
     "closed", False),
    (ValueError("nonsense"), "greeting", "protocol", "greeting", "unexpected", False),
    (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), "marking a mail read",
     "connect", "fetch", "closed", False),
])
def test_every_failure_is_a_mail_failure_with_step_and_reason(
        dovecot: DovecotInstance, mailbox: MailUser, exc: BaseException, doing: str,
        kind: str, step: str, reason: str, permanent: bool) -> None:
    where = Where(incoming_server(dovecot, mailbox, "imaps"), "imap.example.test", 993)
    error = classify(exc, where, doing, str)
    assert isinstance(error, MailFailure) and isinstance(error, FetchError)
    assert (error.kind, error.step, error.reason, error.permanent) == (kind, step, reason,
                                                                        permanent)
    assert error.outcome == ("permanent" if permanent else "transient")
    assert "imap.example.test" in error.message and error.likely_fix


def test_kind_only_errors_of_the_cloud_fetchers_get_a_step_and_failure() -> None:
    error = FetchError(FetchErrorKind.AUTH, "refused", "re-authorise")
    assert (error.step, error.failure, error.permanent) == ("auth", "auth", True)
    assert FetchError("connect", "dropped").permanent is False
