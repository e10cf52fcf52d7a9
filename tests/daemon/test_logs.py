"""Structured JSON logs (SPEC X3): one object per line with the record's fields, and no
secret in any of them (SPEC C5)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from reconciler.config.secrets import SecretRef
from reconciler.daemon import logs

SECRET = "hunter2-Pa55w0rd-value"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.sig"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("reconciler.test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_record_is_one_json_object_with_its_fields(
    captured: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = captured
    logger.info("sent %s via %s", "<id@desk.example>", "main",
                extra={"outbox_id": 7, "server": "main", "recipients": ["a@corp.example"]})
    logger.warning("multi\nline message")
    first, second = lines(stream)
    assert first["level"] == "INFO" and first["logger"] == "reconciler.test.logs"
    assert first["message"] == "sent <id@desk.example> via main"
    assert (first["outbox_id"], first["server"], first["recipients"]) == (
        7, "main", ["a@corp.example"])
    assert str(first["time"]).endswith("Z") and "T" in str(first["time"])
    assert second["message"] == "multi\nline message"  # escaped inside one line
    assert len(stream.getvalue().splitlines()) == 2


def test_secrets_are_masked_in_messages_fields_and_tracebacks(
    captured: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = captured
    logger.info("connecting with password=%s", SECRET)
    logger.info("calling the API", extra={
        "password": SECRET, "headers": {"Authorization": f"Bearer {TOKEN}"},
        "url": f"postgresql://desk:{SECRET}@db.example/desk",
        "ref": SecretRef.model_validate({"secretRef": "env:SMTP_PASSWORD"}),
        "auth": {"type": "basic", "password": {"secretRef": "env:SMTP_PASSWORD"}},
    })
    try:
        raise RuntimeError(f"AUTH PLAIN {SECRET} refused; Bearer {TOKEN}")
    except RuntimeError:
        logger.exception("send failed")
    text = stream.getvalue()
    assert SECRET not in text and TOKEN not in text
    message, fields, failure = lines(stream)
    assert message["message"] == "connecting with password=***"
    assert fields["password"] == "***"
    assert fields["headers"] == {"Authorization": "***"}
    assert fields["url"] == "postgresql://desk:***@db.example/desk"
    # References are not secrets: they stay readable, so people know where to look.
    assert fields["ref"] == {"secretRef": "env:SMTP_PASSWORD"}
    assert fields["auth"] == {"type": "basic", "password": {"secretRef": "env:SMTP_PASSWORD"}}
    assert "RuntimeError" in str(failure["exception"])


def test_configure_sends_every_logger_through_the_formatter() -> None:
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        handler = logs.configure(logging.INFO, stream)
        logging.getLogger("uvicorn.error").info("Uvicorn running")
        logging.getLogger("reconciler.daemon.app").debug("not shown at INFO")
        assert root.handlers == [handler]
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in before:
            root.addHandler(h)
        root.setLevel(level)
    [line] = lines(stream)
    assert (line["logger"], line["message"]) == ("uvicorn.error", "Uvicorn running")
