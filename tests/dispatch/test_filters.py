"""O3 recipient filters: allow/ignore, emails and domains, OR semantics, case-insensitive."""

from __future__ import annotations

from reconciler.config.models.recipient_filter import FilterType
from reconciler.dispatch.filters import apply_filter, filter_notification
from reconciler.mail.envelope import Mailbox, Notification

from .kit import recipient_filter


def boxes(*addresses: str) -> list[Mailbox]:
    return [Mailbox.parse(a) for a in addresses]


def emails(mailboxes: tuple[Mailbox, ...]) -> list[str]:
    return [m.email for m in mailboxes]


def test_no_filter_keeps_everyone() -> None:
    result = apply_filter(boxes("a@corp.example"), boxes("b@else.example"), boxes("c@x.example"))
    assert emails(result.kept) == ["a@corp.example", "b@else.example", "c@x.example"]
    assert result.ignored == () and not result.empty and result.filter is None


def test_allow_list_keeps_listed_emails_or_domains_only() -> None:
    f = recipient_filter("corp-only", "allow", emails=["partner@outside.example"],
                         domains=["corp.example"])
    result = apply_filter(
        boxes("jane@corp.example", "partner@outside.example"),
        boxes("someone@outside.example"),
        boxes("boss@corp.example"),
        f,
    )
    assert emails(result.to) == ["jane@corp.example", "partner@outside.example"]
    assert emails(result.bcc) == ["boss@corp.example"]
    assert result.cc == ()
    [dropped] = result.ignored
    assert dropped.mailbox.email == "someone@outside.example"
    assert dropped.field == "cc"
    assert dropped.filter == "corp-only" and dropped.filter_type == FilterType.ALLOW
    assert dropped.entry is None
    assert "not on allow list 'corp-only'" in dropped.reason


def test_ignore_list_drops_listed_emails_and_domains_and_names_the_entry() -> None:
    f = recipient_filter("hr-blocklist", "ignore", emails=["all-staff@corp.example"],
                         domains=["lists.corp.example"])
    result = apply_filter(
        boxes("all-staff@corp.example", "jane@corp.example", "weekly@lists.corp.example"),
        recipient_filter=f,
    )
    assert emails(result.to) == ["jane@corp.example"]
    by_address = {i.mailbox.email: i for i in result.ignored}
    assert by_address["all-staff@corp.example"].entry == "all-staff@corp.example"
    assert "matches email 'all-staff@corp.example'" in by_address["all-staff@corp.example"].reason
    assert by_address["weekly@lists.corp.example"].entry == "lists.corp.example"
    assert "matches domain 'lists.corp.example' of ignore list 'hr-blocklist'" in (
        by_address["weekly@lists.corp.example"].reason)


def test_matching_is_case_insensitive() -> None:
    f = recipient_filter("block", "ignore", emails=["All-Staff@Corp.Example"],
                         domains=["LISTS.example"])
    result = apply_filter(boxes("ALL-STAFF@corp.example", "x@Lists.Example", "ok@corp.example"),
                          recipient_filter=f)
    assert emails(result.to) == ["ok@corp.example"]
    assert len(result.ignored) == 2


def test_domains_match_exactly_not_subdomains() -> None:
    allow = recipient_filter("corp", "allow", domains=["corp.example"])
    result = apply_filter(boxes("a@corp.example", "b@eu.corp.example"), recipient_filter=allow)
    assert emails(result.to) == ["a@corp.example"]
    assert [i.mailbox.email for i in result.ignored] == ["b@eu.corp.example"]

    ignore = recipient_filter("corp", "ignore", domains=["corp.example"])
    result = apply_filter(boxes("a@corp.example", "b@eu.corp.example"), recipient_filter=ignore)
    assert emails(result.to) == ["b@eu.corp.example"]


def test_domain_entry_does_not_match_a_lookalike_suffix() -> None:
    f = recipient_filter("corp", "allow", domains=["corp.example"])
    result = apply_filter(boxes("a@evilcorp.example"), recipient_filter=f)
    assert result.empty


def test_everyone_filtered_leaves_nothing_to_send() -> None:
    f = recipient_filter("corp", "allow", domains=["corp.example"])
    n = Notification(module="request", to=["x@else.example"], cc=["y@else.example"])
    result = filter_notification(n, f)
    assert result.empty
    assert [i.field for i in result.ignored] == ["to", "cc"]


def test_duplicates_are_sent_once_in_their_first_field() -> None:
    result = apply_filter(boxes("a@corp.example"), boxes("A@corp.example", "b@corp.example"),
                          boxes("b@CORP.example"))
    assert emails(result.to) == ["a@corp.example"]
    assert emails(result.cc) == ["b@corp.example"]
    assert result.bcc == () and result.ignored == ()


def test_notification_without_recipients_is_empty() -> None:
    assert filter_notification(Notification(module="request"), None).empty
