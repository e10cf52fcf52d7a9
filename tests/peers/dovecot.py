"""Dovecot as the IMAP/POP3 peer of the incoming-mail tests.

One private instance per test session (starting one costs a process tree;
see bench/_dovecot.py, which the incoming benchmark shares), with
certificates from the session CA of the SMTP peers, so ``certs.ca_file`` is
the trust root for IMAPS/POP3S/STARTTLS too. Each test gets its own mailbox
(``mailbox`` fixture): tests never see each other's mail, so nothing needs
resetting. The fixture fails, never skips, when Dovecot is missing or does
not start.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from peers.smtp import PeerCerts

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _dovecot import DovecotInstance, DovecotMissing, MailUser, sample_mail

__all__ = ["DovecotInstance", "MailUser", "sample_mail"]


@pytest.fixture(scope="session")
def dovecot(certs: PeerCerts) -> Iterator[DovecotInstance]:
    instance = DovecotInstance(certs.ca)
    try:
        instance.start()
    except (DovecotMissing, RuntimeError) as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def mailbox(dovecot: DovecotInstance) -> MailUser:
    """A fresh, empty mailbox on the session's Dovecot."""
    return dovecot.add_user()
