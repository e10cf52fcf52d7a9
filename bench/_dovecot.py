"""A private Dovecot (IMAP, IMAPS, POP3, POP3S) for the incoming-mail tests and benchmarks.

One instance owns one temporary directory: its config, ``base_dir``, log,
passwd-file and maildirs. It listens on free loopback ports only, so it never
meets a system Dovecot, and ``stop`` ends it by the pid it started.

- TLS: a leaf certificate for 127.0.0.1/localhost from the trustme CA given
  (the tests' session CA, so ``ca_file`` is what clients trust).
- Users live in passwd-files (one per user, plain passwords), so
  :meth:`add_user` works while running; one user per test keeps tests apart
  without any reset.
- XOAUTH2/OAUTHBEARER go through Dovecot's real ``oauth2`` passdb, whose
  ``introspection_url`` is a small HTTP endpoint run here: it answers
  RFC 7662 ``{"active": true, "username": ...}`` for tokens it issued.
- Mail is delivered by writing maildir files (tmp, then rename into new, as
  any MDA does); Dovecot sees them at the next sync, or during IDLE within
  ``mailbox_idle_check_interval`` (1 s here). That is fast enough to load
  thousands of mails for a benchmark.

The test fixture (tests/peers/dovecot.py) and the incoming benchmark both use
this module; it imports nothing from pytest.
"""

from __future__ import annotations

import itertools
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs

import trustme

START_WAIT_S = 15.0
STOP_WAIT_S = 10.0
HOST = "127.0.0.1"


class DovecotMissing(RuntimeError):
    """Dovecot is not installed; the message names the packages."""


def dovecot_binary() -> str:
    found = shutil.which("dovecot") or ("/usr/sbin/dovecot"
                                        if os.path.exists("/usr/sbin/dovecot") else None)
    if found is None:
        raise DovecotMissing("dovecot is not installed: "
                             "`apt-get install dovecot-imapd dovecot-pop3d`")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


CONFIG = """\
# Written by bench/_dovecot.py for one private instance.
base_dir = {root}/run
state_dir = {root}/state
instance_name = reconciler-{tag}
protocols = imap pop3
listen = {host}
log_path = {root}/dovecot.log
ssl = yes
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
# a refused login answers at once: tests check refusals, nobody brute-forces here
auth_failure_delay = 0
mail_location = maildir:{root}/mail/%u
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = {uid}
first_valid_gid = {gid}
default_login_user = {login_user}
default_internal_user = {internal_user}
mailbox_idle_check_interval = 1 secs
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {root}/oauth2.conf.ext
}}
passdb {{
  driver = passwd-file
  # one file per user: Dovecot stats a shared passwd-file at most once a second,
  # so a user added just now would not be found
  args = scheme=PLAIN username_format=%u {root}/users/%u
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
# no growing per-IP penalty after refused logins: every test connects from 127.0.0.1
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
"""

OAUTH2 = """\
introspection_mode = post
introspection_url = http://{host}:{port}/introspect
username_attribute = username
active_attribute = active
active_value = true
"""


@dataclass(frozen=True)
class MailUser:
    name: str
    password: str
    token: str  # an OAuth access token the instance's introspection endpoint accepts
    maildir: Path


class _Introspection(ThreadingHTTPServer):
    daemon_threads = True
    tokens: dict[str, str]


