"""How one daemon process runs: given on the command line or by environment.

Mail-server configuration is NOT here: it comes from the live store (what
`reconcile apply` wrote) and is hot-swapped when a new revision lands.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from reconciler.runtime.access import TokenSpec


@dataclass(frozen=True)
class DaemonSettings:
    store_url: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 8025
    api_tokens: tuple[str, ...] = ()  # secret references (env:/file:/enc:) of bearer tokens
    # Tokens with roles and namespaces (SPEC S3), from --access-file; api_tokens are admins.
    api_access: tuple[TokenSpec, ...] = ()
    access_file: str | None = None  # where api_access came from (the console reads its part)
    # /metrics needs a viewer token: None decides by whether any token is configured.
    metrics_require_token: bool | None = None
    # Unique per process: outbox leases are owned by this string.
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    claim_batch: int = 100
    lease_seconds: float = 120.0
    poll_interval_seconds: float = 0.2  # idle wait between outbox claims
    reload_interval_seconds: float = 1.0  # how often the live revision is checked
    health_interval_seconds: float = 60.0
    notify_webhook: str | None = None  # admin notifications on health transitions
    ca_file: str | None = None  # extra trusted CAs for private mail servers
    # Secret reference of the key sealing cached OAuth tokens (None: env:RECONCILE_TOKEN_KEY).
    token_key_ref: str | None = None
    shutdown_grace_seconds: float = 20.0
    # Which parts this process runs: "all" (one process), or "intake" / "worker" when a
    # supervisor (`reconcile daemon --workers N`) splits them over processes.
    role: str = "all"
    wake_fd: int | None = None  # pipe between intake and worker processes (see daemon.wake)
    # Incoming mail (SPEC I8): ticket events are POSTed here (URL or secret reference);
    # None keeps them in the store for the desk to pull (GET /v1/events).
    events_webhook: str | None = None
    events_secret: str | None = None  # secret reference of the key signing each POST (HMAC)
    sender_directory: str | None = None  # YAML/JSON file of the desk's users (incoming pipeline)
    incoming: bool = True  # fetch the IncomingServers (in the "all" and "intake" roles)
    incoming_interval_seconds: float | None = None  # instead of fetchIntervalMinutes (tests)
    # Retention (docs/incoming.md): delivered ticket events, and markers of mails no
    # listing has shown for this long. 0 keeps them for ever.
    event_retention_days: float = 30.0
    marker_retention_days: float = 90.0
    # Continuous sync (SPEC X5, docs/sync.md): the repository this daemon follows. Operator
    # settings on purpose: the PR-controlled repository must not choose its own source.
    sync_repo: str | None = None  # URL or local path; None: no syncer
    sync_branch: str = "main"
    sync_path: str = "."  # the config folder inside the repository
    sync_interval_seconds: float = 60.0
    sync_token_ref: str | None = None  # secret reference of an HTTPS token
    sync_ssh_key_ref: str | None = None  # secret reference of an SSH private key
    sync_webhook_secret_ref: str | None = None  # GitHub push webhook secret (HMAC)
    sync_cache_dir: str = ".reconcile/sync"
    sync_status_repo: str | None = None  # owner/name: post commit statuses to GitHub
    sync_status_token_ref: str | None = None
    sync_status_api: str = "https://api.github.com"
    # The web console (SPEC X6, docs/console.md), served under /console beside the API.
    console: bool = False
    console_session_key_ref: str | None = None  # None: a random key per start
    console_session_hours: float = 8.0
    console_oidc_issuer: str | None = None  # None: token sign-in only
    console_oidc_client_id: str | None = None
    console_oidc_client_secret_ref: str | None = None  # None: a public client (PKCE only)
    console_oidc_scopes: tuple[str, ...] = ("openid", "email", "profile")
    console_oidc_name_claim: str = "email"
    console_oidc_roles_claim: str = "groups"
    console_oidc_namespaces_claim: str | None = None  # None: every namespace
    console_oidc_role_map: tuple[str, ...] = ()  # "CLAIM-VALUE=ROLE", e.g. "desk-ops=operator"
    console_oidc_label: str = "your identity provider"  # the sign-in button's name for it
    # How browsers reach the daemon (e.g. behind a proxy), for the OIDC redirect URI;
    # None: taken from each request.
    console_public_url: str | None = None

    @property
    def metrics_need_token(self) -> bool:
        """Whether /metrics asks for a token: by default when any token is configured
        (its server and namespace labels are not for everyone)."""
        if self.metrics_require_token is not None:
            return self.metrics_require_token
        return bool(self.api_tokens or self.api_access)

    def operator_refs(self) -> tuple[str | None, ...]:
        """The operator's own secrets among these settings (references, or URLs that may
        be one): config references must never resolve them (SPEC S2)."""
        return (*self.api_tokens, *(t.secret_ref for t in self.api_access),
                self.token_key_ref, self.events_secret, self.events_webhook,
                self.notify_webhook, self.sync_token_ref, self.sync_ssh_key_ref,
                self.sync_webhook_secret_ref, self.sync_status_token_ref,
                self.console_session_key_ref, self.console_oidc_client_secret_ref)
