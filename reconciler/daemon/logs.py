"""Structured JSON logs of the daemon (SPEC X3): one JSON object per line.

Each line has ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``,
then the record's extra fields (``log.info(..., extra={"outbox_id": 7})``)
and ``exception`` for a traceback. Log shippers index the fields; people
can still read the message.

Nothing secret may reach a log line (SPEC C5). Transports already pass their
texts through a redactor that knows the resolved secrets; here, as the last
line of defence, every message, field and traceback goes through the same
helpers the audit uses: secret references are shown as references
(:func:`reconciler.config.secrets.redact`), and credential shapes in free
text (URL passwords, AUTH arguments, bearer tokens, ``password=...``) are
masked (:func:`reconciler.state.audit.redact_text`). Fields whose name says
they hold a secret are masked whatever their value.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from reconciler.config.secrets import SecretRef, redact
from reconciler.state.audit import MASK, redact_text

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName", "color_message",
}
_SECRET_NAMES = ("password", "passwd", "secret", "token", "authorization", "api_key", "apikey",
                 "private_key", "credential")


def _secret_name(name: str) -> bool:
    low = name.lower().replace("-", "_")
    return any(s in low for s in _SECRET_NAMES)


def clean(value: Any) -> Any:
    """A JSON-ready copy of ``value`` with secrets masked."""
    if isinstance(value, SecretRef):
        return redact(value)
    if isinstance(value, Mapping):
        if set(value) == {"secretRef"}:
            return redact(dict(value))
        return {str(k): (MASK if _secret_name(str(k)) and v is not None and not
                         (isinstance(v, Mapping) and set(v) == {"secretRef"}) else clean(v))
                for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [clean(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return redact_text(str(value))


# One encoder for every line: json.dumps with options builds a new one per call.
_ENCODE = json.JSONEncoder(ensure_ascii=False, default=str).encode


class JsonFormatter(logging.Formatter):
    # The time text up to the seconds, of the last second seen: the daemon writes a line
    # per message sent, and formatting a datetime each time was a third of the formatting.
    _second: tuple[int, str] = (-1, "")

    def _time(self, created: float) -> str:
        second = int(created)
        if self._second[0] != second:
            self._second = (second, datetime.fromtimestamp(second, UTC).strftime(
                "%Y-%m-%dT%H:%M:%S"))
        return f"{self._second[1]}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_") or key in line:
                continue
            line[key] = MASK if _secret_name(key) and value is not None else clean(value)
        if record.exc_info:
            line["exception"] = redact_text(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact_text(record.exc_text)
        if record.stack_info:
            line["stack"] = redact_text(record.stack_info)
        return _ENCODE(line)


def configure(level: int | str = logging.INFO, stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record of the process to ``stream`` (stderr) as JSON lines.

    Replaces the root logger's handlers, so uvicorn's loggers (which
    propagate to the root when uvicorn is given ``log_config=None``) end up
    in the same format. Returns the handler, for tests to remove.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
