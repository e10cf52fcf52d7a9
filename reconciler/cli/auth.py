"""`reconcile auth`: sign a mailbox in for OAuth2 (SPEC O11) and show token state.

``login`` runs the authorization-code flow with PKCE: it listens on the
server's ``redirectUrl`` (loopback only: the code must never travel to another
machine), prints the URL to open, checks the ``state`` of the answer, redeems
the code and stores the tokens sealed in the state store. The event is
recorded in the history as an ``auth`` revision naming the server and the
account, never a token.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import queue
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import click
from pydantic import ValidationError

from reconciler.cli.common import (
    UserError,
    format_option,
    opened_store,
    record_event,
    show_time,
    split_name,
    store_option,
    token_key_option,
)
from reconciler.config.models.auth import OAuth2Auth, OAuthGrant
from reconciler.credentials import gate
from reconciler.oauth.cache import TokenCache, TokenKeyError, client_digest, load_key
from reconciler.oauth.flows import FlowError
from reconciler.oauth.provider import flow_for, server_label, store_login
from reconciler.plan.apply import resolve_actor
from reconciler.runtime.namespace import resource_from_canonical
from reconciler.state.base import RevisionKind, Store

KINDS = ("OutgoingServer", "IncomingServer")
LOOPBACK = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1", "::1": "::1", "[::1]": "::1"}


@click.group("auth")
def command() -> None:
    """OAuth2 sign-in and token state of mail servers."""


@command.command("login")
@click.argument("server_name", metavar="SERVER")
@click.option("--namespace", "-n")
@click.option("--timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Seconds to wait for the browser to come back.")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False),
              envvar="RECONCILE_TLS_CA_FILE",
              help="Extra CA bundle to trust for the identity provider (private CAs).")
@click.option("--actor", metavar="NAME", help="Who signs in, for the history.")
@token_key_option
@store_option
def login_command(server_name: str, namespace: str | None, timeout: float,
                  ca_file: str | None, actor: str | None, token_key_ref: str | None,
                  store_url: str | None) -> None:
    """Sign SERVER (NAME or NAMESPACE/NAME) in with the authorization-code flow."""
    try:
        key = load_key(token_key_ref)
    except TokenKeyError as exc:
        raise UserError(str(exc)) from None
    who = resolve_actor(actor)
    with opened_store(store_url) as store:
        server = _find(store, server_name, namespace)
        gate.load(store)  # the token URL gets the client's secret only where it is bound
        auth = server.spec.auth
        label = server_label(server)
        if not isinstance(auth, OAuth2Auth):
            raise UserError(f"{label} does not use OAuth2 (auth type {auth.type}); there is "
                            "nothing to sign in")
        if auth.grant != OAuthGrant.AUTHORIZATION_CODE:
            raise UserError(f"{label} uses the client credentials grant: the app signs in by "
                            "itself and needs no login (`reconcile auth status` shows its "
                            "token)")
        redirect = str(auth.redirect_url or "")
        host, port, path = _loopback(redirect, label)
        flow = flow_for(auth, ca_file=ca_file, server=label)
        try:
            request = flow.begin_login(redirect, auth.username or server.spec.email)
        except FlowError as exc:
            raise UserError(f"{label}: {exc.problem}") from None
        answers: queue.Queue[dict[str, str]] = queue.Queue()
        try:
            listener = HTTPServer((host, port), _callback(path, request.state, answers))
        except OSError as exc:
            raise UserError(f"cannot listen on {redirect} ({exc.strerror}): free port {port} "
                            "or set redirectUrl to another loopback port (and register it "
                            "with the app)") from None
        threading.Thread(target=listener.serve_forever, daemon=True).start()
        try:
            click.echo(f"Sign in as {auth.username or server.spec.email} for {label}: open "
                       "this URL in a browser")
            click.echo(f"  {request.url}")
            click.echo(f"Waiting up to {timeout:g}s for the answer on {redirect} ...")
            try:
                answer = answers.get(timeout=timeout)
            except queue.Empty:
                raise UserError(f"no sign-in answer arrived on {redirect} within {timeout:g}s; "
                                "run the command again and finish the sign-in in time") from None
        finally:
            listener.shutdown()
            listener.server_close()
        try:
            grant = asyncio.run(flow.finish_login(request, answer))
        except FlowError as exc:
            raise UserError(f"{label}: {exc.problem}") from None
        cache = TokenCache(store.tokens, key)
        asyncio.run(store_login(cache, server, grant))
        account = grant.account or auth.username or server.spec.email
        number = record_event(store, who, f"auth login {label} as {account}", RevisionKind.AUTH,
                              lost="; the tokens are stored, but not the history entry")
    refresh = "with a refresh token" if grant.refresh_token or grant.msal_cache else \
        "WITHOUT a refresh token (the provider gave none: sign in again when it expires)"
    click.echo(f"Signed in {label} as {account} {refresh}; tokens are stored encrypted "
               f"(revision {number}, auth, by {who}).")


def _callback(path: str, state: str,
              answers: queue.Queue[dict[str, str]]) -> type[BaseHTTPRequestHandler]:
    class Callback(BaseHTTPRequestHandler):
        def log_message(self, _format: str, *_args: Any) -> None:
            return  # the query holds the authorization code

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path != path or query.get("state") != state:
                # Not the answer to our request (a stale tab, a forged link): ignored.
                self._page(400, "This answer does not belong to the running "
                                "`reconcile auth login`; nothing was changed.")
                return
            ok = "code" in query
            self._page(200 if ok else 400, "Signed in; you can close this window." if ok else
                       "The sign-in failed; the terminal says why.")
            answers.put(query)

        def _page(self, status: int, text: str) -> None:
            body = f"<!doctype html><title>reconcile</title><p>{text}</p>".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Callback


def _loopback(redirect: str, label: str) -> tuple[str, int, str]:
    parts = urlsplit(redirect)
    host = LOOPBACK.get((parts.hostname or "").lower())
    if parts.scheme != "http" or host is None:
        raise UserError(f"{label}: redirectUrl {redirect or '(unset)'} must be an http:// URL "
                        "on this machine (localhost, 127.0.0.1 or [::1]) so the sign-in comes "
                        "back to this command; register that URL with the app")
    return host, parts.port or 80, parts.path or "/"



def _find(store: Store, text: str, namespace: str | None) -> Any:
    ns, name = split_name(text, namespace)
    live = store.snapshot()
    found = [r for k, r in live.resources.items()
             if k.kind in KINDS and k.name == name and ns in (None, k.namespace)]
    if not found:
        known = sorted({k.name for k in live.resources if k.kind in KINDS})
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(f"no OutgoingServer or IncomingServer {text!r} in the live store{hint}")
    if len(found) > 1:
        where = ", ".join(sorted(f"{r.key.kind}/{r.key.namespace}" for r in found))
        raise UserError(f"{text!r} is ambiguous ({where}); write NAMESPACE/NAME")
    try:
        return resource_from_canonical(found[0])
    except ValidationError as exc:
        raise UserError(f"the live spec of {found[0].key} is not valid "
                        f"({exc.error_count()} problem(s))") from None


@command.command("status")
@format_option()
@store_option
def status_command(fmt: str, store_url: str | None) -> None:
    """Token state of every OAuth2 server (never a token value)."""
    with opened_store(store_url) as store:
        live = store.snapshot()
        rows = {r.key: r for r in store.tokens.all()}
    entries: list[dict[str, Any]] = []
    for key, resource in sorted(live.resources.items()):
        if key.kind not in KINDS:
            continue
        try:
            server = resource_from_canonical(resource)
        except Exception:  # an invalid live spec: `reconcile drift` is the place for it
            continue
        auth = server.spec.auth
        if not isinstance(auth, OAuth2Auth):
            continue
        row = rows.pop((key.kind, key.namespace, key.name), None)
        stale = row is not None and row.client_digest != client_digest(auth)
        entries.append(_entry(key.kind, f"{key.namespace}/{key.name}", str(auth.provider),
                              str(auth.grant), auth.username, row, stale))
    for (kind, ns, name), row in sorted(rows.items()):
        entries.append(_entry(kind, f"{ns}/{name}", None, row.grant, row.account, row, False,
                              orphan=True))
    if fmt == "json":
        click.echo(json.dumps({"servers": entries}, indent=2))
        return
    if not entries:
        click.echo("no server uses OAuth2 in the live store")
        return
    for e in entries:
        click.echo(f"{e['kind']}/{e['server']}  ({e['provider'] or '?'}, {e['grant']})")
        click.echo(f"  account:        {e['account'] or '-'}")
        click.echo(f"  state:          {e['state']}")
        expiry = e["accessTokenExpiresAt"]
        click.echo(f"  access token:   {'expires ' + expiry if expiry else 'none cached'}")
        click.echo(f"  refresh token:  {'held (encrypted)' if e['refreshToken'] else 'none'}")
        if e["lastError"]:
            click.echo(f"  last error:     {e['lastError']} ({e['lastErrorAt']})")


def _state(server: str, grant: str, row: Any, stale: bool, orphan: bool) -> str:
    """One phrase for the token state of a server, saying what to do when it needs a hand."""
    delegated = grant == str(OAuthGrant.AUTHORIZATION_CODE)
    if orphan:
        return "server no longer uses OAuth2 (or was deleted); the cached tokens are unused"
    if row is None or stale:
        state = ("not signed in: run `reconcile auth login " + server + "`" if delegated
                 else "no token yet (the first send or health check fetches one)")
        if stale:
            state += " (cached tokens belong to a previous app registration)"
        return state
    if row.last_error_permanent:
        return "needs attention: see last error"
    if row.access_expires_at is not None and row.access_expires_at > datetime.now(UTC):
        return "ok"
    if row.refresh_present or not delegated:
        return "ok (access token expired; refreshed on next use)"
    return "needs sign-in"


def _entry(kind: str, server: str, provider: str | None, grant: str, account: str | None,
           row: Any, stale: bool, *, orphan: bool = False) -> dict[str, Any]:
    use = row if row is not None and not stale else None
    return {
        "kind": kind, "server": server, "provider": provider, "grant": grant,
        "account": (use.account if use else None) or account,
        "state": _state(server, grant, row, stale, orphan),
        "accessTokenExpiresAt": show_time(use.access_expires_at)
        if use and use.access_expires_at else None,
        "refreshToken": bool(use and use.refresh_present),
        "lastError": use.last_error if use else None,
        "lastErrorAt": show_time(use.last_error_at) if use and use.last_error_at else None,
        "updatedAt": show_time(use.updated_at) if use else None,
    }
