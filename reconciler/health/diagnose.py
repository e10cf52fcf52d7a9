"""The likely fix for a failed step (SPEC O10): the table admins would otherwise
look up in a troubleshooting page.

Keyed on (step, reason); each entry is a function of the server so the text
can name the host, port and security actually configured.
"""

from __future__ import annotations

from collections.abc import Callable

from reconciler.config.derive import SMTP_PORTS
from reconciler.config.models.auth import BasicAuth, NoAuth, OAuth2Auth
from reconciler.config.models.outgoing_server import OutgoingProtocol, OutgoingServer, Security
from reconciler.mail.failover import Endpoint
from reconciler.mail.steps import Reason, Step, StepResult

Hint = Callable[[OutgoingServer, Endpoint], str]

_PORTS = (f"SMTP ports: {SMTP_PORTS[Security.STARTTLS]} with security starttls, "
          f"{SMTP_PORTS[Security.TLS]} with security tls (implicit TLS), "
          f"{SMTP_PORTS[Security.NONE]} for relays (none or starttls)")
_CA = ("If the server uses a private CA, trust it: --ca-file PEM here, the daemon's ca_file "
       "setting or RECONCILE_TLS_CA_FILE. Certificate checks cannot be switched off.")


def _security(server: OutgoingServer) -> str:
    return str(server.spec.security or Security.NONE)


def _other_security(server: OutgoingServer, ep: Endpoint) -> str:
    if Security(server.spec.security or Security.NONE) == Security.TLS:
        return (f"security is tls (TLS from the first byte) but port {ep.port} does not "
                "answer with TLS: for a port that upgrades after the greeting (usually "
                f"{SMTP_PORTS[Security.STARTTLS]}) use security starttls")
    return (f"security is {_security(server)} but port {ep.port} seems to expect TLS from "
            f"the first byte (usually {SMTP_PORTS[Security.TLS]}): use security tls there")


def _handshake(server: OutgoingServer, ep: Endpoint) -> str:
    if Security(server.spec.security or Security.NONE) == Security.STARTTLS:
        return ("The server offered STARTTLS but the TLS handshake failed: its TLS versions "
                "or ciphers may be too old for this machine (TLS 1.2 or newer is required), "
                "or something between the two interferes.")
    return (f"The TLS handshake failed: the security type does not match the port; "
            f"{_other_security(server, ep)}. {_PORTS}.")


def _hung_up(server: OutgoingServer, ep: Endpoint) -> str:
    if Security(server.spec.security or Security.NONE) == Security.TLS:
        return ("The server hung up after the TLS handshake without greeting: it may refuse "
                "this machine's address; ask the mail server's admin.")
    return (f"The server hung up before greeting: it may refuse this machine's address, or "
            f"{_other_security(server, ep)}.")


def _sender(server: OutgoingServer) -> str:
    if isinstance(server.spec.auth, NoAuth):
        return (f"The server refused the sender {server.spec.email}: it may accept only "
                "certain sender addresses or domains from this machine, or want a login "
                "first (configure auth).")
    return (f"The server refused the sender {server.spec.email}: the account that logged in "
            "may not send as that From address. Set email to the authenticated mailbox, or "
            "grant it permission to send as this address (Send As / verified sender).")


def _server_ref(server: OutgoingServer) -> str:
    return f"{server.metadata.namespace}/{server.metadata.name}"


def _not_bound(server: OutgoingServer, ep: Endpoint) -> str:
    return (f"No apply bound this server's credential to {ep.host}:{ep.port}, so it was not "
            "sent there (a `live set` or a direct store edit moved the server). Set the "
            "server back, or apply the change with `reconcile apply ... "
            f"--approve-credential-move OutgoingServer/{_server_ref(server)}`.")


