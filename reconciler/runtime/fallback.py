"""The primary as fallback (SPEC O15, the ServiceOps seed's "Primary" switch).

A rule picks a server for a reason (its own sender, relay or compliance), so its
mail is not diverted at the first failed connection: retries ride out a restart.
Once every host of that server (main and alternate) has been Unreachable for
``MailSettings.primaryFallbackAfterSeconds``, its mail goes through the
namespace's enabled primary instead, and every audit row says so with both
servers. ``0`` turns the fallback off.

Health comes from the monitor (``health.record``): :class:`Reachability` is the
shared view it writes after each cycle, as leader or follower, and dispatch
reads per message without touching the store. A primary that is down itself is
no fallback: the mail keeps waiting for the rule's server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from reconciler.config.models.mail_settings import DEFAULT_PRIMARY_FALLBACK_S
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.runtime.namespace import NamespaceConfig

ServerKey = tuple[str, str]  # (namespace, server name)


class Reachability:
    """Servers whose hosts are all Unreachable, and since when."""

    def __init__(self) -> None:
        self._down: Mapping[ServerKey, datetime] = MappingProxyType({})

    def replace(self, down: Mapping[ServerKey, datetime]) -> None:
        """The monitor's latest view; swapped whole, so readers never see half of it."""
        self._down = MappingProxyType(dict(down))

    def down_since(self, server: OutgoingServer) -> datetime | None:
        return self._down.get((server.metadata.namespace, server.metadata.name))


@dataclass(frozen=True, slots=True)
class Fallback:
    primary: OutgoingServer
    instead_of: str
    down_since: datetime

    def details(self) -> dict[str, Any]:
        """What the audit rows of the attempt carry, naming both servers."""
        return {"fallback": {"from": self.instead_of, "to": self.primary.metadata.name,
                             "unreachableSince": self.down_since.isoformat()}}

    @property
    def reason(self) -> str:
        return (f"server {self.instead_of} has had every host Unreachable since "
                f"{self.down_since.isoformat(timespec='seconds')}; sent through the primary "
                f"{self.primary.metadata.name}")


def primary_fallback(ns: NamespaceConfig, server: OutgoingServer, health: Reachability,
                     now: datetime | None = None) -> Fallback | None:
    """The primary to send through instead of ``server``, or None to keep ``server``."""
    delay = (ns.settings.spec.primary_fallback_after_seconds if ns.settings
             else DEFAULT_PRIMARY_FALLBACK_S)
    since = health.down_since(server)
    if not delay or since is None or server.spec.primary:
        return None
    if ((now or datetime.now(UTC)) - since).total_seconds() < delay:
        return None
    primary = ns.primary()
    if primary is None or primary is server or health.down_since(primary) is not None:
        return None
    return Fallback(primary, server.metadata.name, since)
