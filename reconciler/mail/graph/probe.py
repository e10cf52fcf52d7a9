"""The Microsoft Graph connection check, one reportable step at a time (SPEC O9, O10):

    DNS → TCP → TLS → token → API

DNS, TCP and TLS are the steps every check starts with (``health.walk``: same resolver
rules, same verifying TLS context, same classification as SMTP). The token step asks the
token provider (O11) for an access token; the API step makes one cheap call with it,
``GET {graphEndpoint}/v1.0/users/{mailbox}?$select=id,mail``, which proves the
token is accepted by this cloud and that the app may see the mailbox. Sending
permission (Mail.Send) only shows in a real send: test-connection's last step.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import httpx

from reconciler.config.models.auth import OAuth2Auth
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.credentials.gate import CredentialNotBound, require_client_at
from reconciler.mail.failover import Endpoint
from reconciler.mail.graph.transport import graph_error, mailbox_of, users_url
from reconciler.mail.outcome import Failure
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.steps import HTTP_API_PLAN, Reason, Step, StepResult
from reconciler.mail.transport import Redactor
from reconciler.mail.walk import StepError, Walk, token_step
from reconciler.oauth.source import invalidate_token


def graph_plan(server: OutgoingServer) -> tuple[Step, ...]:
    return HTTP_API_PLAN


def graph_endpoints(server: OutgoingServer) -> tuple[Endpoint, Endpoint | None]:
    """The host of ``graphEndpoint``; Graph has no alternate host."""
    endpoint = str(server.spec.graph_endpoint or "")
    parts = urlsplit(endpoint)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"server {server.metadata.name} has no https:// graphEndpoint")
    return Endpoint(parts.hostname, parts.port or 443), None


async def walk_graph(server: OutgoingServer, endpoint: Endpoint,
                     options: ProbeOptions) -> list[StepResult]:
    """Walk the Graph steps; stop at the first failure. Never raises."""
    walk = Walk(endpoint.address, options.budget(server.spec), Redactor())
    if not await walk.reach_tls(endpoint, options):
        return walk.results
    token = await walk.run(Step.TOKEN, lambda: token_step(server, options, walk.redactor))
    if token is None:
        return walk.results
    await walk.run(Step.API, lambda: _read_mailbox(server, options, token, walk))
    return walk.results


async def _read_mailbox(server: OutgoingServer, options: ProbeOptions, token: str,
                        walk: Walk) -> tuple[bool, str]:
    url = users_url(server.spec)
    try:
        if isinstance(server.spec.auth, OAuth2Auth):  # token_step refused any other auth
            require_client_at(server.spec.auth, url)
    except CredentialNotBound as exc:
        raise StepError(Failure.CONFIG, str(exc), Reason.NOT_BOUND) from None
    async with httpx.AsyncClient(verify=options.tls(), trust_env=False) as client:
        response = await _get(client, url, token)
        if response.status_code == 401 and await invalidate_token(options.token_provider,
                                                                  server, token):
            # as the transport does: a refused token is refreshed once
            token, _ = await token_step(server, options, walk.redactor)
            response = await _get(client, url, token)
    status = response.status_code
    mailbox = mailbox_of(server.spec)
    if status == 200:
        found = _json(response).get("mail") or mailbox
        return True, f"mailbox {found} readable ({status}, request-id " \
                     f"{response.headers.get('request-id', '-')})"
    code, message = graph_error(response)
    said = f"{status} {code}: {message}" if code else f"{status} {message}"
    if status == 401:
        raise StepError(Failure.AUTH, f"Graph refused the access token: {said}",
                        Reason.AUTH_FAILED, status)
    if status == 403:
        raise StepError(Failure.AUTH, f"Graph denied access to mailbox {mailbox}: {said}",
                        Reason.PERMISSION, status)
    if status == 404:
        raise StepError(Failure.CONFIG, f"Graph does not know mailbox {mailbox}: {said}",
                        Reason.NOT_FOUND, status)
    if status in (408, 429) or status >= 500:
        raise StepError(Failure.REJECTED, f"Graph answered {said}", Reason.TEMPORARY, status)
    raise StepError(Failure.REJECTED, f"Graph answered {said}", Reason.REJECTED, status)


async def _get(client: httpx.AsyncClient, url: str, token: str) -> httpx.Response:
    try:
        return await client.get(url, params={"$select": "id,mail"},
                                headers={"Authorization": f"Bearer {token}"})
    except ssl.SSLError:
        raise
    except httpx.TimeoutException:
        raise TimeoutError from None
    except httpx.HTTPError as exc:
        raise StepError(Failure.CONNECT, f"the API call failed: {exc}", Reason.CLOSED) from None


def _json(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
