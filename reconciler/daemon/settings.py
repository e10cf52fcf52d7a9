"""How one daemon process runs: given on the command line or by environment.

Mail-server configuration is NOT here: it comes from the live store (what
`reconcile apply` wrote) and is hot-swapped when a new revision lands.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field


def _default_worker_id() -> str:
    # unique per process: outbox leases are owned by this string
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class DaemonSettings:
    store_url: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 8025
    api_tokens: tuple[str, ...] = ()  # secret references (env:/file:/enc:) of bearer tokens
    worker_id: str = field(default_factory=_default_worker_id)
    claim_batch: int = 100
    lease_seconds: float = 120.0
    poll_interval_seconds: float = 0.2  # idle wait between outbox claims
    reload_interval_seconds: float = 1.0  # how often the live revision is checked
    health_interval_seconds: float = 60.0
    notify_webhook: str | None = None  # admin notifications on health transitions
    ca_file: str | None = None  # extra trusted CAs for private mail servers
    shutdown_grace_seconds: float = 20.0
