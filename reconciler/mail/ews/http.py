"""exchangelib's HTTP, made ours: the adapter that gives each EWS endpoint our verifying
TLS context and exactly its configured proxy, the fail-fast retry policy that keeps a
busy server's Retry-After, and the log filter that keeps tokens out of exchangelib's
DEBUG output. The transport, the fetcher and the probe all go through it
(:mod:`reconciler.mail.ews.session`), so every direction verifies certificates, honours
proxies and redacts secrets alike.
"""

from __future__ import annotations

import logging
import re
import ssl
import threading
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
from exchangelib import FailFast
from exchangelib import errors as ews_errors
from exchangelib.protocol import BaseProtocol

from reconciler.mail.trace import wire
from reconciler.runtime.backoff import retry_after_seconds

log = logging.getLogger(__name__)


# -- HTTP adapter: TLS context and proxies per service endpoint ----------------------


@dataclass(frozen=True)
class Route:
    context: ssl.SSLContext
    proxies: dict[str, str]


def _route_key(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return (parts.scheme.lower(), (parts.hostname or "").lower(), port, parts.path.lower())


READ_CHUNK = 64 * 1024


class _ChunkedResponse(requests.Response):
    """exchangelib parses every answer from ``response.iter_content()``, whose default
    chunk is one byte: a Python-level step per byte, ~40 ms for a 30 KB mail. The same
    bytes in 64 KiB pieces parse identically (exchangelib accepts any chunk size)."""

    def iter_content(self, chunk_size: int | None = 1,
                     decode_unicode: bool = False) -> Any:
        return super().iter_content(READ_CHUNK if chunk_size == 1 else chunk_size, decode_unicode)


class EwsHttpAdapter(requests.adapters.HTTPAdapter):
    """The adapter exchangelib uses for every session (``BaseProtocol.HTTP_ADAPTER_CLS``).

    For a registered service endpoint: our verifying TLS context (system CAs plus
    the extra bundle; verification cannot be turned off), exactly the configured
    proxy (none when none is configured: environment proxy variables do not
    silently reroute mail) and answers read in 64 KiB chunks (:class:`_ChunkedResponse`).
    Unknown endpoints get requests' defaults.
    """

    _routes: ClassVar[dict[tuple[str, str, int, str], Route]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def register(cls, url: str, route: Route) -> None:
        with cls._lock:
            cls._routes[_route_key(url)] = route

    @classmethod
    def route_for(cls, url: str | None) -> Route | None:
        return None if not url else cls._routes.get(_route_key(url))

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert)
        route = self.route_for(request.url)
        if route is not None:
            pool_kwargs["ssl_context"] = route.context
            pool_kwargs["cert_reqs"] = "CERT_REQUIRED"
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: bool | str, cert: Any) -> None:
        if self.route_for(url) is not None:
            conn.cert_reqs = "CERT_REQUIRED"  # the route's context already holds the CAs
            return
        super().cert_verify(conn, url, verify, cert)

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: Any = None, verify: bool | str = True, cert: Any = None,
             proxies: Any = None) -> requests.Response:
        route = self.route_for(request.url)
        if route is not None:
            verify, proxies = True, dict(route.proxies)
        what = f"{request.method} {request.url} {_operation(request.body)}".rstrip()
        wire("> %s", what)
        try:
            response = super().send(request, stream=stream, timeout=timeout, verify=verify,
                                    cert=cert, proxies=proxies)
        except Exception as exc:
            wire("< %s failed: %s", what, short(exc))
            raise
        wire("< %s %s in %.0f ms", response.status_code, response.reason,
             response.elapsed.total_seconds() * 1000)
        if route is not None and type(response) is requests.Response:
            response.__class__ = _ChunkedResponse
        return response


_OPERATION = re.compile(rb":Body>\s*<(?:\w+:)?(\w+)")


def _operation(body: Any) -> str:
    """The EWS operation a SOAP request asks for (FindItem, CreateItem...), for the trace."""
    if isinstance(body, str):
        body = body.encode()
    found = _OPERATION.search(body[:4096]) if isinstance(body, bytes) else None
    return found[1].decode() if found else ""


