"""`reconcile send` refuses header injection as the API does (SPEC S1): values are
judged after RFC 2047 decoding, and nothing is stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli.main import cli
from reconciler.state import open_store

INJECT = "=?utf-8?q?x=0D=0AReply-To:_evil@attacker.example?="


@pytest.fixture
def db(store_url: str) -> str:
    open_store(store_url).close()  # `send` wants a store that exists
    return store_url


@pytest.mark.parametrize(("args", "says"), [
    (("--subject", INJECT), "subject: subject (once its RFC 2047 encoded-word is decoded) "
                            "contains a line break"),
    (("--subject", "=?utf-8?b?eAB5?="), "subject: subject (once its RFC 2047 encoded-word is "
                                        "decoded) contains a control character"),
    (("--to", f"{INJECT} <jane@corp.example>"), "to.0: recipient (once its RFC 2047"),
    (("--cc", "=?latin-1?q?Ops=0ABcc:_x@evil.example?= <ops@corp.example>"), "cc.0: "),
])
def test_an_encoded_line_break_or_control_is_refused_and_nothing_stored(
    db: str, args: tuple[str, ...], says: str
) -> None:
    base = {"--to": "jane@corp.example", "--subject": "Ticket updated"}
    flat = [x for k, v in base.items() if k not in args for x in (k, v)]
    result = CliRunner().invoke(cli, ["send", "--store", db, "--module", "request",
                                      "--text", "hello", *flat, *args])
    assert result.exit_code == 1, result.output
    assert says in result.output
    assert "Traceback" not in result.output and "evil" not in result.output
    with open_store(db) as store:
        assert sum(store.outbox.depth(finished=True).values()) == 0


def test_an_attachment_whose_file_name_decodes_to_a_line_break_is_refused(
    db: str, tmp_path: Path
) -> None:
    attachment = tmp_path / "utf-8''report%0D%0AReply-To%3A%20evil%40attacker.example"
    attachment.write_bytes(b"data")
    result = CliRunner().invoke(cli, ["send", "--store", db, "--module", "request",
                                      "--to", "jane@corp.example", "--subject", "s",
                                      "--text", "hello", "--attach", str(attachment)])
    assert result.exit_code == 1, result.output
    assert "attachments.0.name: attachment name (once its RFC 2231 %-escapes are decoded) " \
           "contains a line break" in result.output
    with open_store(db) as store:
        assert sum(store.outbox.depth(finished=True).values()) == 0
