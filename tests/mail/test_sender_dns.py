"""The sender domain's SPF, DKIM and DMARC records, asked of a DNS peer on loopback."""

from __future__ import annotations

import socket

from peers.dns_peer import DnsPeer

from reconciler.mail.sender_dns import check_domain

DOMAIN = "desk.example"


def _server(peer: DnsPeer) -> tuple[str, int]:
    host, port = peer.address.rsplit(":", 1)
    return host, int(port)


async def test_published_records_pass(dns_peer: DnsPeer) -> None:
    dns_peer.records.update({
        DOMAIN: ["google-site-verification=x", "v=spf1 ip4:192.0.2.10 -all"],
        f"s2024._domainkey.{DOMAIN}": ["v=DKIM1; k=rsa; p=MIIBIjANBgkq"],
        f"_dmarc.{DOMAIN}": ["v=DMARC1; p=quarantine"]})
    report = await check_domain(DOMAIN, selectors=["s2024"], nameserver=_server(dns_peer))
    assert [(c.record, c.ok) for c in report.checks] == [("SPF", True), ("DKIM", True),
                                                          ("DMARC", True)]
    assert report.checks[0].detail == "v=spf1 ip4:192.0.2.10 -all"
    assert report.checks[1].detail == f"key published at s2024._domainkey.{DOMAIN}"


async def test_missing_records_say_what_to_publish(dns_peer: DnsPeer) -> None:
    dns_peer.records[DOMAIN] = ["v=spf1 +all"]
    report = await check_domain(DOMAIN, nameserver=_server(dns_peer))
    spf, dkim, dmarc = report.checks
    assert not spf.ok and "allows every server" in spf.detail and "-all" in spf.fix
    assert not dkim.ok and "--dkim-selector" in dkim.fix
    assert f"selector1._domainkey.{DOMAIN}" in dns_peer.asked  # the common selectors tried
    assert not dmarc.ok and f"_dmarc.{DOMAIN}" in dmarc.fix and "v=DMARC1" in dmarc.fix


async def test_a_silent_resolver_skips_the_check_and_reserved_names_are_never_asked(
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, never answers
        silent.bind(("127.0.0.1", 0))
        nameserver = ("127.0.0.1", int(silent.getsockname()[1]))
        report = await check_domain("corp.net", nameserver=nameserver, timeout=0.5)
    assert report.checks == () and "DNS did not answer" in report.skipped
    report = await check_domain(DOMAIN)  # the system resolver: not asked for .example
    assert report.checks == () and "reserved" in report.skipped