def install_adapter() -> None:
    """Make exchangelib use :class:`EwsHttpAdapter` (process-wide; idempotent)."""
    if BaseProtocol.HTTP_ADAPTER_CLS is not EwsHttpAdapter:
        if BaseProtocol.HTTP_ADAPTER_CLS is not requests.adapters.HTTPAdapter:
            log.warning("replacing exchangelib's HTTP adapter %s with reconciler's",
                        BaseProtocol.HTTP_ADAPTER_CLS.__name__)
        BaseProtocol.HTTP_ADAPTER_CLS = EwsHttpAdapter


# -- exchangelib's logging and retry policy ---------------------------------------------


_SECRET_KEYS = frozenset({"authorization", "proxy-authorization", "access_token",
                          "refresh_token", "password"})
_SCRUBBED_LOGGERS = ("exchangelib.util", "exchangelib.transport", "exchangelib.protocol",
                     "requests_oauthlib.oauth2_session", "requests_oauthlib.oauth2_auth")


class _HeaderScrubber(logging.Filter):
    """exchangelib and requests-oauthlib log request headers and the token at DEBUG;
    the Authorization header and token values never leave."""

    _AUTH = re.compile(r"('?authorization'?\s*[:=]\s*'?)(\w+ )?[^',}\s]+", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = self._scrub(record.args)
        if isinstance(record.msg, str):
            record.msg = self._AUTH.sub(r"\1\2***", record.msg)
        return True

    def _scrub(self, value: Any, depth: int = 0) -> Any:
        if depth > 3:
            return value
        if isinstance(value, tuple):
            return tuple(self._scrub(v, depth + 1) for v in value)
        if isinstance(value, dict) or hasattr(value, "items"):
            try:
                return {k: ("***" if str(k).lower() in _SECRET_KEYS else self._scrub(v, depth + 1))
                        for k, v in value.items()}
            except Exception:  # a mapping we cannot copy: render and scrub the text
                return self._AUTH.sub(r"\1\2***", str(value))
        if isinstance(value, str | bytes):
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            return self._AUTH.sub(r"\1\2***", text)
        return value


_SCRUBBER = _HeaderScrubber()
for _name in _SCRUBBED_LOGGERS:
    logging.getLogger(_name).addFilter(_SCRUBBER)


class HttpStatusError(ews_errors.TransportError):
    """An HTTP answer that is neither EWS SOAP nor one exchangelib knows."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status} {reason}".strip())
        self.status = status


class FailFastWithBackOff(FailFast):
    """exchangelib's FailFast, keeping the server's Retry-After on 503 (FaultTolerance
    does that but also sleeps in the thread) and naming other HTTP statuses plainly
    instead of echoing every response header."""

    def raise_response_errors(self, response: requests.Response) -> None:
        try:
            super().raise_response_errors(response)
        except ews_errors.ErrorInternalServerTransientError as exc:
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            if wait is not None:
                raise ews_errors.ErrorServerBusy(exc.args[0], back_off=wait) from None
            raise
        except ews_errors.MalformedResponseError:
            raise HttpStatusError(response.status_code, response.reason or "") from None


# -- exceptions -------------------------------------------------------------------------


def exception_chain(exc: BaseException) -> list[BaseException]:
    """The exception, its causes/contexts, and the errors urllib3/requests wrap inside."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or any(current is s for s in seen) or len(seen) > 20:
            continue
        seen.append(current)
        todo += [current.__cause__, current.__context__]
        todo += [a for a in (getattr(current, "reason", None), *getattr(current, "args", ()))
                 if isinstance(a, BaseException)]
    return seen


def first_of(chain: list[BaseException], kinds: type | tuple[type, ...]) -> Any:
    return next((e for e in chain if isinstance(e, kinds)), None)


def is_new_connection_error(chain: list[BaseException]) -> bool:
    return any(type(e).__name__ in ("NewConnectionError", "NameResolutionError") for e in chain)


def short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
