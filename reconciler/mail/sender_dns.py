"""Will receivers trust mail from this sender domain? Its SPF, DKIM and DMARC records
(what spam filters look up first), each with what is missing and how to fix it.

Asked by `reconcile test-connection` on an OutgoingServer, through the system resolver
or one given as HOST:PORT. Names under the domains reserved for examples and tests
(RFC 2606, RFC 6761) are not looked up through the system resolver: they have no
records anywhere, and asking would only leak the query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

# Selectors tried when none is given: the providers' and the common defaults.
COMMON_SELECTORS = ("default", "selector1", "selector2", "google", "dkim", "mail", "s1", "s2", "k1")
_RESERVED_TLDS = ("example", "invalid", "localhost", "test", "local")
_RESERVED_DOMAINS = ("example.com", "example.net", "example.org")


@dataclass(frozen=True)
class RecordCheck:
    record: str  # SPF | DKIM | DMARC
    ok: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class DomainReport:
    domain: str
    resolver: str  # "system" or HOST:PORT
    checks: tuple[RecordCheck, ...] = ()
    skipped: str = ""  # why nothing was looked up


class _Unreachable(Exception):
    pass


def reserved(domain: str) -> bool:
    name = domain.lower().rstrip(".")
    return (name.rsplit(".", 1)[-1] in _RESERVED_TLDS
            or any(name == d or name.endswith("." + d) for d in _RESERVED_DOMAINS))


async def check_domain(domain: str, *, selectors: Sequence[str] = (),
                       nameserver: tuple[str, int] | None = None,
                       timeout: float = 5.0) -> DomainReport:
    """SPF, DKIM (``selectors``, else the common ones) and DMARC of ``domain``."""
    where = f"{nameserver[0]}:{nameserver[1]}" if nameserver else "system"
    if nameserver is None and reserved(domain):
        return DomainReport(domain, where, skipped=f"{domain} is reserved for examples and "
                            "tests: it has no DNS records to check")
    resolver = dns.asyncresolver.Resolver(configure=nameserver is None)
    if nameserver is not None:
        resolver.nameservers, resolver.port = [nameserver[0]], nameserver[1]
    resolver.lifetime = timeout
    try:
        checks = (await _spf(resolver, domain), await _dkim(resolver, domain, selectors),
                  await _dmarc(resolver, domain))
    except _Unreachable as exc:
        return DomainReport(domain, where, skipped=f"DNS did not answer ({exc}): SPF, DKIM "
                            "and DMARC were not checked")
    return DomainReport(domain, where, checks)


async def _txt(resolver: dns.asyncresolver.Resolver, name: str) -> list[str]:
    """The TXT strings at ``name`` ([] for no such name or no TXT)."""
    try:
        answer = await resolver.resolve(name, "TXT", raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        raise _Unreachable(str(exc) or type(exc).__name__) from None
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer.rrset or ()]


async def _spf(resolver: dns.asyncresolver.Resolver, domain: str) -> RecordCheck:
    found = [t for t in await _txt(resolver, domain) if t.lower().startswith("v=spf1")]
    if not found:
        return RecordCheck("SPF", False, f"no SPF record at {domain}", f'Publish one TXT '
                           f'record at {domain} listing the servers that send for it, e.g. '
                           '"v=spf1 include:<your provider\'s SPF domain> -all"; without it '
                           'receivers cannot tell this server from a forger.')
    if len(found) > 1:
        return RecordCheck("SPF", False, f"{len(found)} SPF records at {domain}", "Merge them "
                           "into one: with two, receivers treat SPF as broken (RFC 7208 "
                           "3.2).")
    if found[0].lower().split()[-1] in ("+all", "all"):
        return RecordCheck("SPF", False, f"{found[0]} (allows every server)", "End the "
                           "record with -all or ~all so only the listed servers pass.")
    return RecordCheck("SPF", True, found[0])


async def _dkim(resolver: dns.asyncresolver.Resolver, domain: str,
                selectors: Sequence[str]) -> RecordCheck:
    for selector in selectors or COMMON_SELECTORS:
        name = f"{selector}._domainkey.{domain}"
        keys = [t for t in await _txt(resolver, name) if "p=" in t.replace(" ", "")]
        if keys and "p=;" in keys[0].replace(" ", "") + ";":
            return RecordCheck("DKIM", False, f"the key at {name} is revoked (empty p=)",
                               "Publish the current public key of the selector the server "
                               "signs with.")
        if keys:
            return RecordCheck("DKIM", True, f"key published at {name}")
    tried = ", ".join(selectors) if selectors else "the common selectors"
    return RecordCheck("DKIM", False, f"no DKIM key for {tried} at <selector>._domainkey."
                       f"{domain}", "Turn on DKIM signing for this domain at the mail "
                       "provider and publish the TXT record it gives at <selector>._domainkey."
                       f"{domain}; name the selector with --dkim-selector (the s= of a "
                       "DKIM-Signature header on mail it sent).")


async def _dmarc(resolver: dns.asyncresolver.Resolver, domain: str) -> RecordCheck:
    name = f"_dmarc.{domain}"
    found = [t for t in await _txt(resolver, name) if t.lower().startswith("v=dmarc1")]
    if not found:
        return RecordCheck("DMARC", False, f"no DMARC record at {name}", f'Publish a TXT '
                           f'record at {name}, e.g. "v=DMARC1; p=none; rua=mailto:dmarc@'
                           f'{domain}", and move p= to quarantine or reject once the reports '
                           'show only your servers.')
    return RecordCheck("DMARC", True, found[0])
