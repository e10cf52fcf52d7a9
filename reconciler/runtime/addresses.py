"""A RecipientFilter compiled for lookups (SPEC O3).

Outgoing mail checks recipients against it (``dispatch.filters``); incoming
mail checks senders against the same lists, so the matching lives here, below
both. Domains match exactly and case-insensitively; an email entry beats a
domain entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.config.models.recipient_filter import FilterType, RecipientFilter


@dataclass(frozen=True, slots=True)
class AddressList:
    name: str
    type: FilterType
    emails: frozenset[str]
    domains: frozenset[str]

    @classmethod
    def of(cls, recipient_filter: RecipientFilter) -> AddressList:
        spec = recipient_filter.spec
        return cls(recipient_filter.metadata.name, FilterType(spec.type),
                   frozenset(e.strip().casefold() for e in spec.emails),
                   frozenset(d.strip().casefold().rstrip(".") for d in spec.domains))

    def entry_for(self, address: str) -> tuple[str, str] | None:
        """The (``"email"`` | ``"domain"``, entry) that ``address`` matches; email beats domain."""
        key = address.casefold()
        if key in self.emails:
            return "email", key
        domain = key.rpartition("@")[2].rstrip(".")
        if domain in self.domains:
            return "domain", domain
        return None
