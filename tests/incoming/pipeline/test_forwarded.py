from __future__ import annotations

import pytest

from reconciler.incoming.pipeline.event import Address
from reconciler.incoming.pipeline.forwarded import inline_original_sender, is_forward

GMAIL = ("See below\n\n---------- Forwarded message ---------\nFrom: Ann <ann@x.example>\n"
         "Date: Mon\n\nhello")
OUTLOOK = ("FYI\n\n________________________________\nFrom: Paul [mailto:paul@p.example]\n"
           "Sent: Monday\n")
APPLE = "Begin forwarded message:\n\n> From: \"Kim\" <kim@k.example>\n> Subject: hi\n"
REPLY = "Sure.\n\n-----Original Message-----\nFrom: Lee <lee@l.example>\nSent: x\n"


@pytest.mark.parametrize(("subject", "body", "expected"), [
    ("Fwd: hello", GMAIL, Address("ann@x.example", "Ann")),
    ("hello", GMAIL, Address("ann@x.example", "Ann")),  # marker alone is enough
    ("FW: renewal", OUTLOOK, Address("paul@p.example", "Paul")),
    ("Re: WG: Termin", "-----Original Message-----\nVon: Uwe <uwe@u.example>\n",
     Address("uwe@u.example", "Uwe")),
    ("hi", APPLE, Address("kim@k.example", "Kim")),
    ("Re: question", REPLY, None),  # Outlook reply quote, not a forward
    ("Fwd: no from line", "nothing here", None),
])
def test_original_sender(subject: str, body: str, expected: Address | None) -> None:
    assert inline_original_sender(subject, body) == expected


def test_reply_is_not_a_forward() -> None:
    assert not is_forward("RE: Laptop", REPLY)
    assert is_forward("Fw: Laptop", "")
