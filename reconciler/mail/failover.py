"""Main host or alternate host (SPEC O6).

The seeds' products switch to the alternate server when the main one is
unreachable and stay there until restarted. Here the switch is remembered per
main endpoint (host, port) and undone by :meth:`HostSelector.mark_healthy`,
which the health monitor calls when probes of the main host pass again. A send
that falls back to the main host (because the alternate failed too) and
connects also clears the mark: that is first-hand evidence it is up.

Only "cannot reach" errors switch hosts (connection refused, DNS, connect or
greeting timeout). A server that answers with an error, fails TLS or refuses
the credentials is reachable; trying another host would hide a real problem.
:class:`SendProgress` is where such a send is (SMTP, EWS): the step, so a deadline or an
error can say what was going on, the host being tried and the hosts given up on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from reconciler.config.models.outgoing_server import OutgoingServerSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    alternate: bool = False

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def key(self) -> tuple[str, int]:
        return (self.host.lower(), self.port)


def endpoints_of(spec: OutgoingServerSpec) -> tuple[Endpoint, Endpoint | None]:
    if not spec.host or spec.port is None:
        raise ValueError("server has no host or port")
    main = Endpoint(spec.host, spec.port)
    alternate = None
    if spec.alternate_host:
        alternate = Endpoint(spec.alternate_host, spec.alternate_port or spec.port, True)
    return main, alternate


class HostSelector:
    """Remembers which main hosts are down; orders the hosts to try for a send."""

    def __init__(self) -> None:
        self._down: dict[tuple[str, int], str] = {}

    def candidates(self, spec: OutgoingServerSpec) -> tuple[Endpoint, ...]:
        main, alternate = endpoints_of(spec)
        if alternate is None:
            return (main,)
        if main.key in self._down:
            # Still try main last: if the alternate is down too, it is the only hope.
            return (alternate, main)
        return (main, alternate)

    def active(self, spec: OutgoingServerSpec) -> Endpoint:
        """The endpoint a send would try first (status: "active alternate server", P7)."""
        return self.candidates(spec)[0]

    def is_down(self, host: str, port: int) -> bool:
        return (host.lower(), port) in self._down

    def mark_down(self, endpoint: Endpoint, why: str) -> None:
        if endpoint.alternate:
            return  # only the main host's state decides the order
        if endpoint.key not in self._down:
            log.warning("main host %s unreachable, using the alternate host: %s",
                        endpoint.address, why)
        self._down[endpoint.key] = why

    def mark_healthy(self, host: str, port: int) -> None:
        if self._down.pop((host.lower(), port), None) is not None:
            log.info("main host %s:%s is healthy again; sends go back to it", host, port)

    def down(self) -> dict[tuple[str, int], str]:
        return dict(self._down)


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
