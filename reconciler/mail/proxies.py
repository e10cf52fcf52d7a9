"""The credentials part of a ProxyServer's URL, for the HTTP transports (Graph on httpx,
EWS on requests) and the fetchers that share their sessions."""

from __future__ import annotations

from urllib.parse import quote

from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.credentials.gate import present_secret
from reconciler.mail.transport import Redactor


def proxy_userinfo(proxy: ProxyServerSpec, redactor: Redactor) -> str:
    """``user:password@`` (both percent-encoded) or ``""`` when the proxy has no username.

    The password, plain and encoded (the form a URL and so an error message carries),
    goes into ``redactor``. Raises SecretError when the password cannot be read or is not
    bound to the proxy.
    """
    if not proxy.username:
        return ""
    # Only where an apply bound it: the proxy's own host and port (SPEC S2).
    password = (present_secret(proxy.password, proxy.host, proxy.port)
                if proxy.password is not None else "")
    redactor.add(password)
    redactor.add(quote(password, safe=""))
    return f"{quote(proxy.username, safe='')}:{quote(password, safe='')}@"
