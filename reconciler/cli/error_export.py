"""What `reconcile incoming errors export` writes: the failed mail as it came, with the
failure details as ``X-Reconciler-Error-*`` header fields on top, so the file opens in
any mail client and can be fed to the pipeline again. Every detail goes through the
audit redaction (credential shapes masked), as everything the program shows does."""

from __future__ import annotations

import base64
from email.header import Header
from typing import Any

from reconciler.state.audit import redact_text

PREFIX = "X-Reconciler-Error-"


def export_text(record: Any) -> tuple[bytes, str]:
    """(the file's bytes, a note for the user) for an opened ``ErrorRecord``."""
    details = record.details
    fields = [("Id", str(record.id)), ("Server", f"{record.namespace}/{record.server}"),
              ("Marker", record.marker), ("Code", str(details.get("code") or record.code)),
              ("Stage", details.get("stage")), ("Reason", details.get("reason")),
              ("Status", details.get("status")), ("Failed-At", record.created_at.isoformat()),
              ("Size", details.get("size"))]
    head = b"".join(_field(name, value) for name, value in fields if value not in (None, ""))
    if "raw" in details:
        raw = base64.b64decode(details["raw"])
        note = "; the mail was cut at 10 MiB" if details.get("rawTruncated") else ""
        return head + raw, note
    # saved before whole mails were kept: only the header section exists
    headers = str(details.get("headers", "")).encode()
    return head + headers + b"\r\n\r\n", "; only its headers were saved"


def _field(name: str, value: object) -> bytes:
    text = " ".join(redact_text(str(value)).split())  # one line, whatever the reason held
    charset = "us-ascii" if text.isascii() else "utf-8"  # RFC 2047 words only when needed
    encoded = Header(text, charset, header_name=PREFIX + name).encode(linesep="\r\n")
    return f"{PREFIX}{name}: {encoded}\r\n".encode()
