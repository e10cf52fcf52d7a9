"""The EWS connection check, one reportable step at a time (SPEC O9, O10):

    DNS → TCP → TLS → [token, OAuth2 only] → API

DNS, TCP and TLS go to the host and port of the EWS URL (``health.walk``: the same
steps and classification as SMTP and Graph), so a failure says whether the name, the
port or the certificate is the problem. The API step is one cheap
authenticated EWS call through exchangelib, exactly as the transport makes it
(same credentials, TLS context and adapter): ``GetFolder`` on the root folder of
the mailbox, on a fresh account so nothing cached hides a changed password. For
Basic auth there is no token step: the API step is where the password is checked.
Permission to *send* only shows in a real send, test-connection's last step.
"""

from __future__ import annotations

import asyncio
import logging

from reconciler.config.models.auth import OAuth2Auth
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.mail.ews.errors import AUTH_CODES, EwsFailed, Verdict, classify
from reconciler.mail.ews.transport import (
    EwsTransport,
    Login,
    check_mailbox,
    ews_url_for,
    url_endpoint,
)
from reconciler.mail.failover import Endpoint, endpoints_of
from reconciler.mail.outcome import Failure
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.steps import HTTP_API_PLAN, Reason, Step, StepResult
from reconciler.mail.transport import Redactor
from reconciler.mail.walk import StepError, Walk, token_step
from reconciler.oauth.source import invalidate_token

log = logging.getLogger(__name__)


def ews_plan(server: OutgoingServer) -> tuple[Step, ...]:
    if isinstance(server.spec.auth, OAuth2Auth):
        return HTTP_API_PLAN
    return tuple(s for s in HTTP_API_PLAN if s != Step.TOKEN)


def ews_endpoints(server: OutgoingServer) -> tuple[Endpoint, Endpoint | None]:
    """host/port as failover knows them; the EWS URL's host when only ewsUrl is given."""
    spec = server.spec
    if spec.host and spec.port is not None:
        return endpoints_of(spec)
    if not spec.ews_url:
        raise ValueError(f"server {server.metadata.name} has neither host nor ewsUrl")
    return url_endpoint(str(spec.ews_url)), None


async def walk_ews(server: OutgoingServer, endpoint: Endpoint,
                   options: ProbeOptions) -> list[StepResult]:
    """Walk the EWS steps against one host; stop at the first failure. Never raises."""
    url = ews_url_for(server, endpoint)
    target = url_endpoint(url, alternate=endpoint.alternate)
    walk = Walk(target.address, options.budget(server.spec), Redactor())
    transport = EwsTransport(ca_file=options.ca_file, token_provider=options.token_provider)
    transport.warn_exchange_online(server)
    if not await walk.reach_tls(target, options):
        return walk.results
    if isinstance(server.spec.auth, OAuth2Auth) and \
            await walk.run(Step.TOKEN, lambda: token_step(server, options, walk.redactor)) is None:
        return walk.results
    await walk.run(Step.API, lambda: _get_folder(server, url, transport, options, walk))
    return walk.results


async def _get_folder(server: OutgoingServer, url: str, transport: EwsTransport,
                      options: ProbeOptions, walk: Walk) -> tuple[bool, str]:
    retried = False
    while True:
        try:
            login = await transport.login(server, walk.redactor, url)
            transport.route(server, url, walk.redactor)
        except EwsFailed as exc:
            raise _step_error(exc.verdict) from None
        try:
            said = await asyncio.to_thread(check_mailbox, server, url, login,
                                           max(walk.remaining(), 0.1))
        except Exception as exc:
            verdict = classify(exc, walk.where)
            if verdict.auth_refused and login.kind == "oauth2" and not retried:
                retried = True
                if await invalidate_token(options.token_provider, server, login.secret):
                    continue  # as the transport does: a refused token is refreshed once
            raise _step_error(verdict, login) from None
        return True, said


def _step_error(verdict: Verdict, login: Login | None = None) -> StepError:
    code = int(verdict.code) if verdict.code and verdict.code.isdigit() else None
    detail = verdict.detail
    if verdict.failure == Failure.CONFIG and " is not bound to " in detail:
        reason = Reason.NOT_BOUND
    elif verdict.failure == Failure.CONFIG and "password" in detail:
        reason = Reason.SECRET
    elif verdict.failure == Failure.CONFIG and "token provider" in detail:
        reason = Reason.NO_TOKEN_PROVIDER
    elif verdict.failure == Failure.AUTH and detail.startswith("no access token"):
        reason = Reason.TOKEN_PERMANENT if verdict.outcome == "permanent" else Reason.TOKEN
    elif verdict.auth_refused:
        who = f" for {login.username}" if login is not None else ""
        detail = f"{detail}{who}"
        reason = Reason.AUTH_FAILED
    elif verdict.code == "403" or verdict.code in AUTH_CODES:
        reason = Reason.PERMISSION
    elif verdict.code == "ErrorNonExistentMailbox":
        reason = Reason.NOT_FOUND
    elif verdict.outcome == "transient" and not verdict.unreachable:
        reason = Reason.TEMPORARY
    elif verdict.unreachable or verdict.failure == Failure.CONNECT:
        reason = Reason.CLOSED
    elif verdict.tls_reason is not None:
        reason = {"hostname-mismatch": Reason.HOSTNAME_MISMATCH, "expired": Reason.EXPIRED,
                  "untrusted": Reason.UNTRUSTED}.get(verdict.tls_reason, Reason.HANDSHAKE)
    else:
        reason = Reason.REJECTED
    return StepError(verdict.failure, detail, reason, code)
