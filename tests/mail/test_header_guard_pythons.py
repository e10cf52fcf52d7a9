"""The compose guard holds on every CPython this machine has (SPEC S1: "whatever the
Python patch level"). The email package's folder differs between releases (3.11.7
and 3.12.1 write a decoded CR LF out raw, 3.13.0 still does so in file names), so
the guard, which needs only the standard library, is run under each interpreter
found: every injection is refused or written safely, never sent raw."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHECK = r'''
from email import message_from_bytes
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default
from reconciler.mail.header_guard import GUARDED_SMTP
from reconciler.config.header_text import HeaderInjectionError

INJECT = "=?utf-8?q?x=0D=0AReply-To:_evil@attacker.example?="
CASES = [{"subject": INJECT}, {"subject": "=?utf-8?q?x=0D=0A=0D=0AINJECTED?="},
         {"x": INJECT}, {"name": INJECT}, {"filename": INJECT}, {"name": "x" * 10000},
         {"name": ", ".join(["Smith", "evil@attacker.example"] * 5)},
         {"subject": "s" * 10000}, {"subject": "Zpráva", "name": 'a"b, ' * 2000}]
for case in CASES:
    m = EmailMessage(policy=GUARDED_SMTP)
    m["From"] = Address(display_name="Desk", addr_spec="desk@desk.example")
    m["Reply-To"] = Address(addr_spec="support@desk.example")
    m["To"] = Address(display_name=case.get("name", ""), addr_spec="jane@corp.example")
    m["Subject"] = case.get("subject", "s")
    if "x" in case:
        m["X-Foo"] = case["x"]
    m.set_content("hello")
    if "filename" in case:
        m.add_attachment(b"d", maintype="application", subtype="octet-stream",
                         filename=case["filename"])
    try:
        raw = m.as_bytes(policy=GUARDED_SMTP)
    except HeaderInjectionError:
        continue  # refused: never sent
    msg = message_from_bytes(raw, policy=default)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998, case
    assert len(msg.get_all("Reply-To")) == 1, case
    assert [a.addr_spec for a in msg["To"].addresses] == ["jane@corp.example"], case
    assert set(msg.keys()) <= {"From", "Reply-To", "To", "Subject", "X-Foo", "MIME-Version",
                               "Content-Type", "Content-Transfer-Encoding"}, case
    assert msg.get_body(("plain",)).get_content().strip() == "hello", case
print("safe")
'''


def _version(python: str) -> str | None:
    try:
        done = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                              capture_output=True, text=True, timeout=60, check=False)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _interpreters() -> dict[str, str]:
    """CPython >= 3.11 found on PATH or in pyenv, one per version, this one included."""
    candidates = [sys.executable]
    for minor in range(11, 20):
        candidates.append(shutil.which(f"python3.{minor}") or "")
        pattern = os.path.expanduser(f"~/.pyenv/versions/3.{minor}.*/bin/python3")
        candidates.extend(sorted(glob.glob(pattern)))
    found: dict[str, str] = {}
    for python in filter(None, candidates):
        version = _version(python)
        if version and version not in found:
            found[version] = python
    return found


INTERPRETERS = _interpreters()


@pytest.mark.parametrize("version", sorted(INTERPRETERS))
def test_no_injection_reaches_the_wire_on_this_python(version: str) -> None:
    done = subprocess.run([INTERPRETERS[version], "-c", CHECK], capture_output=True,
                          text=True, timeout=120, check=False, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0 and done.stdout.strip() == "safe", done.stderr