class _IntrospectionHandler(BaseHTTPRequestHandler):
    server: _Introspection

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        token = (form.get("token") or [""])[0]
        user = self.server.tokens.get(token)
        body = json.dumps({"active": True, "username": user} if user else
                          {"active": False}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class DovecotInstance:
    """One running Dovecot; use as a context manager or call start/stop."""

    def __init__(self, ca: trustme.CA | None = None, *, root: Path | None = None) -> None:
        self.ca = ca or trustme.CA()
        self._own_root = root is None
        # Login and mail processes run as other users when we are root: they must
        # be able to reach the directory, so not a 0700 pytest tmp dir.
        self.root = root or Path(tempfile.mkdtemp(prefix="reconciler-dovecot-"))
        self.root.chmod(0o755)
        self.imap, self.imaps, self.pop3, self.pop3s = (free_port() for _ in range(4))
        self.ca_file = self.root / "ca.pem"
        self._proc: subprocess.Popen[bytes] | None = None
        self._http: _Introspection | None = None
        self._seq = itertools.count()
        self._users: dict[str, MailUser] = {}
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            self.uid, self.gid = nobody.pw_uid, nobody.pw_gid
            self._login_user, self._internal_user = "dovenull", "dovecot"
        else:
            self.uid, self.gid = os.getuid(), os.getgid()
            me = pwd.getpwuid(self.uid).pw_name
            self._login_user = self._internal_user = me

    # -- life cycle -------------------------------------------------------

    def start(self) -> Self:
        binary = dovecot_binary()
        for sub in ("run", "state", "mail", "home", "users"):
            (self.root / sub).mkdir(exist_ok=True)
        for sub in ("mail", "home"):
            os.chown(self.root / sub, self.uid, self.gid)
        leaf = self.ca.issue_cert(HOST, "localhost")
        leaf.cert_chain_pems[0].write_to_path(str(self.root / "cert.pem"))
        for extra in leaf.cert_chain_pems[1:]:
            extra.write_to_path(str(self.root / "cert.pem"), append=True)
        leaf.private_key_pem.write_to_path(str(self.root / "key.pem"))
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self._http = _Introspection((HOST, 0), _IntrospectionHandler)
        self._http.tokens = {}
        threading.Thread(target=self._http.serve_forever, name="dovecot-introspection",
                         daemon=True).start()
        (self.root / "oauth2.conf.ext").write_text(
            OAUTH2.format(host=HOST, port=self._http.server_address[1]))
        self.config.write_text(CONFIG.format(
            root=self.root, tag=f"{os.getpid()}-{id(self):x}", host=HOST, uid=self.uid,
            gid=self.gid, login_user=self._login_user, internal_user=self._internal_user,
            imap=self.imap, imaps=self.imaps, pop3=self.pop3, pop3s=self.pop3s))
        self._proc = subprocess.Popen([binary, "-F", "-c", str(self.config)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_WAIT_S
        pending = [self.imap, self.imaps, self.pop3, self.pop3s]
        while pending and time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                self.stop()
                raise RuntimeError(f"dovecot exited at start: {err.strip()} {self.log()}")
            try:
                socket.create_connection((HOST, pending[0]), timeout=0.5).close()
                pending.pop(0)
            except OSError:
                time.sleep(0.02)
        if pending:
            self.stop()
            raise RuntimeError(f"dovecot did not listen on port {pending[0]}: {self.log()}")
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_WAIT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stderr:
                proc.stderr.close()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def config(self) -> Path:
        return self.root / "dovecot.conf"

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- users and mail ---------------------------------------------------

    def add_user(self, name: str | None = None, password: str | None = None) -> MailUser:
        """A new mailbox (``name@example.test`` style names are fine)."""
        name = name or f"user{next(self._seq)}-{secrets.token_hex(3)}@example.test"
        user = MailUser(name, password or secrets.token_urlsafe(12),
                        f"tok-{secrets.token_urlsafe(16)}", self.root / "mail" / name)
        (self.root / "users" / user.name).write_text(f"{user.name}:{{PLAIN}}{user.password}\n")
        if self._http is not None:
            self._http.tokens[user.token] = user.name
        self._users[name] = user
        return user

    def revoke_token(self, user: MailUser) -> None:
        if self._http is not None:
            self._http.tokens.pop(user.token, None)

    def folder_dir(self, user: MailUser, folder: str = "INBOX") -> Path:
        path = user.maildir if folder == "INBOX" else user.maildir / f".{folder}"
        for directory in (user.maildir, path, path / "cur", path / "new", path / "tmp"):
            if not directory.is_dir():
                directory.mkdir(exist_ok=True)
                os.chown(directory, self.uid, self.gid)
        return path

    def deliver(self, user: MailUser, raw: bytes, folder: str = "INBOX") -> Path:
        """Put one message into the folder as an MDA would (new/, unseen)."""
        return self.deliver_many(user, [raw], folder)[0]

    def deliver_many(self, user: MailUser, raws: Iterable[bytes],
                     folder: str = "INBOX") -> list[Path]:
        base = self.folder_dir(user, folder)
        paths = []
        for raw in raws:
            unique = f"{time.time_ns()}.P{os.getpid()}Q{next(self._seq)}.reconciler"
            tmp = base / "tmp" / unique
            with tmp.open("wb") as out:
                out.write(raw)
            os.chown(tmp, self.uid, self.gid)
            final = base / "new" / unique
            tmp.rename(final)
            paths.append(final)
        return paths

    def preload(self, user: MailUser, count: int, *, size: int = 2_000,
                folder: str = "INBOX") -> None:
        """``count`` sample mails of about ``size`` bytes, already indexed by Dovecot.

        The resync makes Dovecot index the files now, so a benchmark's first
        SELECT measures fetching rather than Dovecot's first look at them.
        """
        self.deliver_many(user, (sample_mail(i, size=size) for i in range(count)), folder)
        self.doveadm("force-resync", "-u", user.name, folder)

    def doveadm(self, *args: str) -> str:
        """Run doveadm against this instance (as the mail user, so files stay theirs)."""
        run = subprocess.run(["doveadm", "-c", str(self.config), *args], capture_output=True,
                             text=True, timeout=30, check=False)
        if run.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)} failed: {run.stderr.strip()}")
        return run.stdout

    def set_uidvalidity(self, user: MailUser, value: int, folder: str = "INBOX") -> None:
        """What a server restore or migration does: all old UIDs become meaningless."""
        self.doveadm("mailbox", "update", "-u", user.name, "--uid-validity", str(value), folder)

    def message_count(self, user: MailUser, folder: str = "INBOX") -> int:
        out = self.doveadm("-f", "flow", "mailbox", "status", "-u", user.name, "messages",
                           folder)
        return int(out.split("=", 1)[1])


def sample_mail(index: int, *, size: int = 0, sender: str = "customer@example.test",
                to: str = "desk@example.test") -> bytes:
    """A plain RFC 5322 message with a unique Message-ID; ``size`` pads the body."""
    body = f"Request {index}: the printer on floor {index % 7} is jammed.\r\n"
    if size > len(body):
        line = ("x" * 76 + "\r\n")
        body += line * ((size - len(body)) // len(line))
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: Request {index}\r\n"
            f"Message-ID: <req-{index}-{secrets.token_hex(4)}@example.test>\r\n"
            f"Date: Fri, 21 Nov 2025 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=us-ascii\r\n\r\n{body}").encode()