def _auth_failed(server: OutgoingServer, ep: Endpoint) -> str:
    auth = server.spec.auth
    if server.spec.protocol == OutgoingProtocol.GRAPH:
        return _graph_token_refused(server, ep)
    if isinstance(auth, OAuth2Auth):
        return ("The server refused the OAuth token: check the mailbox (username) matches "
                "the account that granted consent, the scope includes SMTP sending, and "
                "SMTP AUTH is allowed for the mailbox; re-authorise with "
                f"`reconcile auth login {_server_ref(server)}` if the grant was revoked.")
    user = auth.username if isinstance(auth, BasicAuth) and auth.username else server.spec.email
    return (f"The server refused the login for {user}. Check the username and the password "
            "the reference points to; make sure SMTP AUTH is enabled for this mailbox "
            "(Microsoft 365 turns it off per mailbox by default); accounts with two-step "
            "sign-in need an app password instead of the account password (or switch to "
            "auth type oauth2).")


_TABLE: dict[tuple[Step, Reason], Hint] = {
    (Step.DNS, Reason.NXDOMAIN): lambda s, ep: (
        f"The host name {ep.host} does not exist in DNS. Check spelling of host"
        f"{' (alternateHost)' if ep.alternate else ''} in the server spec, and that this "
        "machine resolves internal names if it is an internal server."),
    (Step.DNS, Reason.DNS_TEMPORARY): lambda s, ep: (
        f"The DNS resolver did not answer for {ep.host}. Check this machine's DNS "
        "configuration and network, then try again."),
    (Step.DNS, Reason.TIMEOUT): lambda s, ep: (
        f"The DNS resolver did not answer for {ep.host} in time. Check this machine's DNS "
        "configuration and network."),
    (Step.TCP, Reason.REFUSED): lambda s, ep: (
        f"Nothing accepts connections on {ep.address}. Check the port ({_PORTS}), that "
        "the mail server is running, and that no firewall rejects the connection."),
    (Step.TCP, Reason.TIMEOUT): lambda s, ep: (
        f"{ep.address} did not answer: a firewall is probably dropping the connection "
        f"(outbound port {ep.port} blocked here or at the provider; many networks block "
        "port 25), or the host or port is wrong."),
    (Step.TCP, Reason.NO_ROUTE): lambda s, ep: (
        f"This machine has no network route to {ep.host}: check the network, a VPN, or "
        "whether an outbound proxy is required."),
    (Step.TCP, Reason.CLOSED): lambda s, ep: (
        f"The connection to {ep.address} failed: check host, port and firewall rules."),
    (Step.TLS, Reason.HANDSHAKE): lambda s, ep: _handshake(s, ep),
    (Step.TLS, Reason.NO_STARTTLS): lambda s, ep: (
        f"The server on port {ep.port} does not offer STARTTLS. If the port expects TLS from "
        f"the first byte (usually {SMTP_PORTS[Security.TLS]}) use security tls; if it is an "
        "internal relay without TLS, security none is the only option (and policies may "
        "refuse it)."),
    (Step.TLS, Reason.UNTRUSTED): lambda s, ep: (
        f"The server's certificate is not signed by a CA this machine trusts. {_CA}"),
    (Step.TLS, Reason.HOSTNAME_MISMATCH): lambda s, ep: (
        f"The certificate is valid but not for {ep.host}: set host to a name the "
        "certificate lists (usually the provider's documented SMTP host name, not an IP "
        "address or an alias)."),
    (Step.TLS, Reason.EXPIRED): lambda s, ep: (
        "The server's certificate has expired: whoever runs the mail server must renew it "
        "(or check this machine's clock)."),
    (Step.TLS, Reason.TIMEOUT): lambda s, ep: (
        f"The TLS handshake did not finish: {_other_security(s, ep)}."),
    (Step.GREETING, Reason.TIMEOUT): lambda s, ep: (
        f"Connected, but the server never sent its greeting. {_other_security(s, ep)}; "
        "otherwise a proxy or firewall is holding the connection."),
    (Step.GREETING, Reason.CLOSED): lambda s, ep: _hung_up(s, ep),
    (Step.GREETING, Reason.REJECTED): lambda s, ep: (
        "The server refused the session outright: this machine's IP address may be "
        "blocked or not allowed to relay; ask the mail server's admin."),
    (Step.GREETING, Reason.TEMPORARY): lambda s, ep: (
        "The server is busy or throttling connections: try again later; if it persists, "
        "ask the mail server's admin."),
    (Step.EHLO, Reason.REJECTED): lambda s, ep: (
        "The server refused this machine's EHLO name: set a fully qualified local host "
        "name for this machine."),
    (Step.AUTH, Reason.AUTH_FAILED): _auth_failed,
    (Step.AUTH, Reason.APP_PASSWORD): lambda s, ep: (
        "The provider wants a stronger sign-in than the account password: create an app "
        "password for this account, or use auth type oauth2."),
    (Step.AUTH, Reason.ENCRYPTION_REQUIRED): lambda s, ep: (
        "The server only accepts logins over an encrypted connection (it asks to issue "
        f"STARTTLS first): use security starttls (port {SMTP_PORTS[Security.STARTTLS]}) or "
        f"tls (port {SMTP_PORTS[Security.TLS]})."),
    (Step.AUTH, Reason.TEMPORARY): lambda s, ep: (
        "The server could not check the credentials right now: try again later."),
    (Step.AUTH, Reason.AUTH_NOT_OFFERED_PLAINTEXT): lambda s, ep: (
        "The server offers authentication only after encryption: use security starttls "
        f"(port {SMTP_PORTS[Security.STARTTLS]}) or tls (port {SMTP_PORTS[Security.TLS]})."),
    (Step.AUTH, Reason.AUTH_NOT_OFFERED): lambda s, ep: (
        "The server does not offer the authentication method this server's auth type "
        "needs: check the auth type, or whether SMTP AUTH is enabled for the account."),
    (Step.AUTH, Reason.SECRET): lambda s, ep: (
        "The password reference cannot be read on this machine: set the environment "
        "variable or create the file it names (secret references are resolved where the "
        "check runs), or check RECONCILE_SECRET_KEY for enc: values. A reference outside "
        "the allowed places is never read: see RECONCILE_SECRET_DIRS / RECONCILE_SECRET_ENV "
        "in docs/secrets.md."),
    (Step.AUTH, Reason.NOT_BOUND): lambda s, ep: _not_bound(s, ep),
    (Step.API, Reason.NOT_BOUND): lambda s, ep: _not_bound(s, ep),
    (Step.AUTH, Reason.NO_TOKEN_PROVIDER): lambda s, ep: (
        "This server uses OAuth2 and no token provider is available to this command: give "
        "the token cache key (RECONCILE_TOKEN_KEY or --token-key) and the store, and "
        f"authorise it once with `reconcile auth login {_server_ref(s)}`."),
    (Step.AUTH, Reason.TOKEN): lambda s, ep: (
        "No access token could be obtained: check client id, secret and tenant, and that "
        f"consent was granted; re-authorise with `reconcile auth login {_server_ref(s)}`."),
    (Step.AUTH, Reason.TOKEN_PERMANENT): lambda s, ep: (
        "The identity provider will not issue a token until a person acts: follow the fix "
        "in the error above (for a delegated grant, "
        f"`reconcile auth login {_server_ref(s)}` signs in again). Sends fail until then."),
    (Step.SEND, Reason.SENDER): lambda s, ep: _sender(s),
    (Step.SEND, Reason.RECIPIENT): lambda s, ep: (
        "The server refused the recipient: check the address given with --to; a relay "
        "may also refuse to relay to outside domains for this account or client address."),
    (Step.SEND, Reason.CONTENT): lambda s, ep: (
        "The server refused the message after receiving it: a content, size or anti-spam "
        "policy; the reply text says which."),
    (Step.SEND, Reason.REJECTED): lambda s, ep: (
        "The server refused the transaction; the reply text says why."),
    (Step.SEND, Reason.AUTH_REQUIRED): lambda s, ep: (
        "The server requires authentication before it accepts mail: configure auth "
        "(basic or oauth2) for this server."),
    (Step.SEND, Reason.ENCRYPTION_REQUIRED): lambda s, ep: (
        "The server requires STARTTLS before mail: use security starttls or tls."),
    (Step.SEND, Reason.AUTH_FAILED): _auth_failed,
    (Step.SEND, Reason.TEMPORARY): lambda s, ep: (
        "The server deferred the message (4xx): greylisting, throttling or a full queue. "
        "The daemon retries such failures; try again later."),
    (Step.SEND, Reason.TIMEOUT): lambda s, ep: (
        "The server stopped answering while the message was sent: check its load and "
        "timeoutSeconds; it may still deliver the message."),
}

