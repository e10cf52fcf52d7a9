"""The one meaning of "verified" for every outgoing connection (SMTP, Graph, EWS) and the
incoming fetchers: the system CAs plus an optional extra CA bundle for private CAs
(``ca_file``, else the ``RECONCILE_TLS_CA_FILE`` environment variable). There is
deliberately no switch to turn verification off.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

CA_FILE_ENV = "RECONCILE_TLS_CA_FILE"


def tls_context(ca_file: str | Path | None = None) -> ssl.SSLContext:
    """A verifying client context: system CAs, plus ``ca_file`` when given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file:
        context.load_verify_locations(cafile=str(ca_file))
    # create_default_context already sets these; asserting them documents the promise.
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def transport_tls(ca_file: str | Path | None = None) -> ssl.SSLContext:
    """What a transport verifies with: ``ca_file``, else the bundle the environment names."""
    return tls_context(ca_file or os.environ.get(CA_FILE_ENV) or None)


def ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind ``exc`` (libraries wrap it as a cause or context), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
