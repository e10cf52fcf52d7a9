"""Console sign-in by token, sessions and CSRF (SPEC X6, S3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.runtime.access import Principal
from reconciler.state import SqlStore

from .console_kit import (
    TokenTable,
    applied_store,
    client,
    console_app,
    csrf_of,
    daemon_app,
    sign_in,
)

ADMIN = Principal.of("desk admin", ["admin"])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    yield from applied_store(tmp_path / "console.db")


def test_unauthenticated_pages_redirect_to_sign_in_with_the_way_back(store: SqlStore) -> None:
    browser = client(console_app(store, TokenTable()))
    reply = browser.get("/console/outbox?show=held")
    assert reply.status_code == 303
    assert reply.headers["location"] == "/console/signin?next=%2Fconsole%2Foutbox%3Fshow%3Dheld"
    page = browser.get(reply.headers["location"])
    assert page.status_code == 200 and 'name="token"' in page.text


def test_sign_in_with_a_token_sets_a_strict_http_only_cookie(store: SqlStore) -> None:
    tokens = TokenTable()
    browser = client(console_app(store, tokens))
    reply = sign_in(browser, tokens.add(ADMIN), "/console/servers")
    assert reply.status_code == 303 and reply.headers["location"] == "/console/servers"
    cookie = next(h for h in reply.headers.get_list("set-cookie")
                  if h.startswith("reconcile_console="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http here; over https it is Secure
    home = browser.get("/console/")
    assert home.status_code == 200 and "desk admin" in home.text


def test_over_https_the_session_cookie_is_secure(store: SqlStore) -> None:
    tokens = TokenTable()
    browser = client(console_app(store, tokens))
    browser.base_url = browser.base_url.copy_with(scheme="https")
    reply = sign_in(browser, tokens.add(ADMIN))
    cookie = next(h for h in reply.headers.get_list("set-cookie")
                  if h.startswith("reconcile_console="))
    assert "Secure" in cookie


def test_a_wrong_token_is_refused_and_no_session_is_made(store: SqlStore) -> None:
    tokens = TokenTable()
    tokens.add(ADMIN)
    browser = client(console_app(store, tokens))
    reply = sign_in(browser, "not-" + next(iter(tokens.principals)))
    assert reply.status_code == 401
    assert "not one of this daemon" in reply.text
    assert browser.get("/console/").status_code == 303


def test_sign_in_goes_back_only_to_console_pages(store: SqlStore) -> None:
    tokens = TokenTable()
    browser = client(console_app(store, tokens))
    reply = sign_in(browser, tokens.add(ADMIN), "https://elsewhere.example/console/")
    assert reply.headers["location"] == "/console/"


def test_a_tampered_cookie_signs_out(store: SqlStore) -> None:
    tokens = TokenTable()
    browser = client(console_app(store, tokens))
    sign_in(browser, tokens.add(Principal.of("viewer", ["viewer"])))
    value = browser.cookies["reconcile_console"]
    payload, _, signature = value.rpartition(".")
    # Swap the signed payload for one claiming admin: the signature no longer fits.
    browser.cookies.set("reconcile_console", payload.replace(payload[5], "A" if payload[5]
                                                             != "A" else "B") + "." + signature,
                        path="/console")
    reply = browser.get("/console/servers")
    assert reply.status_code == 303 and reply.headers["location"].startswith("/console/signin")
    assert any(h.startswith('reconcile_console=""') or h.startswith("reconcile_console=;")
               for h in reply.headers.get_list("set-cookie"))


def test_a_cookie_signed_by_another_daemon_start_is_no_session(store: SqlStore) -> None:
    tokens = TokenTable()
    first = client(console_app(store, tokens))
    sign_in(first, tokens.add(ADMIN))
    second = client(console_app(store, tokens))  # a restart: a new random key
    second.cookies = first.cookies
    assert second.get("/console/").status_code == 303


def test_a_configured_session_key_keeps_sessions_over_a_restart(
        store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import secrets

    monkeypatch.setenv("RECONCILE_TEST_CONSOLE_KEY", secrets.token_hex(32))
    tokens = TokenTable()
    first = client(console_app(store, tokens,
                               console_session_key_ref="env:RECONCILE_TEST_CONSOLE_KEY"))
    sign_in(first, tokens.add(ADMIN))
    second = client(console_app(store, tokens,
                                console_session_key_ref="env:RECONCILE_TEST_CONSOLE_KEY"))
    second.cookies = first.cookies
    assert second.get("/console/").status_code == 200


def test_logout_needs_the_csrf_token_and_ends_the_session(store: SqlStore) -> None:
    tokens = TokenTable()
    browser = client(console_app(store, tokens))
    sign_in(browser, tokens.add(ADMIN))
    token = csrf_of(browser.get("/console/").text)
    forged = browser.post("/console/logout", data={"csrf_token": "x" + token[1:]})
    assert forged.status_code == 403 and "could not be verified" in forged.text
    assert browser.get("/console/").status_code == 200
    reply = browser.post("/console/logout", data={"csrf_token": token})
    assert reply.status_code == 303 and reply.headers["location"] == "/console/signin"
    assert browser.get("/console/").status_code == 303


def test_the_sign_in_form_itself_is_csrf_protected(store: SqlStore) -> None:
    tokens = TokenTable()
    browser = client(console_app(store, tokens))
    reply = browser.post("/console/signin", data={"token": tokens.add(ADMIN)})
    assert reply.status_code == 403
    assert browser.get("/console/").status_code == 303


def test_htmx_sends_the_csrf_token_as_a_header(store: SqlStore) -> None:
    tokens = TokenTable()
    browser = client(console_app(store, tokens))
    sign_in(browser, tokens.add(ADMIN))
    token = csrf_of(browser.get("/console/").text)
    reply = browser.post("/console/logout", headers={"X-CSRF-Token": token, "HX-Request": "true"})
    assert reply.status_code == 303


def test_the_daemon_serves_the_console_with_its_api_tokens(
        store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    app, token = daemon_app(store, monkeypatch)
    browser = client(app)
    assert sign_in(browser, token).status_code == 303
    home = browser.get("/console/")
    assert home.status_code == 200 and "api token env:RECONCILE_TEST_CONSOLE_TOKEN" in home.text
    # The API keeps its own answers: JSON, bearer tokens, no console cookie needed.
    assert browser.get("/v1/status").status_code == 401


def test_an_htmx_request_without_a_session_is_told_to_navigate_to_sign_in(
        store: SqlStore) -> None:
    browser = client(console_app(store, TokenTable()))
    reply = browser.post("/console/servers/outgoing/default/default-main/test",
                         headers={"HX-Request": "true",
                                  "HX-Current-URL": "http://testserver/console/servers"})
    assert reply.status_code == 204
    assert reply.headers["HX-Redirect"] == "/console/signin?next=%2Fconsole%2Fservers"
