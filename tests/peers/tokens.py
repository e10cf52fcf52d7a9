"""A token source for tests, shaped like reconciler.oauth's provider (the TokenSource
protocol of reconciler.mail.transport): it hands out tokens in order and moves
to the next one only when told the current one was refused, remembering what was."""

from __future__ import annotations

from typing import Any


class Tokens:
    """``Tokens(STALE, FRESH)``: STALE until a server refuses it, then FRESH. The last
    token stays however often it is refused (a revoked grant keeps failing)."""

    def __init__(self, *tokens: str) -> None:
        if not tokens:
            raise ValueError("Tokens needs at least one token")
        self.tokens = list(tokens)
        self.invalidated: list[str] = []

    async def token(self, server: Any) -> str:
        return self.tokens[0]

    async def invalidate(self, server: Any, token: str) -> None:
        self.invalidated.append(token)
        if self.tokens[0] == token and len(self.tokens) > 1:
            self.tokens.pop(0)
