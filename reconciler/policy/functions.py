"""Helper functions for policy expressions, so shipped and user policies stay readable.

Each takes plain JSON values and is null-safe where a field may be unset
(``isMicrosoftHost(spec.host)`` is ``false`` for a Graph server without a host),
because a policy should not need ``has()``/``!= null`` guards for the common case.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from reconciler.policy.cel_ops import no_overload

# Microsoft 365 / Exchange Online service domains, per national cloud. A host
# matches a domain when it is the domain itself or below it.
MICROSOFT_DOMAINS: tuple[str, ...] = (
    "office365.com",
    "outlook.com",
    "office.com",
    "microsoft.com",
    "office365.us",  # GCC High
    "partner.outlook.cn",  # 21Vianet (China)
    "outlook.office.de",  # Microsoft Cloud Deutschland
)

# Where Exchange Online itself answers (EWS, SMTP AUTH, IMAP/POP). Not
# microsoft.com: that is Microsoft's own corporate mail, not the service.
EXCHANGE_ONLINE_DOMAINS: tuple[str, ...] = (
    *(d for d in MICROSOFT_DOMAINS if d != "microsoft.com"),
    "webmail.apps.mil",  # US Government DoD
)


def _host(value: Any, function: str) -> str | None:
    """Lower-case host of a host name or URL; ``None`` for null/empty."""
    if value is None:
        return None
    if type(value) is not str:
        raise no_overload(function, value)
    text = value.strip()
    if not text:
        return None
    if "://" in text:
        host = urlsplit(text).hostname or ""
    else:
        host = text.split("/", 1)[0]
        if not host.startswith("[") and host.count(":") == 1:
            host = host.split(":", 1)[0]  # host:port
    return host.rstrip(".").lower() or None


def _under(host: str | None, domains: tuple[str, ...]) -> bool:
    if host is None:
        return False
    return any(host == d or host.endswith("." + d) for d in domains)


def host_of(value: Any) -> str | None:
    """``hostOf(url_or_host)``: the lower-case host name, or null."""
    return _host(value, "hostOf")


def is_microsoft_host(value: Any) -> bool:
    """``isMicrosoftHost(host_or_url)``: a Microsoft 365 / Microsoft cloud host."""
    return _under(_host(value, "isMicrosoftHost"), MICROSOFT_DOMAINS)


def is_exchange_online(value: Any) -> bool:
    """``isExchangeOnline(url_or_host)``: an Exchange Online endpoint in any national cloud."""
    return _under(_host(value, "isExchangeOnline"), EXCHANGE_ONLINE_DOMAINS)


def domain_of(value: Any) -> str | None:
    """``domainOf(email)``: the lower-case domain of an address, or null."""
    if value is None:
        return None
    if type(value) is not str:
        raise no_overload("domainOf", value)
    _, at, domain = value.rpartition("@")
    if not at:
        return None
    return domain.strip().lower() or None


HELPERS: dict[str, Callable[..., Any]] = {
    "isMicrosoftHost": is_microsoft_host,
    "isExchangeOnline": is_exchange_online,
    "hostOf": host_of,
    "domainOf": domain_of,
}
