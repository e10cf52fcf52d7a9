"""The console probed as a hostile outsider (or a tenant) would: headers, XSS, CSRF,
open redirects, sessions after sign-out, roles by direct POST, namespace leaks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from reconciler.console.links import commit_url, pull_url, repo_base
from reconciler.runtime.access import Principal
from reconciler.state import RevisionMeta, SqlStore

from .console_kit import (
    TokenTable,
    applied_store,
    client,
    console_app,
    csrf_of,
    outgoing,
    sign_in,
)

ADMIN = Principal.of("desk admin", ["admin"])
SCRIPT = "<script>alert(1)</script>"
ATTRIBUTE = '"><img src=x onerror=alert(2)>'


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    yield from applied_store(tmp_path / "state.db")


def _deferred(store: SqlStore, namespace: str, subject: str, error: str) -> int:
    note = {"module": "requests", "to": ["someone@example.com"], "subject": subject,
            "textBody": "hello"}
    stored = store.outbox.enqueue(note, namespace=namespace, idempotency_key=None)
    [claimed] = [m for m in store.outbox.claim("security-test", 1000, 60) if m.id == stored.id]
    assert store.outbox.schedule_retry(claimed.id, "security-test",
                                       datetime.now(UTC) + timedelta(hours=1), error)
    return stored.id


def _browser(store: SqlStore, principal: Principal = ADMIN, **settings: object
             ) -> tuple[TestClient, TokenTable]:
    tokens = TokenTable()
    browser = client(console_app(store, tokens, **settings))
    assert sign_in(browser, tokens.add(principal)).status_code == 303
    return browser, tokens


# -- headers ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/console/", "/console/outbox", "/console/signin",
                                  "/console/no-such-page", "/console/outbox/999"])
def test_every_console_response_sets_the_security_headers(store: SqlStore, path: str) -> None:
    browser, _ = _browser(store)
    reply = browser.get(path)
    csp = reply.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert reply.headers["X-Frame-Options"] == "DENY"
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.headers["Referrer-Policy"] == "same-origin"
    assert reply.headers["Cache-Control"] == "no-store"


def test_error_pages_and_csv_are_not_cached_static_files_are(store: SqlStore) -> None:
    browser, _ = _browser(store)
    forged = browser.post("/console/logout", data={"csrf_token": "forged"})
    assert forged.status_code == 403 and forged.headers["Cache-Control"] == "no-store"
    assert forged.headers["X-Frame-Options"] == "DENY"
    assert browser.get("/console/audit.csv").headers["Cache-Control"] == "no-store"
    css = browser.get("/console/static/console.css")
    assert css.headers["Cache-Control"].startswith("public")
    assert css.headers["X-Content-Type-Options"] == "nosniff"


def test_the_api_keeps_its_own_headers(store: SqlStore) -> None:
    browser, _ = _browser(store)
    assert "Content-Security-Policy" not in browser.get("/v1/nothing").headers


def test_templates_carry_no_inline_script_the_policy_would_block(store: SqlStore) -> None:
    browser, _ = _browser(store)
    for path in ("/console/", "/console/servers", "/console/outbox", "/console/audit",
                 "/console/history", "/console/sync", "/console/incoming"):
        html = browser.get(path).text
        assert "<script>" not in html and " onclick=" not in html, path


# -- XSS --------------------------------------------------------------------------------

def test_stored_values_are_escaped_in_pages(store: SqlStore) -> None:
    message = _deferred(store, "default", SCRIPT, ATTRIBUTE)
    browser, _ = _browser(store)
    for path in ("/console/outbox", f"/console/outbox/{message}"):
        html = browser.get(path).text
        assert SCRIPT not in html and ATTRIBUTE not in html, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path


def test_commit_and_pull_request_links_never_take_a_script_url(store: SqlStore) -> None:
    store.commit([outgoing("default", "extra")],
                 RevisionMeta(actor=SCRIPT, message=SCRIPT, git_commit="javascript:alert(1)",
                              pull_request="1 onmouseover=alert(3)"),
                 base_revision=store.head())
    browser, _ = _browser(store, sync_repo="https://git.example/desk/config.git")
    html = browser.get("/console/history").text
    assert "<code>javascript:a</code>" in html  # shown as text, never as a link
    assert 'href="javascript' not in html and SCRIPT not in html
    assert repo_base("javascript://git.example/%0aalert(1)") is None
    assert commit_url(repo_base("https://user:pw@git.example/a.git"), "abc123") == \
        "https://git.example/a/commit/abc123"
    assert pull_url("https://git.example/a", "1 onmouseover") is None


# -- open redirect --------------------------------------------------------------------

@pytest.mark.parametrize("target", [
    "//evil.example/console/", "https://evil.example/console/", "/\\evil.example",
    "javascript:alert(1)", "/console@evil.example", "\\\\evil.example/console/",
    "/consolex/../../evil", " https://evil.example/console/"])
def test_sign_in_never_sends_the_browser_to_another_site(store: SqlStore, target: str) -> None:
    tokens = TokenTable()
    browser = client(console_app(store, tokens))
    reply = sign_in(browser, tokens.add(ADMIN), target)
    location = reply.headers["location"]
    assert location.startswith("/console/") and not location.startswith("//"), location
    page = browser.get(f"/console/signin?next={target}")
    assert "evil.example" not in page.text.replace("evil.example%", "")


# -- sessions ---------------------------------------------------------------------------

def test_a_cookie_copied_before_sign_out_no_longer_works(store: SqlStore) -> None:
    browser, _ = _browser(store)
    stolen = browser.cookies["reconcile_console"]
    token = csrf_of(browser.get("/console/").text)
    assert browser.post("/console/logout", data={"csrf_token": token}).status_code == 303
    replay = client(browser.app)  # type: ignore[arg-type]
    replay.cookies.set("reconcile_console", stolen, path="/console")
    reply = replay.get("/console/outbox")
    assert reply.status_code == 303 and reply.headers["location"].startswith("/console/signin")
    # ...and signing in again gives a fresh session that works
    tokens = TokenTable()
    again = client(console_app(store, tokens))
    assert sign_in(again, tokens.add(ADMIN)).status_code == 303
    assert again.cookies["reconcile_console"] != stolen


def test_sign_in_issues_a_new_session_not_the_one_presented(store: SqlStore) -> None:
    browser, tokens = _browser(store, Principal.of("v", ["viewer"]))
    first = browser.cookies["reconcile_console"]
    assert sign_in(browser, tokens.add(ADMIN)).status_code == 303
    assert browser.cookies["reconcile_console"] != first


# -- roles and CSRF by direct request -------------------------------------------------

def test_a_viewer_cannot_act_by_posting_directly(store: SqlStore) -> None:
    message = _deferred(store, "default", "Subject", "451 later")
    browser, _ = _browser(store, Principal.of("viewer", ["viewer"]))
    token = csrf_of(browser.get("/console/").text)
    for path in (f"/console/outbox/{message}/cancel", f"/console/outbox/{message}/retry",
                 "/console/servers/outgoing/default/default-main/test", "/console/sync/now",
                 "/console/incoming/default/support/retry"):
        reply = browser.post(path, data={"csrf_token": token, "reason": "x"})
        assert reply.status_code == 403 and "needs the operator role" in reply.text, path
    assert store.outbox.get(message).state.value == "retry_wait"  # type: ignore[union-attr]


def test_state_changing_posts_without_the_token_are_refused(store: SqlStore) -> None:
    message = _deferred(store, "default", "Subject", "451 later")
    browser, _ = _browser(store)
    for path in (f"/console/outbox/{message}/cancel", "/console/sync/now",
                 "/console/servers/outgoing/default/default-main/test",
                 "/console/incoming/default/support/retry", "/console/logout"):
        reply = browser.post(path, data={"reason": "x"})
        assert reply.status_code == 403 and "could not be verified" in reply.text, path
    assert store.outbox.get(message).state.value == "retry_wait"  # type: ignore[union-attr]


def test_a_sender_reads_nothing(store: SqlStore) -> None:
    _deferred(store, "default", "Secret subject", "451 later")
    browser, _ = _browser(store, Principal.of("submitter", ["sender"]))
    for path in ("/console/", "/console/outbox", "/console/audit", "/console/audit.csv",
                 "/console/servers", "/console/history", "/console/sync",
                 "/console/incoming", "/console/outbox/1"):
        reply = browser.get(path)
        assert reply.status_code == 403 and "Secret subject" not in reply.text, path


# -- namespace leaks ------------------------------------------------------------------

def test_a_principal_with_no_namespace_sees_no_tenants_outbox(store: SqlStore) -> None:
    """An identity provider's namespaces claim can be present and empty: that principal
    sees nothing, and "no namespace" must not fall through to "every namespace"."""
    _deferred(store, "default", "Default subject", "451 later")
    _deferred(store, "acme", "Acme subject", "421 busy")
    browser, _ = _browser(store, Principal.of("nobody", ["operator"], []))
    for path in ("/console/outbox", "/console/outbox?namespace=acme",
                 "/console/outbox?namespace="):
        html = browser.get(path).text
        assert "Default subject" not in html and "Acme subject" not in html, path
    home = browser.get("/console/").text
    assert "retry_wait" not in home or ">1<" not in home


def test_a_limited_principal_gets_the_same_404_for_others_and_for_nothing(
        store: SqlStore) -> None:
    theirs = _deferred(store, "acme", "Acme subject", "421 busy")
    browser, _ = _browser(store, Principal.of("default ops", ["operator"], ["default"]))
    token = csrf_of(browser.get("/console/").text)
    hidden = browser.get(f"/console/outbox/{theirs}")
    missing = browser.get(f"/console/outbox/{theirs + 1000}")
    assert hidden.status_code == missing.status_code == 404
    assert "Acme subject" not in hidden.text
    for reply in (hidden, missing):
        assert "or it is not in a namespace you may see" in reply.text
    acted = browser.post(f"/console/outbox/{theirs}/cancel",
                         data={"csrf_token": token, "reason": "x"})
    assert acted.status_code == 404
    assert store.outbox.get(theirs).state.value == "retry_wait"  # type: ignore[union-attr]
    test = browser.post("/console/servers/outgoing/acme/acme-main/test",
                        data={"csrf_token": token})
    assert test.status_code == 404
    from reconciler.state.base import AuditEntry, AuditStatus

    store.audit.record([AuditEntry(AuditStatus.SENT, "sent", ns, f"{ns}-main",
                                   recipient=f"someone@{ns}.example") for ns in ("acme",
                                                                                 "default")])
    for query in ("", "?namespace=acme"):
        rows = browser.get(f"/console/audit.csv{query}").text.splitlines()[1:]
        assert all("acme" not in row for row in rows), query
        assert len(rows) == (1 if not query else 0)
    assert "acme.example" not in browser.get("/console/audit?namespace=acme").text


def test_a_token_session_ends_when_the_token_is_removed_or_narrowed(
        store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a configured key sessions outlive a restart; not the token they came from."""
    import secrets

    monkeypatch.setenv("RECONCILE_TEST_SECURITY_KEY", secrets.token_hex(32))
    key = {"console_session_key_ref": "env:RECONCILE_TEST_SECURITY_KEY"}
    tokens = TokenTable()
    first = client(console_app(store, tokens, **key))
    token = tokens.add(ADMIN)
    sign_in(first, token)
    kept = client(console_app(store, tokens, **key))  # restarted, same access file
    kept.cookies = first.cookies
    assert kept.get("/console/").status_code == 200
    removed = client(console_app(store, TokenTable(), **key))  # the token taken away
    removed.cookies = first.cookies
    assert removed.get("/console/outbox").status_code == 303
    narrowed_tokens = TokenTable({token: Principal.of(ADMIN.name, ["viewer"], ["acme"])})
    narrowed = client(console_app(store, narrowed_tokens, **key))
    narrowed.cookies = first.cookies
    assert narrowed.get("/console/outbox").status_code == 303


