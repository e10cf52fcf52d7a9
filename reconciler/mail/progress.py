"""Where a send is, for the transports that fail over to an alternate host (SMTP, EWS):
the step (so a deadline or an error can say what was going on), the host being tried and
the hosts given up on, kept in the shared :class:`~reconciler.mail.failover.HostSelector`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.mail.failover import Endpoint, HostSelector


@dataclass
class SendProgress:
    step: str = "preparing"
    endpoint: Endpoint | None = None
    unreachable: list[str] = field(default_factory=list)

    @property
    def host(self) -> str | None:
        return self.endpoint.address if self.endpoint else None

    @property
    def used_alternate(self) -> bool:
        return bool(self.endpoint and self.endpoint.alternate)

    def give_up_on(self, selector: HostSelector, endpoint: Endpoint, detail: str) -> None:
        """``endpoint`` cannot be reached (``detail`` already redacted): the next candidate
        is tried, and the selector skips it for a while."""
        self.unreachable.append(f"{endpoint.address}: {detail}")
        selector.mark_down(endpoint, detail)

    def reached(self, selector: HostSelector, endpoint: Endpoint) -> None:
        if not endpoint.alternate:
            selector.mark_healthy(endpoint.host, endpoint.port)

    def failover_note(self) -> str:
        """``; after failing over from ...`` for a sent message, or nothing."""
        if not self.unreachable:
            return ""
        return "; after failing over from " + "; ".join(self.unreachable)
