"""Error-folder retry (SPEC I7): move a server's error-folder mails back, unread, so the
daemon processes them again. `reconcile incoming retry` and the console's Incoming
screen both run this; neither keeps its own copy.

:func:`prepare` reads the live config (blocking store I/O, for a thread);
:func:`move_back` talks to the mail server and records the move.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reconciler.config.desired import ResourceKey
from reconciler.config.models.incoming_server import IncomingServer
from reconciler.credentials import gate
from reconciler.incoming.servers import proxy_of
from reconciler.mail.fetcher import FetchError, NotSupported
from reconciler.mail.registry import fetcher_for
from reconciler.oauth.provider import provider_for_store
from reconciler.runtime.namespace import resource_from_canonical
from reconciler.state import Store

KIND = "IncomingServer"


class RetryRefused(Exception):
    """Why the mails could not be moved back, in words for the user (no traceback)."""


@dataclass(frozen=True)
class Retry:
    """Everything :func:`move_back` needs, read from the store beforehand."""

    store: Store
    namespace: str
    server: str
    model: IncomingServer
    proxies: list[Any]
    tokens: Any
    ca_file: str | None


def prepare(store: Store, namespace: str, server: str, *, ca_file: str | None = None,
            token_key_ref: str | None = None) -> Retry:
    live = store.snapshot()
    canon = live.resources.get(ResourceKey(KIND, namespace, server))
    if canon is None:
        raise RetryRefused(f"there is no incoming server {namespace}/{server} in the live "
                           "store; `reconcile incoming status` lists them")
    model = resource_from_canonical(canon)
    assert isinstance(model, IncomingServer)
    proxies = [resource_from_canonical(r) for k, r in live.resources.items()
               if k.kind == "ProxyServer" and k.namespace == namespace]
    gate.load(store)  # the fetcher presents credentials only where they are bound
    tokens = None
    if getattr(model.spec.auth, "type", None) == "oauth2":
        tokens = provider_for_store(store, key_ref=token_key_ref, ca_file=ca_file)
    return Retry(store, namespace, server, model, proxies, tokens, ca_file)


async def move_back(retry: Retry) -> str:
    """Move the mails back; what happened, as a sentence."""
    try:
        async with fetcher_for(retry.model, token_provider=retry.tokens, ca_file=retry.ca_file,
                               proxy_lookup=lambda s: proxy_of(s, retry.proxies)) as fetcher:
            moved = await fetcher.move_back_from_error_folder()
    except NotSupported as exc:
        raise RetryRefused(f"{retry.namespace}/{retry.server}: {exc}") from None
    except FetchError as exc:
        raise RetryRefused(f"{retry.namespace}/{retry.server}: {exc.user_text}") from None
    await asyncio.to_thread(retry.store.incoming.errors_moved_back, retry.namespace,
                            retry.server, now=datetime.now(UTC))
    spec = retry.model.spec
    return (f"moved {moved} mail(s) from {spec.error_folder.name} back to {spec.folder} of "
            f"{retry.namespace}/{retry.server}; the daemon processes them at its next fetch")
