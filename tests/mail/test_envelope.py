"""Notification intake validation: addresses, header injection, JSON round trip; the
message as SMTP DATA carries it."""

from __future__ import annotations

import random
import re

import pytest
from pydantic import ValidationError

from reconciler.mail.envelope import Mailbox, Notification, smtp_data


def test_recipients_accept_plain_named_and_object_forms() -> None:
    n = Notification(
        module="request",
        to=["jane@corp.example", 'Doe, John <john@corp.example>'],
        cc=['"Smith, Ann" <ann@corp.example>'],
        bcc=[{"email": "audit@corp.example", "name": "Audit"}],
    )
    assert [str(m) for m in n.to] == ["jane@corp.example", "Doe, John <john@corp.example>"]
    assert n.cc[0].name == "Smith, Ann"
    assert n.bcc[0] == Mailbox(email="audit@corp.example", name="Audit")


def test_domain_is_normalised_and_idn_becomes_punycode() -> None:
    m = Mailbox.parse("Jane.Doe@Corp.EXAMPLE")
    assert m.email == "Jane.Doe@corp.example"
    assert Mailbox.parse("hans@bücher.example").email == "hans@xn--bcher-kva.example"


@pytest.mark.parametrize("address", ["nope", "a@", "@corp.example", "a b@corp.example",
                                     "jäne@corp.example"])
def test_invalid_addresses_are_rejected(address: str) -> None:
    with pytest.raises(ValidationError, match="not a valid email address"):
        Notification(module="request", to=[address])


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("subject", "Hello\r\nBcc: victim@else.example", "subject"),
        ("subject", "Hello\nX-Evil: 1", "subject"),
        ("subject", "Hello\u2028X-Evil: 1", "subject"),
        ("to", ["Evil\r\nBcc: victim@else.example <a@corp.example>"], "recipient"),
        ("to", ["a@corp.example\r\nBcc: victim@else.example"], "recipient"),
        ("to", [{"email": "a@corp.example", "name": "Jane\nBcc: v@else.example"}], "display name"),
        ("to", [{"email": "a@corp.example\nBcc: v@else.example"}], "address"),
        ("headers", {"In-Reply-To": "<x@y>\r\nBcc: v@else.example"}, "headers.In-Reply-To"),
        ("attachments", [{"name": "a\r\n.txt", "data": b"x"}], "attachment name"),
    ],
)
def test_line_breaks_in_header_values_are_rejected(field: str, value: object, where: str) -> None:
    with pytest.raises(ValidationError) as err:
        Notification(module="request", **{field: value})
    text = str(err.value)
    assert where in text
    assert "line break" in text and "inject" in text


def test_control_characters_are_rejected() -> None:
    with pytest.raises(ValidationError, match="control character"):
        Notification(module="request", subject="bell\x07")


@pytest.mark.parametrize("name", ["Bcc", "from", "Message-ID", "Content-Type"])
def test_dispatcher_owned_headers_cannot_be_set(name: str) -> None:
    with pytest.raises(ValidationError, match="set by the dispatcher"):
        Notification(module="request", headers={name: "x"})


def test_header_names_must_be_tokens() -> None:
    with pytest.raises(ValidationError, match="not a valid header name"):
        Notification(module="request", headers={"X-Bad Name": "x"})


def test_content_type_and_idempotency_key_are_checked() -> None:
    with pytest.raises(ValidationError, match="type/subtype"):
        Notification(module="request", attachments=[{"name": "a", "contentType": "pdf",
                                                     "data": b"x"}])
    with pytest.raises(ValidationError, match="idempotency key"):
        Notification(module="request", idempotency_key="has space")


def test_context_values_become_text() -> None:
    n = Notification(module="request", context={"priority": 2, "vip": True, "site": None})
    assert n.context == {"priority": "2", "vip": "true"}
    with pytest.raises(ValidationError, match="must be text or a number"):
        Notification(module="request", context={"nested": {"a": 1}})


def test_json_round_trip_with_camel_case_and_base64_attachments() -> None:
    n = Notification(
        module="request", namespace="acme", to=["Jane <jane@corp.example>"],
        subject="Ticket ##RE-7##", text_body="hi", html_body="<p>hi</p>",
        attachments=[{"name": "log.txt", "contentType": "text/plain", "data": b"\x00\xffdata"}],
        idempotency_key="req-7-created",
    )
    raw = n.model_dump_json(by_alias=True)
    assert '"idempotencyKey":"req-7-created"' in raw and '"textBody":"hi"' in raw
    assert Notification.model_validate_json(raw) == n
    assert "size=6" in repr(n.attachments[0])  # no attachment bytes in logs


def test_plain_address_fast_path_normalises_like_email_validator() -> None:
    import random
    import string

    from email_validator import EmailNotValidError, validate_email

    from reconciler.config.models.base import is_plain_email
    from reconciler.mail.envelope import _checked_address, validate_address

    rng = random.Random(7)
    local_chars = string.ascii_letters + string.digits + "_+-."
    label_chars = string.ascii_letters + string.digits + "-"
    fast = 0
    for _ in range(3000):
        local = "".join(rng.choice(local_chars) for _ in range(rng.randint(1, 20)))
        labels = ["".join(rng.choice(label_chars) for _ in range(rng.randint(1, 12)))
                  for _ in range(rng.randint(1, 3))]
        address = f"{local}@{'.'.join(labels)}.{rng.choice(['Example', 'COM', 'org', 'io'])}"
        try:
            checked = validate_email(address, check_deliverability=False,
                                     test_environment=True, allow_smtputf8=False)
        except EmailNotValidError:
            assert not is_plain_email(address), address
            with pytest.raises(ValueError, match="not a valid email address"):
                validate_address(address)
            continue
        fast += is_plain_email(address)
        expected = checked.ascii_email or checked.normalized
        assert validate_address(address) == expected, address
        _checked_address.cache_clear()
        assert validate_address(address) == expected, address  # and uncached
    assert fast > 500
    assert validate_address("Jorg@Corp.Example") == "Jorg@corp.example"


def _data_line_by_line(message: bytes) -> bytes:
    """RFC 5321 4.5.2 spelled out: every line (CRLF, bare LF or bare CR ends one) sent
    with CRLF, a leading dot doubled, then the closing dot line."""
    lines = re.split(rb"\r\n|\n|\r", message)
    if len(lines) > 1 and lines[-1] == b"":
        lines.pop()  # the message ended with a line end
    stuffed = (b"." + line if line.startswith(b".") else line for line in lines)
    return b"".join(line + b"\r\n" for line in stuffed) + b".\r\n"


@pytest.mark.parametrize(("message", "expected"), [
    (b"", b"\r\n.\r\n"),
    (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
    (b"no line end", b"no line end\r\n.\r\n"),
    (b".first\r\n.\r\n..two\r\nmid.dle\r\n", b"..first\r\n..\r\n...two\r\nmid.dle\r\n.\r\n"),
    (b"bare\nlf\n.dot\rcr\r\r\n", b"bare\r\nlf\r\n..dot\r\ncr\r\n\r\n.\r\n"),
])
def test_smtp_data_examples(message: bytes, expected: bytes) -> None:
    assert smtp_data(message) == expected


def test_smtp_data_matches_the_line_by_line_form() -> None:
    rng = random.Random(11)
    pieces = [b"a", b"b", b".", b"\r", b"\n", b"\r\n", b" "]
    for _ in range(5000):
        message = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 24)))
        assert smtp_data(message) == _data_line_by_line(message), message
