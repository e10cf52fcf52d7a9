"""Semantic checks across fields and resources (SPEC C7).

These are facts about how mail servers work, not organisation preferences;
preferences (TLS required, Reply-To required, Basic Auth against Microsoft
365, Graph throughput) are shipped as policies so an organisation can grant a
dated exception.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

from reconciler.config.derive import SECURITY_BY_PORT, SMTP_PORTS
from reconciler.config.diagnostics import Diagnostic, Severity
from reconciler.config.loaded import NOTHING_UNLOADED, LoadedResource, Unloaded
from reconciler.config.models.auth import OAuth2Auth, OAuthGrant, OAuthProvider
from reconciler.config.models.incoming_server import IncomingProtocol
from reconciler.config.models.outgoing_server import OutgoingProtocol, Security


class _ByKind(list[LoadedResource]):
    """The resources, with those of each kind listed once up front: the checks ask
    for one kind or another 14 times, each a pass over every resource."""

    def __init__(self, resources: Sequence[LoadedResource]) -> None:
        super().__init__(resources)
        self.kinds: dict[str, list[LoadedResource]] = defaultdict(list)
        for res in resources:
            self.kinds[res.model.kind].append(res)


def _of_kind(resources: Sequence[LoadedResource], kind: str) -> list[LoadedResource]:
    if isinstance(resources, _ByKind):
        return list(resources.kinds.get(kind, ()))
    return [r for r in resources if r.model.kind == kind]


def _primary_servers(resources: Sequence[LoadedResource],
                     unloaded: Unloaded) -> Iterator[Diagnostic]:
    by_ns: dict[str, list[LoadedResource]] = defaultdict(list)
    for res in _of_kind(resources, "OutgoingServer"):
        by_ns[res.model.metadata.namespace].append(res)
    for namespace, servers in sorted(by_ns.items()):
        primaries = [s for s in servers if s.model.spec.primary and s.model.spec.enabled]
        if not primaries and not unloaded.may_hold("OutgoingServer", namespace):
            first = servers[0]
            disabled = [s for s in servers if s.model.spec.primary and not s.model.spec.enabled]
            hint = (f"{disabled[0].model.metadata.name} is primary but disabled; enable it"
                    if disabled else "set `primary: true` on the server that should send "
                    "when no rule matches")
            yield first.diagnostic(
                "no-primary-server",
                f"namespace {namespace!r} has no enabled primary OutgoingServer; "
                "notifications that match no rule could not be sent",
                ("spec",), hint=hint, key=True)
        for extra in primaries[1:]:
            yield extra.diagnostic(
                "multiple-primary-servers",
                f"namespace {namespace!r} has more than one primary OutgoingServer "
                f"(also {primaries[0].model.metadata.name!r} in {primaries[0].file})",
                ("spec", "primary"), hint="keep `primary: true` on exactly one server")


def _port_security(res: LoadedResource) -> list[Diagnostic]:
    spec = res.model.spec
    if spec.protocol != OutgoingProtocol.SMTP or spec.port is None or spec.security is None:
        return []
    expected = SMTP_PORTS[Security(spec.security)]
    usual = SECURITY_BY_PORT.get(spec.port)
    if spec.port == expected or usual is None:
        return []
    return [res.diagnostic(
        "port-security-mismatch",
        f"port {spec.port} usually means security {usual}, but security is {spec.security}",
        ("spec", "port"),
        hint=f"use port {expected} for {spec.security}, or security {usual} for {spec.port}",
        severity=Severity.WARNING)]


def _protocol_auth(res: LoadedResource, protocol: str, host: str | None) -> Iterator[Diagnostic]:
    auth = res.model.spec.auth
    if protocol == "graph" and (not isinstance(auth, OAuth2Auth)
                                or auth.provider != OAuthProvider.MICROSOFT):
        yield res.diagnostic(
            "graph-needs-microsoft-oauth", "Microsoft Graph accepts only Microsoft OAuth 2.0",
            ("spec", "auth"), hint="set auth.type: oauth2 and auth.provider: microsoft")
    if protocol == "ews":
        url = res.model.spec.ews_url
        if not host and not url:
            yield res.diagnostic(
                "ews-endpoint-missing", "EWS needs `host` or `ewsUrl`", ("spec",),
                hint="e.g. host: mail.example.com (ewsUrl is derived from it)", key=True)
        if isinstance(auth, OAuth2Auth) and auth.provider != OAuthProvider.MICROSOFT:
            yield res.diagnostic(
                "ews-needs-exchange",
                "EWS is an Exchange/Office 365 API; OAuth for it comes from Microsoft",
                ("spec", "auth", "provider"), hint="use provider: microsoft, or protocol smtp")
        if host and "gmail" in host.lower():
            yield res.diagnostic(
                "ews-needs-exchange", f"{host} is not an Exchange server; EWS will not work",
                ("spec", "host"), hint="use protocol smtp (or imaps for incoming)")
    if protocol in ("smtp", "imap", "imaps", "pop3", "pop3s") and not host:
        yield res.diagnostic(
            "host-missing", f"protocol {protocol} needs `host`", ("spec",),
            hint="the mail server's name, e.g. smtp.example.com", key=True)
    if isinstance(auth, OAuth2Auth):
        yield from _oauth_complete(res, auth)


def _oauth_complete(res: LoadedResource, auth: OAuth2Auth) -> Iterator[Diagnostic]:
    base = ("spec", "auth")
    if auth.grant == OAuthGrant.CLIENT_CREDENTIALS:
        if auth.client_secret is None:
            yield res.diagnostic(
                "oauth-incomplete", "client credentials grant needs `clientSecret`", base,
                hint="clientSecret: {secretRef: env:NAME}", key=True)
        if auth.provider == OAuthProvider.MICROSOFT and not auth.tenant:
            yield res.diagnostic(
                "oauth-incomplete", "app-only Microsoft tokens need `tenant`", base,
                hint="your Entra tenant id or domain, e.g. contoso.onmicrosoft.com", key=True)
    if auth.provider == OAuthProvider.GOOGLE and auth.client_secret is None:
        yield res.diagnostic(
            "oauth-incomplete", "Google OAuth needs `clientSecret`", base,
            hint="clientSecret: {secretRef: env:NAME}", key=True)
    if auth.provider == OAuthProvider.GENERIC:
        for attr, alias in (("token_url", "tokenUrl"), ("authorization_url", "authorizationUrl"),
                            ("scope", "scope")):
            if attr == "authorization_url" and auth.grant == OAuthGrant.CLIENT_CREDENTIALS:
                continue
            if getattr(auth, attr) is None:
                yield res.diagnostic(
                    "oauth-incomplete", f"generic OAuth provider needs `{alias}`", base,
                    hint="copy it from your authorization server's documentation", key=True)


def _graph_client_ids(resources: Sequence[LoadedResource]) -> Iterator[Diagnostic]:
    """Same mailbox in and out over Graph with one client id shares one throttle budget."""
    incoming: dict[tuple[str, str, str], LoadedResource] = {}
    for res in _of_kind(resources, "IncomingServer"):
        spec = res.model.spec
        if spec.protocol == IncomingProtocol.GRAPH and isinstance(spec.auth, OAuth2Auth):
            ident = (res.model.metadata.namespace, spec.email.lower(), spec.auth.client_id)
            incoming[ident] = res
    for res in _of_kind(resources, "OutgoingServer"):
        spec = res.model.spec
        if spec.protocol != OutgoingProtocol.GRAPH or not isinstance(spec.auth, OAuth2Auth):
            continue
        mailbox = (spec.mailbox or spec.email).lower()
        other = incoming.get((res.model.metadata.namespace, mailbox, spec.auth.client_id))
        if other:
            yield res.diagnostic(
                "graph-shared-client-id",
                f"mailbox {mailbox} is used by IncomingServer {other.model.metadata.name!r} "
                "with the same Graph client id; Microsoft throttles them together",
                ("spec", "auth", "clientId"),
                hint="register a second app and use its client id for one of them")


def _guest_directory(resources: Sequence[LoadedResource]) -> Iterator[Diagnostic]:
    """Guest tickets off need a directory of users: the daemon does not fetch without one."""
    guests = {r.model.metadata.namespace: r.model.spec.guest_tickets
              for r in _of_kind(resources, "MailSettings")}
    known = {r.model.metadata.namespace for r in _of_kind(resources, "SenderDirectory")}
    warned: set[str] = set()
    for res in _of_kind(resources, "IncomingServer"):
        namespace = res.model.metadata.namespace
        if (not res.model.spec.enabled or guests.get(namespace, False) or namespace in known
                or namespace in warned):
            continue
        warned.add(namespace)
        yield res.diagnostic(
            "no-sender-directory", f"guest tickets are off in namespace {namespace!r} but it "
            "has no SenderDirectory, so the daemon fetches its mail only when started with "
            "--sender-directory FILE", ("spec",), severity=Severity.WARNING, key=True,
            hint="add a SenderDirectory listing the desk's users (or their domains), or set "
            "guestTickets: true in MailSettings")


# Proxy types each protocol cannot go through (SPEC O5): SMTP, IMAP and POP3 tunnel with
# HTTP CONNECT or SOCKS5 (no TLS to the proxy itself); EWS's requests session has no
# SOCKS support installed.
_NO_PROXY_TYPE = {**dict.fromkeys(("smtp", "imap", "imaps", "pop3", "pop3s"), frozenset({"https"})),
                  "ews": frozenset({"socks5"})}


def _proxy_support(resources: Sequence[LoadedResource]) -> Iterator[Diagnostic]:
    proxies = {(r.model.metadata.namespace, r.model.metadata.name): r.model.spec
               for r in _of_kind(resources, "ProxyServer")}
    for res in [*_of_kind(resources, "OutgoingServer"), *_of_kind(resources, "IncomingServer")]:
        spec = res.model.spec
        proxy = proxies.get((res.model.metadata.namespace, spec.proxy)) if spec.proxy else None
        if proxy is not None and str(proxy.type) in _NO_PROXY_TYPE.get(str(spec.protocol), ()):
            usable = sorted({"http", "https", "socks5"} - _NO_PROXY_TYPE[str(spec.protocol)])
            yield res.diagnostic(
                "proxy-unsupported", f"protocol {spec.protocol} cannot go through ProxyServer "
                f"{spec.proxy!r} of type {proxy.type}", ("spec", "proxy"),
                hint=f"name a ProxyServer of type {' or '.join(usable)}, or remove proxy")


def _rules_to_disabled_servers(resources: Sequence[LoadedResource]) -> Iterator[Diagnostic]:
    servers = {(r.model.metadata.namespace, r.model.metadata.name): r.model.spec
               for r in _of_kind(resources, "OutgoingServer")}
    for res in _of_kind(resources, "OutgoingEmailRule"):
        spec = res.model.spec
        server = servers.get((res.model.metadata.namespace, spec.server))
        if spec.enabled and server is not None and not server.enabled:
            # Not an error: routing skips the rule (runtime.routing), so mail still flows.
            yield res.diagnostic(
                "rule-server-disabled", f"OutgoingServer {spec.server!r} is disabled; this "
                "rule is skipped and its mail goes to the next matching rule or the primary",
                ("spec", "server"), severity=Severity.WARNING,
                hint=f"enable {spec.server}, point the rule at another server, or disable "
                "the rule")


def _sync_policies(resources: Sequence[LoadedResource]) -> Iterator[Diagnostic]:
    """Each (namespace, kind) is covered by at most one SyncPolicy, naming real kinds."""
    from reconciler.config.models import KINDS

    owner: dict[tuple[str, str], LoadedResource] = {}
    for res in _of_kind(resources, "SyncPolicy"):
        namespace = res.model.metadata.namespace
        for index, kind in enumerate(res.model.spec.kinds):
            if kind not in KINDS:
                yield res.diagnostic(
                    "sync-policy-kind", f"SyncPolicy covers unknown kind {kind!r}",
                    ("spec", "kinds", index), hint=f"use one of {', '.join(sorted(KINDS))}")
        for kind in res.model.spec.kinds or ["*"]:
            other = owner.setdefault((namespace, kind), res)
            if other is not res:
                scope = "every kind" if kind == "*" else kind
                yield res.diagnostic(
                    "sync-policy-overlap",
                    f"namespace {namespace!r}: {scope} is already covered by SyncPolicy "
                    f"{other.model.metadata.name!r} ({other.file})", ("spec", "kinds"),
                    hint="give each kind of a namespace one SyncPolicy", key=True)


def check_semantics(resources: Sequence[LoadedResource],
                    unloaded: Unloaded = NOTHING_UNLOADED) -> list[Diagnostic]:
    resources = _ByKind(resources)
    out = list(_primary_servers(resources, unloaded))
    out.extend(_rules_to_disabled_servers(resources))
    out.extend(_sync_policies(resources))
    for res in _of_kind(resources, "OutgoingServer"):
        spec = res.model.spec
        out.extend(_port_security(res))
        out.extend(_protocol_auth(res, str(spec.protocol), spec.host))
        if spec.alternate_host and spec.protocol != OutgoingProtocol.SMTP:
            out.append(res.diagnostic(
                "alternate-host-unused", f"alternateHost is only used with SMTP, not "
                f"{spec.protocol}", ("spec", "alternateHost"), severity=Severity.WARNING,
                hint="remove it, or switch the protocol to smtp"))
    for res in _of_kind(resources, "IncomingServer"):
        spec = res.model.spec
        out.extend(_protocol_auth(res, str(spec.protocol), spec.host))
        pop = spec.protocol in (IncomingProtocol.POP3, IncomingProtocol.POP3S)
        if pop and spec.error_folder.enabled:
            out.append(res.diagnostic(
                "error-folder-pop", "POP3 has no folders; the error folder cannot be used",
                ("spec", "errorFolder", "enabled"), hint="use IMAP, or disable errorFolder"))
        if spec.starttls and spec.protocol not in (IncomingProtocol.IMAP, IncomingProtocol.POP3):
            out.append(res.diagnostic(
                "starttls-unused", f"starttls applies to plain imap/pop3, not {spec.protocol}",
                ("spec", "starttls"), severity=Severity.WARNING))
    out.extend(_graph_client_ids(resources))
    out.extend(_guest_directory(resources))
    out.extend(_proxy_support(resources))
    return out
