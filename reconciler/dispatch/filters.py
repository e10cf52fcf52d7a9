"""Recipient filters (SPEC O3): which of a notification's recipients may be sent to.

Semantics, chosen to be predictable rather than clever:

- An allow or ignore list of exact emails and domains; an address matches if it
  equals a listed email or its domain equals a listed domain, case-insensitively.
- Domains match exactly: ``example.com`` does not cover ``eu.example.com``. An
  allow list that silently admitted every subdomain would admit domains the author
  never saw; a subdomain is one more line in the list.
- A recipient listed twice (in to and cc, say) is sent to once, in the first field
  it appeared in (to, then cc, then bcc); the duplicate is not "ignored".

Each dropped recipient comes back with the filter and entry that dropped it, for
the SEND_IGNORED audit entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from reconciler.config.models.recipient_filter import FilterType, RecipientFilter
from reconciler.mail.envelope import Mailbox, Notification, RecipientField
from reconciler.runtime.addresses import AddressList


@dataclass(frozen=True, slots=True)
class IgnoredRecipient:
    mailbox: Mailbox
    field: RecipientField
    filter: str  # RecipientFilter name
    filter_type: FilterType
    entry: str | None  # the email or domain that matched; None for "not on the allow list"
    reason: str


@dataclass(frozen=True, slots=True)
class FilterResult:
    to: tuple[Mailbox, ...]
    cc: tuple[Mailbox, ...]
    bcc: tuple[Mailbox, ...]
    ignored: tuple[IgnoredRecipient, ...] = ()
    filter: str | None = None

    @property
    def kept(self) -> tuple[Mailbox, ...]:
        return (*self.to, *self.cc, *self.bcc)

    @property
    def empty(self) -> bool:
        """Nothing left to send to: the caller records "not sent" (O8 NO_RECIPIENTS)."""
        return not self.kept


def apply_filter(to: Iterable[Mailbox], cc: Iterable[Mailbox] = (), bcc: Iterable[Mailbox] = (),
                 recipient_filter: RecipientFilter | None = None) -> FilterResult:
    compiled = AddressList.of(recipient_filter) if recipient_filter is not None else None
    seen: set[str] = set()
    kept: dict[RecipientField, list[Mailbox]] = {"to": [], "cc": [], "bcc": []}
    ignored: list[IgnoredRecipient] = []
    for kind, mailboxes in zip(kept, (to, cc, bcc), strict=True):
        for mailbox in mailboxes:
            if mailbox.key in seen:
                continue
            seen.add(mailbox.key)
            dropped = _check(compiled, kind, mailbox) if compiled else None
            if dropped is None:
                kept[kind].append(mailbox)
            else:
                ignored.append(dropped)
    return FilterResult(tuple(kept["to"]), tuple(kept["cc"]), tuple(kept["bcc"]),
                        tuple(ignored), compiled.name if compiled else None)


def filter_notification(notification: Notification,
                        recipient_filter: RecipientFilter | None) -> FilterResult:
    return apply_filter(notification.to, notification.cc, notification.bcc, recipient_filter)


def _check(f: AddressList, kind: RecipientField, mailbox: Mailbox) -> IgnoredRecipient | None:
    hit = f.entry_for(mailbox.email)
    if (hit is not None) == (f.type == FilterType.ALLOW):
        return None  # on the allow list, or not on the ignore list
    if hit is None:
        return IgnoredRecipient(mailbox, kind, f.name, f.type, None,
                                f"{mailbox.email} is not on allow list {f.name!r} "
                                "(no listed email or domain matches)")
    what, entry = hit
    return IgnoredRecipient(mailbox, kind, f.name, f.type, entry,
                            f"{mailbox.email} matches {what} {entry!r} of ignore list {f.name!r}")
