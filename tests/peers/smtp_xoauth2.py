"""An aiosmtpd peer whose AUTH XOAUTH2 checks bearer tokens against an :class:`OAuthPeer`.

A token is accepted when the identity provider issued it, it has not expired
and it was issued for the user named in the XOAUTH2 string (or is app-only).
A refused token gets what Exchange Online answers, ``535 5.7.3 Authentication
unsuccessful``. ``refuse_next`` makes the next N attempts fail that way
whatever the token (a token revoked at the mail server but not yet expired).
"""

from __future__ import annotations

import base64
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult

from peers.oauth_server import OAuthPeer
from peers.smtp import PeerCerts, RecordingHandler, SmtpPeer

REFUSED = "535 5.7.3 Authentication unsuccessful [peer.test]"


class XOAuth2Handler(RecordingHandler):
    def __init__(self, idp: OAuthPeer) -> None:
        super().__init__()
        self.idp = idp
        self.refuse_next = 0
        self.attempts: list[bool] = []  # outcome of every AUTH XOAUTH2

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        try:
            raw = base64.b64decode(args[1]).decode()
            fields = dict(part.split("=", 1) for part in raw.split("\x01") if "=" in part)
            user, bearer = fields["user"], fields["auth"]
        except (IndexError, ValueError, KeyError):
            await server.push("501 5.5.2 Cannot decode the XOAUTH2 argument")
            return AuthResult(success=False, handled=True)
        token = bearer.removeprefix("Bearer ")
        issued = self.idp.valid_access(token)
        ok = issued is not None and issued.user in (None, user)
        if self.refuse_next > 0:
            self.refuse_next -= 1
            ok = False
        self.attempts.append(ok)
        if not ok:
            await server.push(REFUSED)
            return AuthResult(success=False, handled=True)
        return AuthResult(success=True, auth_data=user.encode())


class XOAuth2Peer(SmtpPeer):
    """An SmtpPeer (STARTTLS by default) authenticating XOAUTH2 against ``idp``."""

    def __init__(self, idp: OAuthPeer, *, certs: PeerCerts, mode: Any = "starttls") -> None:
        super().__init__(mode, certs=certs)
        self.handler = XOAuth2Handler(idp)
        self._controller.handler = self.handler

    @property
    def attempts(self) -> list[bool]:
        return self.handler.attempts  # type: ignore[attr-defined]