_BY_STEP: dict[Step, Hint] = {
    Step.DNS: lambda s, ep: f"Check the host name {ep.host} and this machine's DNS.",
    Step.TCP: lambda s, ep: f"Check host, port ({_PORTS}) and firewalls.",
    Step.TLS: lambda s, ep: f"Check the security type against the port. {_PORTS}.",
    Step.GREETING: lambda s, ep: "Check the security type against the port, and firewalls.",
    Step.EHLO: lambda s, ep: "The server refused the session after the greeting.",
    Step.AUTH: _auth_failed,
    Step.SEND: lambda s, ep: "The server refused the test message; the reply says why.",
}


# -- Microsoft Graph (HTTP API steps) ---------------------------------------------------


def _graph_token_refused(server: OutgoingServer, ep: Endpoint) -> str:
    return (f"Graph at {ep.host} refused the access token: the app registration must be in "
            "the mailbox's tenant and national cloud (graphEndpoint and the token URL must "
            "belong to the same cloud), and the token must be for Microsoft Graph; for a "
            "delegated grant re-authorise with "
            f"`reconcile auth login {_server_ref(server)}`.")


def _graph_permission(server: OutgoingServer, ep: Endpoint) -> str:
    mailbox = server.spec.mailbox or server.spec.email
    return (f"The app may not use mailbox {mailbox}: grant it Mail.Send (an application "
            "permission with admin consent for clientCredentials; Mail.Send or "
            "Mail.Send.Shared delegated for authorizationCode) and check that no Exchange "
            "application access policy leaves this mailbox out.")


