"""`reconcile status`: outgoing servers with their health, as cards (SPEC O9, P7).

The spec comes from the live store (what was applied), the health from the
status the daemon's monitor records; the two are kept apart, so nothing here
ever shows up as drift. Reading both needs no daemon and no mail server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click

from reconciler.cli.common import opened_store, show_time, store_option
from reconciler.config.desired import ResourceKey
from reconciler.health import record as rec

KIND = "OutgoingServer"
DISABLED = "Disabled"
NOT_CHECKED = "Not checked"
_MARK = {rec.REACHABLE: "●", rec.UNREACHABLE: "✗", DISABLED: "○", NOT_CHECKED: "?"}


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

    @property
    def stale(self) -> bool:
        """The record is about a host the spec no longer names (changed since checked)."""
        if self.health is None or not self.enabled:
            return False
        main = self.health.hosts.get(rec.MAIN)
        return main is not None and main.address != self.address


def _address(host: Any, port: Any) -> str | None:
    if not host:
        return None
    host = f"[{host}]" if ":" in str(host) else str(host)
    return f"{host}:{port}" if port is not None else host


def load_cards(store: Any, namespace: str | None = None) -> list[Card]:
    live = store.snapshot()
    statuses: Mapping[ResourceKey, Mapping[str, Any]] = store.statuses()
    cards = [
        Card(key, resource.spec, rec.read(statuses.get(key, {})))
        for key, resource in live.resources.items()
        if key.kind == KIND and (namespace is None or key.namespace == namespace)
    ]
    return sorted(cards, key=lambda c: (c.key.namespace, c.key.name))


@click.command("status")
@click.option("--namespace", "-n", default=None, help="Only servers of this namespace.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@store_option
def command(namespace: str | None, fmt: str, store_url: str | None) -> None:
    """Outgoing servers: Reachable / Unreachable with the last error, active host.

    Health is recorded by the daemon's health monitor; a server it has not
    checked yet says so.
    """
    with opened_store(store_url) as store:
        cards = load_cards(store, namespace)
    if fmt == "json":
        click.echo(json.dumps({"servers": [_json(c) for c in cards]}, indent=2,
                              ensure_ascii=False))
        return
    click.echo("\n".join(_text(cards, namespace)))


def _text(cards: list[Card], namespace: str | None) -> list[str]:
    if not cards:
        where = f" in namespace {namespace}" if namespace else ""
        return [f"no outgoing servers{where} in the live store"]
    counts: dict[str, int] = {}
    for card in cards:
        counts[card.state] = counts.get(card.state, 0) + 1
    words = {rec.REACHABLE: rec.REACHABLE, rec.UNREACHABLE: rec.UNREACHABLE,
             NOT_CHECKED: "not checked", DISABLED: "disabled"}
    summary = ", ".join(f"{counts[s]} {word}" for s, word in words.items() if s in counts)
    n = len(cards)
    lines = [f"{n} outgoing server{'s' * (n != 1)}: {summary}"]
    now = datetime.now(UTC)
    for card in cards:
        lines += ["", *_card_lines(card, now)]
    return lines


def _card_lines(card: Card, now: datetime) -> list[str]:
    health = card.health
    state = card.state
    head = f"{card.key.namespace}/{card.key.name}  {_MARK[state]} {state}"
    if health is not None and state in (rec.REACHABLE, rec.UNREACHABLE) and \
            health.last_change != health.last_checked:
        head += f" since {show_time(health.last_change)}"
    flags = ["enabled" if card.enabled else "disabled"]
    if card.spec.get("primary"):
        flags.append("primary")
    where = card.address or "(no host)"
    security = card.spec.get("security")
    lines = [head, f"  {card.protocol}  {where}" + (f"  {security}" if security else "")
             + "  " + "  ".join(flags)]
    if card.alternate:
        lines.append(f"  alternate {card.alternate}")
    if not card.enabled:
        lines.append("  not checked: disabled servers are not probed")
        return lines
    if health is None:
        if card.protocol not in rec.CHECKED_PROTOCOLS:
            lines.append(f"  not checked: health checks for {card.protocol} are not "
                         "implemented yet")
        else:
            lines.append("  not checked yet: the daemon's health monitor records this")
        return lines
    if health.active_host == rec.ALTERNATE:
        alternate = health.hosts.get(rec.ALTERNATE)
        main = health.hosts.get(rec.MAIN)
        via = alternate.address if alternate else card.alternate
        lines.append(f"  active host: alternate {via} (main host unreachable: "
                     f"{main.error if main else 'unknown'})")
    if state == rec.UNREACHABLE:
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
        "kind": card.key.kind,
        "namespace": card.key.namespace,
        "name": card.key.name,
        "protocol": card.protocol,
        "host": spec.get("host"),
        "port": spec.get("port"),
        "security": spec.get("security"),
        "alternateHost": spec.get("alternateHost"),
        "alternatePort": spec.get("alternatePort"),
        "enabled": card.enabled,
        "primary": bool(spec.get("primary", False)),
        "state": card.state,
        "stale": card.stale,
        "health": card.health.to_json() if card.health is not None else None,
    }
