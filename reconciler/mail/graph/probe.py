"""The Microsoft Graph connection check, one reportable step at a time (SPEC O9, O10):

    DNS → TCP → TLS → token → API

DNS, TCP and TLS are the steps every check starts with (``health.walk``: same resolver
rules, same verifying TLS context, same classification as SMTP). The token step asks the
token provider (O11) for an access token; the API step makes one cheap call with it,
``GET {graphEndpoint}/v1.0/users/{mailbox}?$select=id,mail``, which proves the
token is accepted by this cloud and that the app may see the mailbox. Sending
permission (Mail.Send) only shows in a real send: test-connection's last step.

:class:`GraphCheck` is the check of a Graph IncomingServer (SPEC I9, ``mail.api_check``).
Its AUTH step reads the inbox (``mailFolders/inbox``), which needs only the Mail.Read
permission the fetcher needs (``/users/{mailbox}`` would need User.Read.All too); then the
fetcher's folder resolution, the folder's totalItemCount/unreadItemCount and the newest
message's ``$value`` (reading it leaves isRead as it is).
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.mail.api_check import ApiCheck, Said
from reconciler.mail.failover import Endpoint
from reconciler.mail.failure import MailFailure
from reconciler.mail.graph.client import SENDING, GraphSession, graph_target, open_client
from reconciler.mail.graph.fetcher import EVER, GraphFetcher
from reconciler.mail.incoming_check import counted
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.steps import HTTP_API_PLAN, Step, StepResult
from reconciler.mail.transport import Redactor
from reconciler.mail.walk import Walk, token_step


def graph_plan(server: OutgoingServer) -> tuple[Step, ...]:
    return HTTP_API_PLAN


def graph_endpoints(server: OutgoingServer) -> tuple[Endpoint, Endpoint | None]:
    """The host of ``graphEndpoint``; Graph has no alternate host."""
    try:
        target = graph_target(server)
    except MailFailure as exc:
        raise ValueError(f"server {server.metadata.name}: {exc}") from None
    return Endpoint(target.host, target.port), None


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
    target = graph_target(server)
    client = open_client(options.tls(), None, walk.remaining())
    session = GraphSession(server, target, client, options.token_provider, walk.redactor,
                           SENDING, token=token,
                           deadline=asyncio.get_running_loop().time() + walk.remaining())
    try:
        return True, await read_mailbox(session)
    finally:
        await client.aclose()


async def read_mailbox(session: GraphSession) -> str:
    """The API step, here and in ``GraphTransport.probe``: ``GET /users/{mailbox}?$select=
    id,mail`` proves the token is accepted by this cloud and the app may see the mailbox."""
    session.step = "reading the mailbox"
    answer = await session.request("GET", session.target.users, params={"$select": "id,mail"})
    assert answer is not None
    try:
        found = answer.json().get("mail") or session.target.mailbox
    except (ValueError, AttributeError):  # not a JSON object: the 200 still proves access
        found = session.target.mailbox
    return (f"mailbox {found} readable ({answer.status_code}, request-id "
            f"{answer.headers.get('request-id', '-')})")


class GraphCheck(ApiCheck):
    fetcher_class = GraphFetcher

    def api_endpoint(self) -> Endpoint:
        return Endpoint(self.fetcher.target.host, self.fetcher.target.port)

    async def login(self) -> Said:
        await self.fetcher._request("reading the inbox", "GET",
                                    f"{self.fetcher.users}/mailFolders/inbox",
                                    params={"$select": "id"})
        self.redactor.add(self.fetcher._open().token)
        auth = self.server.spec.auth
        return True, (f"access token accepted for {self.fetcher.target.mailbox} (oauth2 "
                      f"{getattr(auth, 'grant', '')}, client {getattr(auth, 'client_id', '')})")

    async def folder_names(self) -> list[str]:
        async def below(url: str) -> list[str]:
            answer = await self.fetcher._request("listing folders", "GET", url,
                                                 params={"$select": "displayName", "$top": "100"})
            return [str(f.get("displayName")) for f in answer.json().get("value") or []]
        users = self.fetcher.users
        return await below(f"{users}/mailFolders") + [
            f"Inbox/{n}" for n in await below(f"{users}/mailFolders/inbox/childFolders")]

    def _folder_url(self) -> str:
        return f"{self.fetcher.users}/mailFolders/{quote(self.fetcher._source, safe='')}"

    async def count(self) -> Said:
        answer = await self.fetcher._request(
            "counting messages", "GET", self._folder_url(),
            params={"$select": "totalItemCount,unreadItemCount"})
        body = answer.json()
        self.total = int(body.get("totalItemCount") or 0)
        return True, counted(self.total, int(body.get("unreadItemCount") or 0))

    async def newest(self) -> bytes | None:
        answer = await self.fetcher._request(
            "reading a message's headers", "GET", f"{self._folder_url()}/messages",
            params={"$filter": EVER, "$orderby": "receivedDateTime desc", "$top": "1",
                    "$select": "id"})
        found = answer.json().get("value") or []
        raw: bytes | None = await self.fetcher._download(str(found[0]["id"])) if found else None
        return raw