def _graph_not_found(server: OutgoingServer, ep: Endpoint) -> str:
    mailbox = server.spec.mailbox or server.spec.email
    return (f"No mailbox {mailbox} in the app's tenant: check spec.mailbox (defaults to "
            "email) and that the tenant in auth is the mailbox's tenant.")


_TABLE.update({
    (Step.TOKEN, Reason.NO_TOKEN_PROVIDER): _TABLE[(Step.AUTH, Reason.NO_TOKEN_PROVIDER)],
    (Step.TOKEN, Reason.TOKEN): _TABLE[(Step.AUTH, Reason.TOKEN)],
    (Step.TOKEN, Reason.TOKEN_PERMANENT): _TABLE[(Step.AUTH, Reason.TOKEN_PERMANENT)],
    (Step.TOKEN, Reason.AUTH_NOT_OFFERED): lambda s, ep: (
        "Microsoft Graph accepts only OAuth 2.0: set auth type oauth2 with provider "
        "microsoft, a client id and a tenant."),
    (Step.API, Reason.AUTH_FAILED): _graph_token_refused,
    (Step.API, Reason.PERMISSION): _graph_permission,
    (Step.API, Reason.NOT_FOUND): _graph_not_found,
    (Step.API, Reason.TEMPORARY): lambda s, ep: (
        "Graph is throttling or unavailable right now: the daemon waits out Retry-After and "
        "retries. If it lasts, another application may share this mailbox's limit of 4 "
        "concurrent requests (use a separate client id for incoming and outgoing mail)."),
    (Step.SEND, Reason.PERMISSION): _graph_permission,
    (Step.SEND, Reason.NOT_FOUND): _graph_not_found,
})
_BY_STEP.update({
    Step.TOKEN: lambda s, ep: "No access token: check client id, secret, tenant and consent.",
    Step.API: lambda s, ep: "Graph refused the call; the answer above says why.",
})


# -- Exchange Web Services ---------------------------------------------------------------


def _ews_online(server: OutgoingServer) -> bool:
    from reconciler.policy.functions import is_exchange_online

    return is_exchange_online(server.spec.ews_url) or is_exchange_online(server.spec.host)


