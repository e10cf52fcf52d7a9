"""A real daemon serving the console, and Debian's Chromium driven by Playwright.

The daemon is a `reconcile daemon --role intake` process (API and console, no send
workers: a released message stays queued instead of being sent) over a SQLite store
seeded with `reconcile apply examples/config --yes` and then rows for every screen.
The examples' mailboxes fail to fetch on their own (their secrets are not set), so
the daemon never leaves the machine. Tokens come from an access file: an admin, an
operator and a viewer limited to the acme namespace.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from peers.oidc import OidcPeer
from peers.smtp import PeerCerts
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from .seed import Seeded, seed_store

REPO = Path(__file__).resolve().parents[3]
CHROMIUM = "/usr/bin/chromium"
CLIENT_ID = "reconcile-console"
START_SECONDS = 60.0


@dataclass(frozen=True)
class Site:
    url: str
    tokens: dict[str, str]  # admin, operator, acme-viewer -> token
    seeded: Seeded
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _access_file(folder: Path, env: dict[str, str]) -> dict[str, str]:
    """Write the access file; the tokens themselves only go to the daemon's environment."""
    tokens: dict[str, str] = {}
    lines = ["tokens:"]
    for name, role, namespaces in (("admin", "admin", None), ("operator", "operator", None),
                                   ("acme-viewer", "viewer", ["acme"])):
        variable = f"RECONCILE_BROWSER_{name.upper().replace('-', '_')}"
        tokens[name] = env[variable] = secrets.token_hex(16)
        lines += [f"  - name: {name}", f"    secretRef: env:{variable}", f"    role: {role}"]
        if namespaces:
            lines.append(f"    namespaces: [{', '.join(namespaces)}]")
    (folder / "access.yaml").write_text("\n".join(lines) + "\n")
    return tokens


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll /healthz until it answers; the pause between tries is a wait on the process."""
    for _ in range(int(START_SECONDS / 0.1)):
        try:
            if httpx.get(f"{url}/healthz", timeout=5.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        try:
            proc.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"the daemon exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
    pytest.fail(f"the daemon did not answer /healthz:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="package")
def idp(certs: PeerCerts) -> Iterator[OidcPeer]:
    peer = OidcPeer(certs)
    yield peer
    peer.stop()


@pytest.fixture(scope="package")
def site(tmp_path_factory: pytest.TempPathFactory, idp: OidcPeer,
         certs: PeerCerts) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("browser-daemon")
    store_url = f"sqlite:///{folder}/state.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    applied = subprocess.run(
        [sys.executable, "-m", "reconciler", "apply", str(REPO / "examples" / "config"),
         "--yes", "--store", store_url], env=env, capture_output=True, text=True, check=False)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    seeded = seed_store(store_url)
    tokens = _access_file(folder, env)
    oidc_secret = env["RECONCILE_BROWSER_OIDC_SECRET"] = secrets.token_urlsafe(24)
    url = f"http://127.0.0.1:{_free_port()}"
    idp.register(CLIENT_ID, oidc_secret, f"{url}/console/signin/oidc/callback")
    log = folder / "daemon.log"
    command = [sys.executable, "-m", "reconciler", "daemon", "--store", store_url,
               "--listen", url.removeprefix("http://"), "--role", "intake", "--workers", "0",
               "--access-file", str(folder / "access.yaml"), "--console",
               "--ca-file", str(certs.ca_file),
               "--console-oidc-issuer", idp.issuer, "--console-oidc-client-id", CLIENT_ID,
               "--console-oidc-client-secret-ref", "env:RECONCILE_BROWSER_OIDC_SECRET",
               "--console-oidc-namespaces-claim", "namespaces",
               "--console-oidc-role", "desk-ops=operator",
               "--console-oidc-label", "Desk SSO"]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=folder)
    try:
        _wait_healthy(url, proc, log)
        yield Site(url, tokens, seeded, log)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # A page that failed unexpectedly logs its traceback: none may have.
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


# Package scope, not session: Playwright's sync API keeps an event loop marked running in
# this thread while it is open, and every later test calling asyncio.run() would fail.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (see .ci/run)")
    with sync_playwright() as playwright:
        # --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    # The OIDC peer's certificate comes from a throw-away CA the browser does not know.
    opened = browser.new_context(viewport={"width": 1280, "height": 800},
                                 ignore_https_errors=True)
    yield opened
    opened.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()