def test_behind_a_tls_proxy_the_cookies_are_secure(store: SqlStore) -> None:
    tokens = TokenTable()
    browser = client(console_app(store, tokens, console_public_url="https://desk.example"))
    form = browser.get("/console/signin")
    flow = form.headers["set-cookie"]
    assert flow.startswith("reconcile_console_flow=") and "Secure" in flow
    # The browser sends the Secure cookie back over its https; this client speaks http.
    browser.cookies.set("reconcile_console_flow", flow.split(";")[0].split("=", 1)[1],
                        path="/console")
    reply = browser.post("/console/signin", data={"csrf_token": csrf_of(form.text),
                                                  "token": tokens.add(ADMIN)})
    cookie = next(h for h in reply.headers.get_list("set-cookie")
                  if h.startswith("reconcile_console="))
    assert "Secure" in cookie and "HttpOnly" in cookie


def test_a_limited_viewer_does_not_read_the_daemon_wide_sync_reason(store: SqlStore) -> None:
    store.sync.update(reason="plan failed: OutgoingServer acme/acme-main: secret missing")
    limited, _ = _browser(store, Principal.of("default viewer", ["viewer"], ["default"]))
    page = limited.get("/console/sync")
    assert page.status_code == 200 and "acme-main" not in page.text
    whole, _ = _browser(store, Principal.of("viewer", ["viewer"]))
    assert "acme-main" in whole.get("/console/sync").text


