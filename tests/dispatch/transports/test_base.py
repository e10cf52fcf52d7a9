"""The transport interface's helpers: secret redaction and token fetching."""

from __future__ import annotations

import asyncio
import base64

import pytest

from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.mail.outcome import Outcome, outcome_for_reply
from reconciler.mail.transport import Redactor
from reconciler.oauth.source import TokenError, fetch_token

from ..kit import server


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_redactor_masks_the_secret_and_its_protocol_encodings() -> None:
    r = Redactor()
    r.add("hunter2-long", username="desk")
    plain = b64("\0desk\0hunter2-long")
    xoauth = b64("user=desk\x01auth=Bearer hunter2-long\x01\x01")
    text = f"pw hunter2-long b64 {b64('hunter2-long')} plain {plain} xoauth {xoauth}"
    masked = r(text)
    assert "hunter2" not in masked and masked.count("***") == 4


def test_redactor_ignores_empty_secrets() -> None:
    r = Redactor()
    r.add("")
    assert r("nothing to hide") == "nothing to hide"


def test_fetch_token_accepts_sync_and_async_providers() -> None:
    srv = server("s")

    async def async_provider(s: OutgoingServer) -> str:
        return "tok-a"

    assert asyncio.run(fetch_token(lambda s: "tok-s", srv)) == "tok-s"
    assert asyncio.run(fetch_token(async_provider, srv)) == "tok-a"
    with pytest.raises(TokenError, match="no token"):
        asyncio.run(fetch_token(lambda s: "", srv))


@pytest.mark.parametrize(
    ("code", "outcome"),
    [(250, Outcome.SENT), (354, Outcome.SENT), (421, Outcome.TRANSIENT), (450, Outcome.TRANSIENT),
     (451, Outcome.TRANSIENT), (452, Outcome.TRANSIENT), (550, Outcome.PERMANENT),
     (552, Outcome.PERMANENT), (554, Outcome.PERMANENT)],
)
def test_reply_code_classification(code: int, outcome: Outcome) -> None:
    assert outcome_for_reply(code) == outcome
