"""Reading raw mail: headers, charsets, bodies, attachments, forwarded originals."""

# ruff: noqa: RUF001  (the corpus is about non-ASCII text: dashes, CJK and Cyrillic are the point)
from __future__ import annotations

import pytest

from reconciler.incoming.pipeline.event import Address
from reconciler.incoming.pipeline.parse import decode_text, parse

from .kit import mail


def test_addresses_subject_threading_headers() -> None:
    m = parse(mail("03-reply-threaded-references.eml"))
    assert m.sender == Address("bob@acme.example", "Bob Stone")
    assert m.to == (Address("support@acme.example", "IT Support"),)
    assert m.in_reply_to == "notif-555@desk.acme.example"
    assert m.references == ("notif-554@desk.acme.example", "notif-555@desk.acme.example")
    assert m.message_id == "reply-0003@mail.acme.example" and not m.message_id_synthetic


def test_rfc822_forward_is_an_eml_attachment_and_names_the_original_sender() -> None:
    m = parse(mail("08-forward-rfc822-ignored.eml"))
    assert m.forwarded_from == [Address("winner@ignored.example", "Prize Desk")]
    (eml,) = m.attachments
    assert (eml.name, eml.content_type) == ("You are our lucky winner.eml", "message/rfc822")
    assert b"Claim your prize now." in eml.data


def test_inline_image_keeps_content_id_and_html_keeps_the_cid_link() -> None:
    m = parse(mail("12-related-inline-image.eml"))
    (image,) = m.attachments
    assert (image.inline, image.content_id, image.data[:4]) == (
        True, "shot-1@acme.example", b"\x89PNG")
    assert 'src="cid:shot-1@acme.example"' in (m.html_body or "")


def test_missing_boundary_keeps_raw_text_and_says_so() -> None:
    m = parse(mail("27-broken-no-boundary.eml"))
    assert "The scanner is not found by the PC in room 12." in m.text_body
    assert any("no usable boundary" in n for n in m.notes)


def test_truncated_base64_is_marked_damaged() -> None:
    (cut,) = parse(mail("21-attachment-truncated-base64.eml")).attachments
    assert cut.damaged and "truncated" in cut.damaged


_RUSSIAN = "Здравствуйте! Принтер в кабинете 214 не печатает уже второй день, помогите.\n"


@pytest.mark.parametrize(("data", "charset", "text", "noted"), [
    ("Grüße".encode("latin-1"), "iso-8859-1", "Grüße", False),
    (b"\x93quoted\x94 \x80", "us-ascii", "\u201cquoted\u201d \u20ac", True),
    ("投影仪".encode("gbk"), "gb2312", "投影仪", False),
    ("①".encode("cp932"), "shift_jis", "①", False),
    (b"plain\r\ntext", None, "plain\ntext", False),
    (b"caf\xc3\xa9", "no-such-charset", "café", True),
    (b"caf\xe9", "no-such-charset", "café", True),
    (b"\xff\xfe", "koi8-u", "\u042a\u0427", False),
    # Declared charset wrong: UTF-8 first, then what charset-normalizer detects.
    ("打印机卡纸了".encode(), "gb2312", "打印机卡纸了", True),
    (_RUSSIAN.encode("cp1251"), "gb2312", _RUSSIAN, True),
])
def test_decode_text(data: bytes, charset: str | None, text: str, noted: bool) -> None:
    got, note = decode_text(data, charset)
    assert got == text
    assert (note is not None) == noted


def test_raw_8bit_headers_are_read_as_utf8() -> None:
    m = parse(mail("40-8bit-headers.eml"))
    assert m.subject == "Contraseña caducada – no puedo entrar"
    assert m.sender == Address("jose@acme.example", "José Núñez")


def test_windows_1252_punctuation_in_a_latin1_encoded_word() -> None:
    assert parse(mail("22-iso-8859-1-qp.eml")).subject == "Kaffeemaschine defekt – bitte prüfen"


def test_broken_address_header_falls_back_to_the_loose_split() -> None:
    raw = (b"From: \"Broken <quote\" <jane@acme.example>>\r\nTo: support@acme.example\r\n"
           b"Subject: x\r\n\r\nbody\r\n")
    assert parse(raw).sender is not None
    assert parse(raw).sender.email == "jane@acme.example"  # type: ignore[union-attr]


@pytest.mark.parametrize("raw", [b"", b"   \r\n", b"\x00\x01 no headers here\n"])
def test_nothing_mail_like_raises_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse(raw)
