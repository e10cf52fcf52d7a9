"""A ProxyServer as the HTTP protocols use it (Graph on aiohttp/httpx, EWS on requests):
its URL with credentials, and which hosts go around it (``noProxy``)."""

from __future__ import annotations

from urllib.parse import quote

from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.credentials.gate import present_secret
from reconciler.mail.transport import Redactor


def proxy_url(proxy: ProxyServerSpec, redactor: Redactor) -> str:
    """``type://user:password@host:port`` (IPv6 hosts bracketed; user and password
    percent-encoded and only when the proxy has a username).

    The password, plain and encoded (the form a URL and so an error message carries),
    goes into ``redactor``. Raises SecretError when the password cannot be read or is not
    bound to the proxy.
    """
    userinfo = ""
    if proxy.username:
        # Only where an apply bound it: the proxy's own host and port (SPEC S2).
        password = (present_secret(proxy.password, proxy.host, proxy.port)
                    if proxy.password is not None else "")
        redactor.add(password)
        redactor.add(quote(password, safe=""))
        userinfo = f"{quote(proxy.username, safe='')}:{quote(password, safe='')}@"
    host = f"[{proxy.host}]" if ":" in proxy.host else proxy.host
    return f"{proxy.type}://{userinfo}{host}:{proxy.port}"


def bypasses(proxy: ProxyServerSpec, host: str) -> bool:
    """Whether ``host`` is reached directly: a ``noProxy`` entry names it or a parent domain.

    The rule curl and most tools follow for NO_PROXY: ``example.com``, ``.example.com`` and
    ``*.example.com`` all cover example.com and every name below it; case and a trailing dot
    do not matter. Graph and EWS used to read the list differently; they share this now.
    """
    name = host.lower().rstrip(".")
    for entry in proxy.no_proxy:
        domain = entry.lower().strip().lstrip("*").lstrip(".").rstrip(".")
        if domain and (name == domain or name.endswith("." + domain)):
            return True
    return False
