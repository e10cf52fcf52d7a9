"""probe_incoming (SPEC I9) with an OAuth2 login against Dovecot: XOAUTH2 with a token
from the provider, and a refused token named at the AUTH step with its fix."""

from __future__ import annotations

from mail.fetch_kit import fetch_env, incoming_server  # noqa: F401  (fetch_env: autouse)
from peers.dovecot import DovecotInstance, MailUser, sample_mail
from peers.smtp import PeerCerts

from reconciler.health.probes import probe_incoming
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.steps import Step


async def test_an_oauth2_mailbox_logs_in_with_xoauth2(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts) -> None:
    dovecot.deliver(mailbox, sample_mail(3))
    server = incoming_server(dovecot, mailbox, "imaps", auth="oauth2")
    report = await probe_incoming(server, ProbeOptions(ca_file=certs.ca_file,
                                                       token_provider=lambda s: mailbox.token))
    assert report.ok, report.error
    auth = next(r for r in report.results if r.step == Step.AUTH)
    assert auth.detail == f"logged in as {mailbox.name} (oauth2)"
    assert mailbox.token not in " ".join(r.detail for r in report.results)


async def test_a_refused_token_fails_at_auth_with_the_fix(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts) -> None:
    server = incoming_server(dovecot, mailbox, "pop3s", auth="oauth2")
    report = await probe_incoming(server, ProbeOptions(ca_file=certs.ca_file,
                                                       token_provider=lambda s: "tok-WRONG"))
    failed = report.failed
    assert failed is not None and failed.step == Step.AUTH
    assert "reconcile auth login" in failed.fix and "tok-WRONG" not in failed.detail
    assert report.not_run == (Step.COUNT, Step.SAMPLE)
