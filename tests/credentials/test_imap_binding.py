"""SPEC S2 for incoming mail, against a real Dovecot: a mailbox password is used for an
IMAP login only at the host:port an apply bound it to."""

from __future__ import annotations

import pytest
from mail.fetch_kit import PASSWORD_ENV, fetch_all, incoming_server
from peers.dovecot import DovecotInstance, MailUser, sample_mail
from peers.smtp import PeerCerts

from reconciler.config.desired import CanonicalResource, ResourceKey
from reconciler.config.models.incoming_server import IncomingServer
from reconciler.credentials import gate
from reconciler.mail.fetcher import FetchError, FetchErrorKind
from reconciler.mail.registry import fetcher_for
from reconciler.state import Action, Change, RevisionMeta, SqlStore


def applied(store: SqlStore, server: IncomingServer) -> None:
    spec = server.spec.model_dump(by_alias=True, mode="json", exclude_none=True)
    res = CanonicalResource.build(ResourceKey("IncomingServer", "default", "desk"),
                                  "reconciler.dev/v1", spec, None)
    store.commit([Change(Action.CREATE, res.key, None, res)], RevisionMeta(actor="dana"),
                 base_revision=0)
    gate.load(store)


async def test_the_password_logs_in_only_at_the_bound_port(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts, store: SqlStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, mailbox.password)
    dovecot.deliver(mailbox, sample_mail(1))
    bound = incoming_server(dovecot, mailbox, "imaps")
    applied(store, bound)
    login = f"user=<{mailbox.name}>"

    # Same password reference, another port (as a live set of spec.port would leave it).
    moved = incoming_server(dovecot, mailbox, "imap", starttls=True)
    with pytest.raises(FetchError) as refused:
        async with fetcher_for(moved, ca_file=certs.ca_file) as fetcher:
            await fetch_all(fetcher)
    assert refused.value.kind == FetchErrorKind.CONFIG
    assert f"not bound to 127.0.0.1:{dovecot.imap}" in refused.value.message
    assert mailbox.password not in refused.value.user_text
    assert login not in dovecot.log()  # Dovecot logs every login it accepts

    async with fetcher_for(bound, ca_file=certs.ca_file) as fetcher:
        assert len(await fetch_all(fetcher)) == 1
    assert login in dovecot.log()
