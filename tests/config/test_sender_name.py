"""SPEC S1 at validate: a server's senderName goes into the From header of every
message it sends, so it obeys the same rule as intake's header text."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli.main import cli

SERVER = """apiVersion: reconciler.dev/v1
kind: OutgoingServer
metadata: {{name: desk, namespace: acme}}
spec:
  email: desk@acme.example
  senderName: {name}
  replyTo: support@acme.example
  host: smtp.acme.example
  security: starttls
  primary: true
"""


@pytest.mark.parametrize("name", [
    '"Desk =?utf-8?q?x=0D=0ABcc:_evil@attacker.example?="',
    '"Desk\\r\\nBcc: evil@attacker.example"',
    '"Desk\\u2028Bcc: evil@attacker.example"',
    '"Desk\\u0000"',
])
def test_a_sender_name_that_would_break_its_header_is_an_error_at_its_place(
        tmp_path: Path, name: str) -> None:
    (tmp_path / "servers.yaml").write_text(SERVER.format(name=name))
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "servers.yaml:6:15  spec.senderName  error: " in result.output
    assert "Traceback" not in result.output


def test_a_plain_sender_name_validates(tmp_path: Path) -> None:
    (tmp_path / "servers.yaml").write_text(SERVER.format(name='"Acme Desk (IT), Süd"'))
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 0, result.output
