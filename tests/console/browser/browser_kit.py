"""What every browser test does on a page: sign in, open a screen and check it
(no traceback text, axe-core clean), and take its screenshot when asked to.

axe-core comes from the npm package pinned in tools/axe (`npm ci --prefix tools/axe`,
run here when node_modules is missing). Findings of impact serious or critical fail
the test with the rule, its help text and the elements it points at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Response

REPO = Path(__file__).resolve().parents[3]
AXE_DIR = REPO / "tools" / "axe"
AXE = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
INSTALL = "npm ci --prefix tools/axe"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
BLOCKING = ("serious", "critical")
# Written by Python or Starlette when an exception reaches the page.
TRACEBACK_MARKS = ("Traceback (most recent call last)", 'File "/')
SCREENSHOTS = "RECONCILE_SCREENSHOTS"


def axe_script() -> Path:
    if AXE.is_file():
        return AXE
    npm = shutil.which("npm")
    proc = None if npm is None else subprocess.run(
        [npm, "ci", "--prefix", str(AXE_DIR), "--no-audit", "--no-fund", "--loglevel=error"],
        capture_output=True, text=True, check=False)
    if proc is None or proc.returncode != 0 or not AXE.is_file():
        detail = "npm is not installed" if proc is None else proc.stderr.strip()[-500:]
        pytest.fail(f"axe-core is not installed and `{INSTALL}` failed: {detail}",
                    pytrace=False)
    return AXE


def blocking_findings(page: Page) -> list[str]:
    """axe-core's serious and critical violations on the page, one line each."""
    # Evaluated through the DevTools protocol, not a <script> tag: the console's CSP
    # (script-src 'self', no inline) rightly blocks an injected inline script.
    page.evaluate(axe_script().read_text(encoding="utf-8"))
    result: dict[str, Any] = page.evaluate(
        "tags => axe.run(document, {runOnly: tags})", AXE_TAGS)
    return [f"{v['id']} ({v['impact']}): {v['help']} at "
            + ", ".join(" ".join(n["target"]) for n in v["nodes"])
            for v in result["violations"] if v.get("impact") in BLOCKING]


def checked(page: Page, shot: str | None = None) -> None:
    """The page shows no traceback, passes axe, and is saved as ``shot`` when asked."""
    text = page.content()
    for mark in TRACEBACK_MARKS:
        assert mark not in text, f"{page.url} shows traceback text: {mark!r}"
    findings = blocking_findings(page)
    assert not findings, f"axe on {page.url}:\n" + "\n".join(findings)
    folder = os.environ.get(SCREENSHOTS)
    if shot and folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{shot}.png"))


def visit(page: Page, url: str) -> Response:
    reply = page.goto(url)
    assert reply is not None, f"no response for {url}"
    return reply


def sign_in(page: Page, base: str, token: str, next_path: str = "/console/") -> None:
    visit(page, f"{base}/console/signin?next={next_path}")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(f"{base}{next_path}")
