"""A private Postfix that bounces like a real mail server, delivering into Dovecot's maildirs.

Built on bench/_postfix.py's instance (own config, queue and data directory, a free
loopback port, stopped by pid). It is the final destination of two domains,
delivered by Postfix's ``virtual`` agent: the mailboxes listed (Dovecot users, so
the incoming runner fetches what lands there over IMAP) get their mail, and any
other address is accepted at SMTP time and then bounced "user unknown" (5.1.1):
Postfix itself writes the RFC 3464 report and returns it to the envelope sender.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from peers.dovecot import DovecotInstance, MailUser

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _postfix import MASTER_CF, PostfixInstance

MAIN_CF = """\
# Written by tests/peers/postfix.py: two virtual domains, unknown users bounce.
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
maillog_file_prefixes = {root}
maillog_file = {root}/maillog
myhostname = mx.bounce.test
mydomain = bounce.test
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
mydestination =
local_transport = error:no local delivery here
alias_maps =
alias_database =
relay_domains =
virtual_mailbox_domains = {domains}
virtual_mailbox_base = {mail}
virtual_mailbox_maps = texthash:{config}/mailboxes
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
# Take every address at RCPT time, so an unknown one bounces after acceptance (a DSN)
# instead of being refused in the SMTP dialogue.
smtpd_reject_unlisted_recipient = no
smtp_dns_support_level = disabled
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtputf8_enable = no
biff = no
append_dot_mydomain = no
"""


class BouncingPostfix(PostfixInstance):
    def __init__(self, dovecot: DovecotInstance, domains: tuple[str, ...],
                 mailboxes: tuple[MailUser, ...]) -> None:
        super().__init__(sink_port=0)
        self.dovecot = dovecot
        self.domains = domains
        self.mailboxes = mailboxes

    def write_config(self) -> None:
        super().write_config()
        d = self.dovecot
        (self.config / "main.cf").write_text(MAIN_CF.format(
            queue=self.queue, data=self.data, root=self.root, config=self.config,
            domains=" ".join(self.domains), mail=d.root / "mail", uid=d.uid, gid=d.gid))
        (self.config / "master.cf").write_text(
            MASTER_CF.format(port=self.port) + "virtual    unix  - n n - - virtual\n")
        # The maildir Dovecot reads for the user (mail_location maildir:.../mail/%u).
        (self.config / "mailboxes").write_text(
            "".join(f"{u.name} {u.name}/\n" for u in self.mailboxes))


@pytest.fixture
def bouncing_postfix(dovecot: DovecotInstance) -> Iterator[tuple[BouncingPostfix, MailUser]]:
    """Postfix for desk.test (the desk's mailbox, a Dovecot user) and bounce.test (no
    mailboxes: everything there bounces back to the sender)."""
    desk = dovecot.add_user(f"desk-{secrets.token_hex(3)}@desk.test")
    postfix = BouncingPostfix(dovecot, ("desk.test", "bounce.test"), (desk,))
    try:
        postfix.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield postfix, desk
    finally:
        postfix.stop()
