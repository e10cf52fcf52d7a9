"""`reconcile status`: outgoing and incoming servers, as cards (SPEC O9, P7, I7).

The spec comes from the live store (what was applied), the health from the
status the daemon's monitor records; the two are kept apart, so nothing here
ever shows up as drift. Reading both needs no daemon and no mail server.
Incoming servers show the fetch state the runner keeps in the store (last
fetch, failures, error folder, pause): the same rows `reconcile incoming
status` reads, so an admin sees both directions on one screen.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click

from reconciler.cli.common import format_option, opened_store, show_time, store_option
from reconciler.config.desired import ResourceKey
from reconciler.health import record as rec
from reconciler.state.base import Store

KIND = "OutgoingServer"
INCOMING = "IncomingServer"
DISABLED = "Disabled"
NOT_CHECKED = "Not checked"
FETCHING, FAILING, NOT_FETCHED = "Fetching", "Failing", "Not fetched yet"
PAUSED, STOPPED = "Paused", "Stopped"
_MARK = {rec.REACHABLE: "●", rec.UNREACHABLE: "✗", DISABLED: "○", NOT_CHECKED: "?",
         FETCHING: "●", FAILING: "✗", PAUSED: "‖", STOPPED: "■", NOT_FETCHED: "?"}


@dataclass(frozen=True)
class HostRow:
    """One host of a server: ``role`` is main or alternate."""

    role: str
    address: str
    state: str
    error: str | None = None
    step: str | None = None
    active: bool = False

    def line(self) -> str:
        text = f"  {self.role} host {self.address}  {_MARK.get(self.state, '?')} {self.state}"
        if self.active:
            text += " (active)"
        if self.state == rec.UNREACHABLE and self.error:
            text += f"  last error: {self.error}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "address": self.address, "state": self.state,
                "lastError": self.error, "failedStep": self.step, "active": self.active}


@dataclass(frozen=True)
class Card:
    key: ResourceKey
    spec: Mapping[str, Any]
    health: rec.HealthRecord | None

    @property
    def enabled(self) -> bool:
        return bool(self.spec.get("enabled", True))

    @property
    def protocol(self) -> str:
        return str(self.spec.get("protocol", "smtp"))

    @property
    def address(self) -> str | None:
        return _address(self.spec.get("host"), self.spec.get("port"))

    @property
    def alternate(self) -> str | None:
        return _address(self.spec.get("alternateHost"),
                        self.spec.get("alternatePort", self.spec.get("port")))

    @property
    def state(self) -> str:
        if not self.enabled:
            return DISABLED
        return self.health.state if self.health is not None else NOT_CHECKED

    def hosts(self) -> list[HostRow]:
        """Main host, then the alternate: each with its own state, as last probed.

        The server's state is the state of the host sends go to first, so a dead
        alternate behind a healthy main host (or the reverse) shows only here.
        """
        spec_address = {rec.MAIN: self.address, rec.ALTERNATE: self.alternate}
        rows: list[HostRow] = []
        for role in (rec.MAIN, rec.ALTERNATE):
            found = self.health.hosts.get(role) if self.health is not None else None
            if found is not None and self.enabled:
                active = self.health is not None and self.health.active_host == role
                rows.append(HostRow(role, found.address or spec_address[role] or "?",
                                    found.state, found.error, found.step, active))
            elif spec_address[role] is not None:
                rows.append(HostRow(role, str(spec_address[role]),
                                    DISABLED if not self.enabled else NOT_CHECKED))
        return rows

    @property
    def hosts_down(self) -> list[HostRow]:
        """Hosts found unreachable while the server as a whole is Reachable."""
        if self.state != rec.REACHABLE:
            return []
        return [h for h in self.hosts() if h.state == rec.UNREACHABLE]

    @property
    def stale(self) -> bool:
        """The record is about a host the spec no longer names (changed since checked)."""
        if self.health is None or not self.enabled:
            return False
        main = self.health.hosts.get(rec.MAIN)
        return main is not None and main.address != self.address


@dataclass(frozen=True)
class IncomingCard:
    key: ResourceKey
    spec: Mapping[str, Any]
    fetch: Any  # reconciler.state.contract.ServerState, or None before the first fetch

    @property
    def enabled(self) -> bool:
        return bool(self.spec.get("enabled", True))

    @property
    def state(self) -> str:
        if not self.enabled:
            return DISABLED
        if self.fetch is None:
            return NOT_FETCHED
        if self.fetch.paused:
            # The runner's words for a full error folder (runner._stop_for_error_folder).
            return STOPPED if "stopFetchingAfter" in self.fetch.paused else PAUSED
        if self.fetch.last_fetch_at is None:
            return NOT_FETCHED
        return FAILING if self.fetch.consecutive_failures else FETCHING

    @property
    def endpoint(self) -> str | None:
        protocol = self.spec.get("protocol", "imaps")
        if protocol == "ews":
            return self.spec.get("ewsUrl") or "autodiscover"
        if protocol == "graph":
            return self.spec.get("graphEndpoint") or "Microsoft Graph"
        return _address(self.spec.get("host"), self.spec.get("port"))


def _address(host: Any, port: Any) -> str | None:
    if not host:
        return None
    host = f"[{host}]" if ":" in str(host) else str(host)
    return f"{host}:{port}" if port is not None else host


def _keys(store: Store, kind: str, namespace: str | None) -> list[tuple[ResourceKey, Any]]:
    return sorted(((key, resource.spec) for key, resource in store.snapshot().resources.items()
                   if key.kind == kind and namespace in (None, key.namespace)),
                  key=lambda pair: (pair[0].namespace, pair[0].name))


def load_cards(store: Store, namespace: str | None = None) -> list[Card]:
    statuses: Mapping[ResourceKey, Mapping[str, Any]] = store.statuses()
    return [Card(key, spec, rec.read(statuses.get(key, {})))
            for key, spec in _keys(store, KIND, namespace)]


def load_incoming_cards(store: Store, namespace: str | None = None) -> list[IncomingCard]:
    states = {(s.namespace, s.name): s for s in store.incoming.server_states(namespace)}
    return [IncomingCard(key, spec, states.get((key.namespace, key.name)))
            for key, spec in _keys(store, INCOMING, namespace)]


@click.command("status")
@click.option("--namespace", "-n", default=None, help="Only servers of this namespace.")
@format_option()
@store_option
def command(namespace: str | None, fmt: str, store_url: str | None) -> None:
    """Outgoing servers: Reachable / Unreachable with the last error, active host,
    and each host (main, alternate) with its own state and last error.
    Incoming servers: last fetch, failures in a row, error folder, paused or stopped.

    Health is recorded by the daemon's health monitor, fetch state by its
    incoming runner; a server neither has looked at yet says so.
    """
    with opened_store(store_url) as store:
        cards = load_cards(store, namespace)
        incoming = load_incoming_cards(store, namespace)
    if fmt == "json":
        click.echo(json.dumps({"servers": [_json(c) for c in cards],
                               "incoming": [_incoming_json(c) for c in incoming]},
                              indent=2, ensure_ascii=False))
        return
    lines = _text(cards, namespace)
    if incoming:
        lines += ["", *_incoming_text(incoming)]
    click.echo("\n".join(lines))


def _text(cards: list[Card], namespace: str | None) -> list[str]:
    if not cards:
        where = f" in namespace {namespace}" if namespace else ""
        return [f"no outgoing servers{where} in the live store"]
    counts = Counter(card.state for card in cards)
    words = {rec.REACHABLE: rec.REACHABLE, rec.UNREACHABLE: rec.UNREACHABLE,
             NOT_CHECKED: "not checked", DISABLED: "disabled"}
    summary = ", ".join(f"{counts[s]} {word}" for s, word in words.items() if s in counts)
    n = len(cards)
    degraded = sum(1 for card in cards if card.hosts_down)
    if degraded:
        summary += (f"; {degraded} Reachable server{'s' * (degraded != 1)} with a host "
                    "Unreachable")
    lines = [f"{n} outgoing server{'s' * (n != 1)}: {summary}"]
    now = datetime.now(UTC)
    for card in cards:
        lines += ["", *_card_lines(card, now)]
    return lines


def _card_lines(card: Card, now: datetime) -> list[str]:
    health = card.health
    hosts = card.hosts()
    checked_hosts = health is not None and card.enabled and len(hosts) > 1
    lines = [_card_head(card), _card_where(card)]
    if card.alternate and not checked_hosts:
        lines.append(f"  alternate {card.alternate}")
    if not card.enabled:
        return [*lines, "  not checked: disabled servers are not probed"]
    if health is None:
        if card.protocol not in rec.CHECKED_PROTOCOLS:
            return [*lines, f"  not checked: health checks for {card.protocol} are not "
                    "implemented yet"]
        return [*lines, "  not checked yet: the daemon's health monitor records this"]
    if health.active_host == rec.ALTERNATE:
        alternate = health.hosts.get(rec.ALTERNATE)
        main = health.hosts.get(rec.MAIN)
        via = alternate.address if alternate else card.alternate
        lines.append(f"  active host: alternate {via} (main host unreachable: "
                     f"{main.error if main else 'unknown'})")
    if checked_hosts:
        lines += [host.line() for host in hosts]
    return lines + _checked_lines(card, health, now)


def _card_head(card: Card) -> str:
    health, state = card.health, card.state
    head = f"{card.key.namespace}/{card.key.name}  {_MARK[state]} {state}"
    if health is not None and state in (rec.REACHABLE, rec.UNREACHABLE) and \
            health.last_change != health.last_checked:
        head += f" since {show_time(health.last_change)}"
    down = card.hosts_down
    if down:
        head += f" ({', '.join(h.role for h in down)} host Unreachable)"
    return head


def _card_where(card: Card) -> str:
    flags = ["enabled" if card.enabled else "disabled"]
    if card.spec.get("primary"):
        flags.append("primary")
    security = card.spec.get("security")
    return (f"  {card.protocol}  {card.address or '(no host)'}"
            + (f"  {security}" if security else "") + "  " + "  ".join(flags))


def _checked_lines(card: Card, health: rec.HealthRecord, now: datetime) -> list[str]:
    """The last error and likely fix, when and by whom it was checked, and whether the
    spec has moved since."""
    lines = []
    if card.state == rec.UNREACHABLE:
        lines.append(f"  last error: {health.last_error}")
        if health.hint:
            lines.append(f"  likely fix: {health.hint}")
    checked = f"  last checked {show_time(health.last_checked)} ({_ago(now, health.last_checked)})"
    if health.checked_by:
        checked += f" by {health.checked_by}"
    lines.append(checked)
    if card.stale:
        main = health.hosts.get(rec.MAIN)
        lines.append(f"  note: checked at {main.address if main else '?'}; the spec now "
                     f"says {card.address}, not checked yet")
    return lines


def _incoming_text(cards: list[IncomingCard]) -> list[str]:
    counts = Counter(card.state for card in cards)
    order = (FETCHING, FAILING, PAUSED, STOPPED, NOT_FETCHED, DISABLED)
    summary = ", ".join(f"{counts[s]} {s.lower()}" for s in order if s in counts)
    n = len(cards)
    lines = [f"{n} incoming server{'s' * (n != 1)}: {summary}"]
    now = datetime.now(UTC)
    for card in cards:
        lines += ["", *_incoming_lines(card, now)]
    return lines


def _incoming_lines(card: IncomingCard, now: datetime) -> list[str]:
    state, fetch = card.state, card.fetch
    head = f"{card.key.namespace}/{card.key.name}  {_MARK[state]} {state}"
    if fetch is not None and fetch.consecutive_failures:
        head += f" ({fetch.consecutive_failures} failed sessions in a row)"
    lines = [head, f"  {card.spec.get('protocol', 'imaps')}  {card.endpoint or '(no host)'}  "
             f"mailbox {card.spec.get('email')}  "
             + ("enabled" if card.enabled else "disabled")]
    if not card.enabled:
        lines.append("  not fetched: disabled")
        return lines
    if fetch is not None and fetch.paused:
        lines.append(f"  {'stopped' if state == STOPPED else 'paused'}: {fetch.paused}")
        if state == STOPPED:
            lines.append(f"  likely fix: look at the mails there, then `reconcile incoming "
                         f"retry {card.key.name} --namespace {card.key.namespace}`")
    if fetch is None or fetch.last_fetch_at is None:
        lines.append("  not fetched yet: the daemon's incoming runner records this")
        return lines
    if fetch.consecutive_failures and fetch.last_error:
        kind = f" ({fetch.last_error_kind})" if fetch.last_error_kind else ""
        lines.append(f"  last error{kind}: {fetch.last_error}")
    last = f"  last fetch {show_time(fetch.last_fetch_at)} ({_ago(now, fetch.last_fetch_at)})"
    if fetch.lease_owner:
        last += f" by {fetch.lease_owner}"
    lines.append(last)
    if fetch.last_success_at is not None and fetch.last_success_at != fetch.last_fetch_at:
        lines.append(f"  last good fetch {show_time(fetch.last_success_at)} "
                     f"({_ago(now, fetch.last_success_at)})")
    folder = card.spec.get("errorFolder") or {}
    if folder.get("enabled"):
        lines.append(f"  error folder {folder.get('name', 'reconciler-errors')}: "
                     f"{fetch.error_folder_count} mail(s)")
    return lines


def _incoming_json(card: IncomingCard) -> dict[str, Any]:
    data = card.fetch.to_json() if card.fetch is not None else None
    return {"kind": card.key.kind, "namespace": card.key.namespace, "name": card.key.name,
            "protocol": card.spec.get("protocol", "imaps"), "mailbox": card.spec.get("email"),
            "endpoint": card.endpoint, "enabled": card.enabled, "state": card.state,
            "fetch": data}


def _ago(now: datetime, then: datetime) -> str:
    seconds = max((now - then).total_seconds(), 0)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def _json(card: Card) -> dict[str, Any]:
    spec = card.spec
    return {
        "kind": card.key.kind, "namespace": card.key.namespace, "name": card.key.name,
        "protocol": card.protocol,
        **{field: spec.get(field) for field in
           ("host", "port", "security", "alternateHost", "alternatePort")},
        "enabled": card.enabled, "primary": bool(spec.get("primary", False)),
        "state": card.state, "stale": card.stale,
        "hosts": [host.to_json() for host in card.hosts()],
        "health": card.health.to_json() if card.health is not None else None,
    }
