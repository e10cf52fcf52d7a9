"""Defaults made explicit (SPEC C6).

Every value the tool fills in is recorded as a :class:`Derivation` with the
reason, so ``validate --show-derived`` and the plan can say where a value came
from. Only unset (``None``) fields are derived; a value written in git always
wins. Derived values are part of the desired state that is stored and
diffed, so changing a default in a new release shows up in ``plan``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pydantic import BaseModel

from reconciler.config.loaded import Derivation, LoadedResource
from reconciler.config.models.auth import OAuth2Auth, OAuthGrant, OAuthProvider
from reconciler.config.models.incoming_server import IncomingProtocol, IncomingServerSpec
from reconciler.config.models.mail_settings import MailSettingsSpec
from reconciler.config.models.outgoing_server import (
    NationalCloud,
    OutgoingProtocol,
    OutgoingServerSpec,
    Oversize,
    Security,
)

DEFAULT_ATTACHMENT_LIMIT_MB = 20.0
DEFAULT_REDIRECT_URL = "http://localhost:8765/oauth/callback"

SMTP_PORTS = {Security.NONE: 25, Security.STARTTLS: 587, Security.TLS: 465}
SECURITY_BY_PORT = {port: sec for sec, port in SMTP_PORTS.items()}
INCOMING_PORTS = {
    IncomingProtocol.IMAP: 143,
    IncomingProtocol.IMAPS: 993,
    IncomingProtocol.POP3: 110,
    IncomingProtocol.POP3S: 995,
    IncomingProtocol.EWS: 443,
    IncomingProtocol.GRAPH: 443,
}
CONCURRENCY = {
    OutgoingProtocol.SMTP: (4, "4 pooled SMTP connections per server"),
    OutgoingProtocol.EWS: (2, "EWS throttles concurrent connections per mailbox"),
    OutgoingProtocol.GRAPH: (4, "Graph allows 4 concurrent requests per mailbox"),
}

GRAPH_ENDPOINTS = {
    NationalCloud.GLOBAL: "https://graph.microsoft.com",
    NationalCloud.US_GOV_L4: "https://graph.microsoft.us",
    NationalCloud.US_GOV_L5: "https://dod-graph.microsoft.us",
    NationalCloud.CHINA: "https://microsoftgraph.chinacloudapi.cn",
    NationalCloud.GERMANY: "https://graph.microsoft.de",
}
MICROSOFT_AUTHORITIES = {
    NationalCloud.GLOBAL: "https://login.microsoftonline.com",
    NationalCloud.US_GOV_L4: "https://login.microsoftonline.us",
    NationalCloud.US_GOV_L5: "https://login.microsoftonline.us",
    NationalCloud.CHINA: "https://login.chinacloudapi.cn",
    NationalCloud.GERMANY: "https://login.microsoftonline.de",
}
GOOGLE_AUTHORIZATION_URL = "https://accounts.google.com/o/oauth2/v2/auth"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"

# Delegated scopes, per provider and what the server is used for.
MICROSOFT_SCOPES = {
    "smtp": ["https://outlook.office365.com/SMTP.Send", "offline_access"],
    "ews": ["https://outlook.office365.com/EWS.AccessAsUser.All", "offline_access"],
    "graph": ["Mail.ReadWrite", "Mail.Send.Shared", "offline_access"],
    "imap": ["https://outlook.office365.com/IMAP.AccessAsUser.All", "offline_access"],
    "pop3": ["https://outlook.office365.com/POP.AccessAsUser.All", "offline_access"],
}
GOOGLE_SCOPES = ["https://mail.google.com/"]

Fill = Callable[[str, Any, str], None]  # (attribute, value, reason)


def _filler(out: list[Derivation], obj: BaseModel, *under: str) -> Fill:
    """Sets unset attributes of ``obj``, which sits at ``under`` in the YAML, and
    records each derivation in ``out`` at its camelCase path."""
    def fill(attr: str, value: Any, reason: str) -> None:
        if getattr(obj, attr) is None and value is not None:
            setattr(obj, attr, value)
            alias = type(obj).model_fields[attr].alias or attr
            # the validated value (20.0, not 20), as it appears in the desired state
            stored = getattr(obj, attr)
            out.append(Derivation((*under, alias), getattr(stored, "value", stored), reason))
    return fill


def _oauth(out: list[Derivation], spec: OutgoingServerSpec | IncomingServerSpec,
           auth: OAuth2Auth, usage: str, cloud: NationalCloud) -> None:
    fill = _filler(out, auth, "spec", "auth")
    fill("username", spec.email, "the server's email address")
    if auth.provider == OAuthProvider.MICROSOFT:
        authority = MICROSOFT_AUTHORITIES[cloud]
        tenant = auth.tenant or (
            "organizations" if auth.grant == OAuthGrant.AUTHORIZATION_CODE else None)
        if tenant:
            why = f"Microsoft identity platform for the {cloud} cloud, tenant {tenant}"
            fill("authorization_url", f"{authority}/{tenant}/oauth2/v2.0/authorize", why)
            fill("token_url", f"{authority}/{tenant}/oauth2/v2.0/token", why)
        if auth.grant == OAuthGrant.CLIENT_CREDENTIALS:
            resource = spec.graph_endpoint if usage == "graph" else "https://outlook.office365.com"
            fill("scope", [f"{resource}/.default"],
                 "app-only tokens ask for the resource's .default scope")
        else:
            fill("scope", list(MICROSOFT_SCOPES[usage]), f"Microsoft delegated scope for {usage}")
    elif auth.provider == OAuthProvider.GOOGLE:
        why = "Google OAuth 2.0 endpoints"
        fill("authorization_url", GOOGLE_AUTHORIZATION_URL, why)
        fill("token_url", GOOGLE_TOKEN_URL, why)
        fill("scope", list(GOOGLE_SCOPES), "Gmail needs the full mail scope for SMTP/IMAP/POP")
    if auth.grant == OAuthGrant.AUTHORIZATION_CODE:
        fill("redirect_url", DEFAULT_REDIRECT_URL, "local listener of `reconcile auth login`")


def _microsoft_endpoints(spec: OutgoingServerSpec | IncomingServerSpec, fill: Fill,
                         proto: str) -> NationalCloud:
    """EWS URL and Graph endpoint, shared by outgoing and incoming servers."""
    if proto == "ews" and spec.host:
        fill("ews_url", f"https://{spec.host}/EWS/Exchange.asmx", "standard EWS path on the host")
    cloud = NationalCloud(spec.national_cloud or NationalCloud.GLOBAL)
    if proto == "graph":
        fill("national_cloud", NationalCloud.GLOBAL, "the worldwide Microsoft cloud")
        fill("graph_endpoint", GRAPH_ENDPOINTS[cloud], f"Graph endpoint of the {cloud} cloud")
    return cloud


def _outgoing(spec: OutgoingServerSpec, settings: MailSettingsSpec | None,
              out: list[Derivation]) -> None:
    fill = _filler(out, spec, "spec")
    proto = OutgoingProtocol(spec.protocol)
    if proto == OutgoingProtocol.SMTP:
        if spec.security is None:
            by_port = SECURITY_BY_PORT.get(spec.port) if spec.port else None
            fill("security", by_port or Security.STARTTLS,
                 f"port {spec.port} is the usual port for it" if by_port
                 else "STARTTLS on the submission port is the safe default")
        fill("port", SMTP_PORTS[Security(spec.security)], f"SMTP with security {spec.security}")
    else:
        fill("security", Security.TLS, f"{proto} runs over HTTPS")
        fill("port", 443, f"{proto} runs over HTTPS")
        fill("mailbox", spec.email, "the server's email address")
    cloud = _microsoft_endpoints(spec, fill, str(proto))
    if spec.alternate_host:
        fill("alternate_port", spec.port, "same port as the main host")
    limit, why = DEFAULT_ATTACHMENT_LIMIT_MB, "default attachment limit"
    if settings is not None:
        limit, why = settings.attachment_limit_mb, "MailSettings.attachmentLimitMB of the namespace"
    fill("attachment_limit_mb", limit, why)
    _filler(out, spec.attachments, "spec", "attachments")(
        "oversize", Oversize.DROP,
        "attachments over the limit are left out and named, as the desk products do")
    fill("max_concurrency", *CONCURRENCY[proto])
    lifetime, why = 1440, "default retry lifetime (24 hours)"
    if settings is not None:
        lifetime, why = settings.retry.lifetime_minutes, "MailSettings.retry.lifetimeMinutes"
    fill("retry_lifetime_minutes", lifetime, why)
    if settings is not None:
        fill("recipient_filter", settings.recipient_filter,
             "the namespace default, MailSettings.recipientFilter")
    if isinstance(spec.auth, OAuth2Auth):
        _oauth(out, spec, spec.auth, str(proto), cloud)


def _incoming(spec: IncomingServerSpec, out: list[Derivation]) -> None:
    fill = _filler(out, spec, "spec")
    proto = IncomingProtocol(spec.protocol)
    fill("port", INCOMING_PORTS[proto], f"standard port of {proto}")
    cloud = _microsoft_endpoints(spec, fill, str(proto))
    if isinstance(spec.auth, OAuth2Auth):
        usage = {IncomingProtocol.IMAPS: "imap", IncomingProtocol.POP3S: "pop3"}.get(
            proto, str(proto))
        _oauth(out, spec, spec.auth, usage, cloud)


def derive_all(resources: Iterable[LoadedResource]) -> None:
    """Fill in derived values in place; each resource keeps its derivations."""
    resources = list(resources)
    settings: dict[str, MailSettingsSpec] = {
        r.model.metadata.namespace: r.model.spec for r in resources
        if r.model.kind == "MailSettings"}
    for res in resources:
        spec = res.model.spec
        if isinstance(spec, OutgoingServerSpec):
            _outgoing(spec, settings.get(res.model.metadata.namespace), res.derivations)
        elif isinstance(spec, IncomingServerSpec):
            _incoming(spec, res.derivations)


def defaulted_paths(model: BaseModel, under: tuple[str, ...]) -> Iterator[str]:
    """Dotted camelCase paths of the values ``model`` (at ``under``) took from the model's
    defaults because the YAML did not write them: plans hide them unless they change."""
    for name, info in type(model).model_fields.items():
        path = (*under, info.alias or name)
        if name not in model.model_fields_set:
            yield ".".join(path)
            continue
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from defaulted_paths(value, path)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from defaulted_paths(item, (*path, str(i)))
