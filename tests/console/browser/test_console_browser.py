"""The console in a real browser (SPEC X6, S3): Chromium signs in with a token and
through OpenID Connect, opens every screen, filters, acts, is refused what its role or
namespace does not allow, and axe-core finds nothing serious on any page."""

from __future__ import annotations

import pytest
from peers.oidc import OidcPeer
from playwright.sync_api import BrowserContext, Page, expect

from .browser_kit import blocking_findings, checked, sign_in, visit
from .conftest import Site
from .seed import (
    ACME_RECIPIENT,
    ACME_SUBJECT,
    GLOBEX_EDIT,
    GLOBEX_RECIPIENT,
    GLOBEX_SUBJECT,
    HOLD_SUBJECT,
)

SCREENS = [  # path, main heading, screenshot name
    ("/console/", "Overview", "overview"),
    ("/console/servers", "Servers", "servers"),
    ("/console/outbox", "Outbox", "outbox"),
    ("/console/outbox?show=held", "Outbox", None),
    ("/console/outbox/{acme_message}", "Outbox message {acme_message}", "outbox-message"),
    ("/console/audit", "Email audit", "audit"),
    ("/console/history", "View History", "history"),
    ("/console/history/{globex_revision}", "Revision {globex_revision} (out-of-band)",
     "history-revision"),
    ("/console/sync", "Sync and drift", "sync"),
    ("/console/incoming", "Incoming", "incoming"),
]


def _submit(page: Page, action: str, fields: dict[str, str]) -> None:
    """POST a form the way a browser does, with exactly ``fields``."""
    with page.expect_navigation():
        page.evaluate("""([action, fields]) => {
            const form = document.createElement('form');
            form.method = 'post';
            form.action = action;
            for (const [name, value] of Object.entries(fields)) {
                const input = document.createElement('input');
                input.type = 'hidden'; input.name = name; input.value = value;
                form.appendChild(input);
            }
            document.body.appendChild(form);
            form.submit();
        }""", [action, fields])


def _csrf(page: Page) -> str:
    return page.locator("form.signout input[name=csrf_token]").get_attribute("value") or ""


def test_the_sign_in_page_is_accessible(page: Page, site: Site) -> None:
    reply = visit(page, f"{site.url}/console/servers")
    assert page.url.startswith(f"{site.url}/console/signin")
    assert reply.status == 200
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    expect(page.get_by_role("link", name="Sign in with Desk SSO")).to_be_visible()
    checked(page, "signin")


def test_a_wrong_token_is_refused_on_the_page(page: Page, site: Site) -> None:
    visit(page, f"{site.url}/console/signin")
    page.get_by_label("API token").fill("not-" + site.tokens["admin"])
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("not one of this daemon")
    checked(page)


@pytest.mark.parametrize(("path", "heading", "shot"), SCREENS,
                         ids=[s[2] or s[0] for s in SCREENS])
def test_every_screen_renders_its_heading_for_an_admin(
        page: Page, site: Site, path: str, heading: str, shot: str | None) -> None:
    ids = vars(site.seeded)
    sign_in(page, site.url, site.tokens["admin"])
    reply = visit(page, site.url + path.format(**ids))
    assert reply.status == 200, page.content()
    expect(page.get_by_role("heading", level=1)).to_have_text(heading.format(**ids))
    expect(page.locator("header")).to_contain_text("admin")
    checked(page, shot)


def test_the_admin_sees_both_tenants(page: Page, site: Site) -> None:
    sign_in(page, site.url, site.tokens["admin"], "/console/outbox?show=held")
    expect(page.locator("main")).to_contain_text(GLOBEX_SUBJECT)
    visit(page, f"{site.url}/console/audit")
    expect(page.locator("main")).to_contain_text(ACME_RECIPIENT)
    expect(page.locator("main")).to_contain_text(GLOBEX_RECIPIENT)


def test_an_audit_filter_narrows_the_rows(page: Page, site: Site) -> None:
    sign_in(page, site.url, site.tokens["admin"], "/console/audit")
    rows = page.locator("main table tbody tr")
    everything = rows.count()
    page.get_by_label("Recipient").fill(GLOBEX_RECIPIENT.upper())
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**/console/audit?*recipient=*")
    expect(rows).to_have_count(2)
    assert everything > 2
    for row in rows.all():
        expect(row).to_contain_text(GLOBEX_RECIPIENT)
    expect(page.get_by_label("Recipient")).to_have_value(GLOBEX_RECIPIENT.upper())
    page.get_by_label("Status").select_option("BOUNCED")
    page.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("mailbox full")
    checked(page)