def _ews_auth_failed(server: OutgoingServer, ep: Endpoint) -> str:
    auth = server.spec.auth
    if isinstance(auth, OAuth2Auth):
        return ("Exchange refused the access token (HTTP 401): the token must be for "
                "https://outlook.office365.com (scope EWS.AccessAsUser.All delegated, or "
                "full_access_as_app for clientCredentials) in the mailbox's tenant; for a "
                f"delegated grant re-authorise with `reconcile auth login {_server_ref(server)}`.")
    user = auth.username if isinstance(auth, BasicAuth) and auth.username else server.spec.email
    if _ews_online(server):
        return (f"Exchange Online refused the password login for {user} (HTTP 401): Microsoft "
                "has switched Basic authentication off for EWS. Use auth type oauth2 — better, "
                "move the server to protocol graph, as EWS in Exchange Online is being retired.")
    return (f"Exchange refused the login for {user} (HTTP 401): check the username (UPN "
            "user@domain or DOMAIN\\user) and the password the reference points to, and that "
            "the EWS virtual directory allows Basic or NTLM authentication.")


def _ews_permission(server: OutgoingServer, ep: Endpoint) -> str:
    mailbox = server.spec.mailbox or server.spec.email
    auth = server.spec.auth
    if isinstance(auth, OAuth2Auth) and auth.grant == "clientCredentials":
        return (f"The app may not act as {mailbox} (impersonation refused): grant it the "
                "full_access_as_app application permission with admin consent, and check "
                "that no application access policy leaves this mailbox out.")
    return (f"The account signed in may not use mailbox {mailbox}: give it Full Access and "
            "Send As on that mailbox, or the ApplicationImpersonation role on-premises.")


_EWS_TABLE: dict[tuple[Step, Reason], Hint] = {
    (Step.API, Reason.AUTH_FAILED): _ews_auth_failed,
    (Step.SEND, Reason.AUTH_FAILED): _ews_auth_failed,
    (Step.API, Reason.PERMISSION): _ews_permission,
    (Step.SEND, Reason.PERMISSION): _ews_permission,
    (Step.API, Reason.NOT_FOUND): lambda s, ep: (
        f"Exchange has no mailbox {s.spec.mailbox or s.spec.email}: check spec.mailbox "
        "(defaults to email)."),
    (Step.API, Reason.TEMPORARY): lambda s, ep: (
        "Exchange is busy (ErrorServerBusy or HTTP 503): it throttles EWS per account; the "
        "daemon waits out the back-off it asks for and retries. If it lasts, check the "
        "Exchange throttling policy or other applications using the same account."),
    (Step.API, Reason.REJECTED): lambda s, ep: (
        "The URL answered, but not as an EWS endpoint: check ewsUrl "
        "(usually https://HOST/EWS/Exchange.asmx)."),
    (Step.API, Reason.SECRET): _TABLE[(Step.AUTH, Reason.SECRET)],
    (Step.API, Reason.NO_TOKEN_PROVIDER): _TABLE[(Step.AUTH, Reason.NO_TOKEN_PROVIDER)],
    (Step.TLS, Reason.HOSTNAME_MISMATCH): lambda s, ep: (
        f"The certificate is valid but not for {ep.host}: set host (or ewsUrl) to a name the "
        "certificate lists, usually the Exchange server's published name such as "
        "mail.example.com rather than its internal server name or an IP address."),
}


def likely_fix(result: StepResult, server: OutgoingServer, endpoint: Endpoint) -> str:
    """What to change, in one or two sentences, for a failed step; '' for a passed one."""
    if result.ok:
        return ""
    if result.reason is not None and server.spec.protocol == OutgoingProtocol.EWS:
        hint = _EWS_TABLE.get((result.step, result.reason))
        if hint is not None:
            return hint(server, endpoint)
    if result.reason is not None:
        hint = _TABLE.get((result.step, result.reason))
        if hint is not None:
            return hint(server, endpoint)
    if result.fix:  # the step knew (the proxy step, incoming checks)
        return result.fix
    fallback = _BY_STEP.get(result.step)
    return fallback(server, endpoint) if fallback else ""