def test_an_oidc_error_from_a_forged_link_is_not_shown_as_the_providers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from reconciler.console.oidc import OidcClient, OidcError, OidcSettings

    client_ = OidcClient(OidcSettings(issuer="https://idp.example", client_id="console"))
    lure = {"error": "access_denied", "state": "forged",
            "error_description": "Your account is locked: call +1 555 0100"}
    with pytest.raises(OidcError) as refused:
        asyncio.run(client_.finish({"state": "the real one"}, lure, "https://x/cb"))
    assert "state mismatch" in str(refused.value) and "555" not in str(refused.value)
    with pytest.raises(OidcError) as real:  # the provider's own answer, state matching
        asyncio.run(client_.finish({"state": "s"}, {**lure, "state": "s"}, "https://x/cb"))
    assert "access_denied" in str(real.value)


def test_csv_export_cells_never_start_a_formula(store: SqlStore) -> None:
    from reconciler.state.base import AuditEntry, AuditStatus

    store.audit.record([AuditEntry(AuditStatus.SEND_FAILED, "=HYPERLINK(\"http://x\")",
                                   "default", "default-main",
                                   recipient="@SUM(1+1)@example.com")])
    csv = _browser(store)[0].get("/console/audit.csv").text
    assert "'=HYPERLINK" in csv and "'@SUM(1+1)" in csv
    assert ",=" not in csv and ",@" not in csv


def test_htmx_is_told_to_stay_within_the_policy(store: SqlStore) -> None:
    """No inline style injected (the policy would block it), no eval, and no script
    run from a swapped-in fragment."""
    import json
    import re

    html = _browser(store)[0].get("/console/").text
    found = re.search(r"<meta name=\"htmx-config\" content='([^']+)'>", html)
    assert found, "the page configures htmx"
    assert json.loads(found.group(1)) == {"includeIndicatorStyles": False, "allowEval": False,
                                          "allowScriptTags": False}