def test_an_operator_holds_then_releases_a_message(page: Page, site: Site) -> None:
    sign_in(page, site.url, site.tokens["operator"], "/console/outbox")
    row = page.get_by_role("row").filter(has_text=HOLD_SUBJECT)
    row.get_by_role("button", name="Hold").click()
    expect(page.get_by_role("status")).to_contain_text("hold done")
    checked(page)
    visit(page, f"{site.url}/console/outbox?show=held")
    row = page.get_by_role("row").filter(has_text=HOLD_SUBJECT)
    row.get_by_role("button", name="Release").click()
    expect(page.get_by_role("status")).to_contain_text("release done")
    visit(page, f"{site.url}/console/outbox/{site.seeded.hold_message}")
    # Both actions are audit lines of the message, each naming the token that acted.
    for status in ("SEND_HELD", "SEND_RELEASED"):
        line = page.locator("main tr").filter(has_text=status)
        expect(line).to_have_count(1)
        expect(line).to_contain_text("operator")


def test_a_namespace_limited_viewer_sees_only_its_tenant(page: Page, site: Site) -> None:
    sign_in(page, site.url, site.tokens["acme-viewer"], "/console/servers")
    main = page.locator("main")
    expect(main).to_contain_text("Namespace acme")
    expect(main).not_to_contain_text("globex")
    for path in ("/console/outbox?namespace=acme", "/console/audit", "/console/history",
                 "/console/sync", "/console/incoming"):
        visit(page, site.url + path)
        expect(main).not_to_contain_text("globex")
        expect(main).not_to_contain_text(GLOBEX_EDIT)
    visit(page, f"{site.url}/console/audit")
    expect(main).to_contain_text(ACME_RECIPIENT)
    reply = visit(page, f"{site.url}/console/outbox/{site.seeded.globex_message}")
    assert reply.status == 404
    reply = visit(page, f"{site.url}/console/history/{site.seeded.globex_revision}")
    assert reply.status == 404
    checked(page)


def test_a_viewer_gets_the_403_page_on_an_operator_action(page: Page, site: Site) -> None:
    sign_in(page, site.url, site.tokens["acme-viewer"], "/console/outbox?namespace=acme")
    expect(page.locator("main")).to_contain_text(ACME_SUBJECT)
    expect(page.get_by_role("button", name="Hold")).to_have_count(0)
    _submit(page, f"{site.url}/console/outbox/{site.seeded.acme_message}/hold",
            {"csrf_token": _csrf(page), "namespace": "acme"})
    expect(page.get_by_role("heading", level=1)).to_have_text("This needs the operator role")
    checked(page, "forbidden")
    visit(page, f"{site.url}/console/outbox?show=held&namespace=acme")
    expect(page.locator("main")).not_to_contain_text(ACME_SUBJECT)


def test_a_post_without_the_csrf_token_is_refused(page: Page, site: Site) -> None:
    sign_in(page, site.url, site.tokens["operator"], "/console/outbox")
    with page.expect_response(f"**/outbox/{site.seeded.acme_message}/hold") as answer:
        _submit(page, f"{site.url}/console/outbox/{site.seeded.acme_message}/hold",
                {"namespace": "acme"})
    assert answer.value.status == 403
    checked(page)
    visit(page, f"{site.url}/console/outbox?show=held")
    expect(page.locator("main")).not_to_contain_text(ACME_SUBJECT)


def test_a_tampered_cookie_leads_to_sign_in(page: Page, context: BrowserContext,
                                            site: Site) -> None:
    sign_in(page, site.url, site.tokens["admin"])
    [cookie] = [c for c in context.cookies() if c["name"] == "reconcile_console"]
    value = cookie["value"]
    context.add_cookies([{**cookie, "value": value[:-2] + ("AA" if value[-2:] != "AA" else "BB")}])
    visit(page, f"{site.url}/console/servers")
    assert page.url.startswith(f"{site.url}/console/signin")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")


@pytest.mark.parametrize("path", ["/console/outbox/987654", "/console/history/987654"])
def test_an_unknown_id_shows_the_404_page(page: Page, site: Site, path: str) -> None:
    sign_in(page, site.url, site.tokens["admin"])
    reply = visit(page, site.url + path)
    assert reply.status == 404
    expect(page.get_by_role("link", name="Back to the console")).to_be_visible()
    checked(page, "not-found" if "outbox" in path else None)


def test_oidc_sign_in_through_the_provider(page: Page, site: Site, idp: OidcPeer) -> None:
    idp.user("ana@desk.example", groups=["desk-ops"], namespaces=["acme"])
    visit(page, f"{site.url}/console/signin?next=/console/outbox")
    page.get_by_role("link", name="Sign in with Desk SSO").click()
    page.wait_for_url(f"{site.url}/console/outbox")
    expect(page.locator("header")).to_contain_text("ana@desk.example")
    expect(page.locator("main")).to_contain_text(ACME_SUBJECT)
    expect(page.locator("main")).not_to_contain_text(GLOBEX_SUBJECT)
    checked(page)


def test_axe_reports_a_page_with_serious_problems(page: Page) -> None:
    page.set_content('<html><body><img src="x.png"><input type="text"></body></html>')
    findings = blocking_findings(page)
    assert any(f.startswith("image-alt (critical)") for f in findings), findings
    assert any(f.startswith("html-has-lang (serious)") for f in findings), findings
