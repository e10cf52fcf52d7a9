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

:class:`EwsCheck` is the check of an EWS IncomingServer (SPEC I9, ``mail.api_check``):
GetFolder on the root as its AUTH step, then the fetcher's folder resolution, the
folder's TotalCount/UnreadCount, and the newest item's MimeContent (GetItem leaves
IsRead as it is).
"""

from __future__ import annotations

from typing import Any

from exchangelib import Account
from exchangelib.folders import SHALLOW, FolderCollection

from reconciler.config.models.auth import OAuth2Auth
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.mail.api_check import ApiCheck, Said
from reconciler.mail.ews.fetcher import EwsFetcher, _Listed, refreshed
from reconciler.mail.ews.session import EwsSession, add_login_secrets, check_mailbox, url_endpoint
from reconciler.mail.ews.transport import EwsTransport, ews_url_for
from reconciler.mail.failover import Endpoint, endpoints_of
from reconciler.mail.incoming_check import counted
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.steps import HTTP_API_PLAN, Step, StepResult
from reconciler.mail.transport import Redactor
from reconciler.mail.walk import Walk, token_step


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
    # A fresh session, so nothing cached hides a changed password; a refused token is
    # refreshed once, as in a send.
    session = transport.new_session(server, url, threads=1, timeout=max(walk.remaining(), 0.1))
    try:
        await walk.run(Step.API, lambda: _get_folder(session))
    finally:
        await session.aclose()
    return walk.results


async def _get_folder(session: EwsSession) -> tuple[bool, str]:
    return True, await session.call(check_mailbox)


class EwsCheck(ApiCheck):
    fetcher_class = EwsFetcher

    def api_endpoint(self) -> Endpoint:
        return url_endpoint(self.fetcher.session.url)

    async def login(self) -> Said:
        session = self.fetcher.session
        said = await session.call(check_mailbox)  # the session's own classifier on failure
        assert session.login is not None
        add_login_secrets(self.redactor, session.login)
        return True, f"logged in as {session.login.username} ({session.login.kind}); {said}"

    async def folder_names(self) -> list[str]:
        names: list[str] = await self.fetcher.session.call(_folder_names)
        return names

    async def count(self) -> Said:
        self.total, unread = await self.fetcher._call("counting messages", self._totals)
        return True, counted(self.total, unread)

    def _totals(self, account: Account) -> tuple[int, int]:
        fresh = refreshed(account, self.fetcher._source)
        return int(fresh.total_count or 0), int(fresh.unread_count or 0)

    async def newest(self) -> bytes | None:
        raw: bytes | None = await self.fetcher._call("reading a message's headers", self._newest)
        return raw

    def _newest(self, account: Account) -> bytes | None:
        newest: Any = self.fetcher._source.all().order_by("-datetime_received")
        for item in newest.only("datetime_received")[:1]:
            if isinstance(item, Exception):
                raise item
            mail = self.fetcher._download(account, "sample", _Listed(item.id, item.changekey, None))
            return None if mail is None else bytes(mail.raw)
        return None


def _folder_names(account: Account) -> list[str]:
    def below(folder: Any) -> list[str]:
        found = FolderCollection(account=account, folders=[folder]).find_folders(depth=SHALLOW)
        return [str(f.name) for f in found if not isinstance(f, Exception)]
    return below(account.msg_folder_root) + [f"Inbox/{n}" for n in below(account.inbox)]
