"""A private Postfix instance relaying to the benchmark sink.

Everything lives under one temporary directory (its own ``config_directory``,
``queue_directory`` and ``data_directory``) on the normal disk, so Postfix
keeps its usual durability: cleanup fsyncs every queue file before smtpd says
250. It listens on a free loopback port instead of 25 (set in master.cf, so
it never touches a system Postfix), delivers nothing locally and relays
everything to ``[127.0.0.1]:SINKPORT``.

The instance is always stopped: ``with PostfixInstance(...)`` stops it on
errors and Ctrl-C, and a master that ignores ``postfix stop`` is killed by the
pid it wrote.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

START_WAIT_S = 20.0
STOP_WAIT_S = 20.0


def postfix_binary() -> str:
    found = shutil.which("postfix") or ("/usr/sbin/postfix"
                                        if os.path.exists("/usr/sbin/postfix") else None)
    if found is None:
        raise RuntimeError("postfix is not installed: `apt-get install postfix`")
    return found


MAIN_CF = """\
# Written by bench/_postfix.py for one benchmark run.
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
maillog_file_prefixes = {root}
maillog_file = {root}/maillog

myhostname = relay.bench.localdomain
mydomain = bench.localdomain
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions =

# Nothing is delivered here: every address relays to the sink.
mydestination =
local_recipient_maps =
local_transport = error:local delivery is disabled in the benchmark
alias_maps =
alias_database =
relay_domains =
relayhost = [127.0.0.1]:{sink_port}
smtp_dns_support_level = disabled
smtp_host_lookup = native

smtp_tls_security_level = none
smtpd_tls_security_level = none
smtputf8_enable = no
biff = no
append_dot_mydomain = no
# The feeder sends many messages per session from one address.
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
default_process_limit = {process_limit}
"""

# chroot off (column 5 = n): the private queue directory has no chroot
# skeleton (etc/, lib/) and building one would only add noise.
MASTER_CF = """\
# Written by bench/_postfix.py: no port 25, no local delivery.
127.0.0.1:{port} inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n -  0 cleanup
qmgr       unix  n - n 300 1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n - - trivial-rewrite
bounce     unix  - - n - 0 bounce
defer      unix  - - n - 0 bounce
trace      unix  - - n - 0 bounce
verify     unix  - - n - 1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n - - proxymap
proxywrite unix  - - n - 1 proxymap
smtp       unix  - - n - - smtp
relay      unix  - - n - - smtp
showq      unix  n - n - - showq
error      unix  - - n - - error
retry      unix  - - n - - error
discard    unix  - - n - - discard
anvil      unix  - - n - 1 anvil
scache     unix  - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostfixInstance:
    """``start`` / ``stop`` a Postfix master under ``root`` (a temp dir by default)."""

    def __init__(self, sink_port: int, *, port: int | None = None,
                 process_limit: int = 100, root: Path | None = None) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("a private Postfix instance needs root (its daemons drop to "
                               "the postfix user)")
        self.sink_port = sink_port
        self.port = port or free_port()
        self.process_limit = process_limit
        self._own_root = root is None
        self.root = root or Path(tempfile.mkdtemp(prefix="bench-postfix-",
                                                  dir=os.environ.get("BENCH_POSTFIX_DIR")))
        self.config = self.root / "etc"
        self.queue = self.root / "spool"
        self.data = self.root / "data"
        self._started = False

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([postfix_binary(), "-c", str(self.config), *args],
                              capture_output=True, text=True, check=check, timeout=60)

    def write_config(self) -> None:
        # mkdtemp makes 0700 dirs; Postfix's daemons run as the postfix user.
        self.root.chmod(0o755)
        self.config.mkdir(parents=True, exist_ok=True)
        self.queue.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)
        # Postfix insists on owning its data directory and on a root-owned queue top.
        shutil.chown(self.data, "postfix", "postfix")
        (self.config / "main.cf").write_text(MAIN_CF.format(
            queue=self.queue, data=self.data, root=self.root, sink_port=self.sink_port,
            process_limit=self.process_limit))
        (self.config / "master.cf").write_text(MASTER_CF.format(port=self.port))

    def start(self) -> PostfixInstance:
        self.write_config()
        # create-missing builds the queue tree with the owners and modes Postfix checks.
        self._postfix("set-permissions", "create-missing", check=False)
        done = self._postfix("start", check=False)
        self._started = True
        if done.returncode != 0:
            self.stop()
            raise RuntimeError(f"postfix start failed: {(done.stderr or done.stdout).strip()}\n"
                               f"{self.log_tail()}")
        deadline = time.monotonic() + START_WAIT_S
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"postfix did not listen on 127.0.0.1:{self.port}\n{self.log_tail()}")

    def master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _alive(self, pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # A zombie still answers kill(0); postfix daemonises, so it is never our child.
        with contextlib.suppress(OSError):
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
            return state != "Z"
        return True

    def stop(self) -> None:
        if not self._started:
            self._cleanup()
            return
        self._started = False
        pid = self.master_pid()
        with contextlib.suppress(Exception):
            self._postfix("stop", check=False)
        deadline = time.monotonic() + STOP_WAIT_S
        while pid is not None and self._alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid is not None and self._alive(pid):
            # `postfix abort` first: it also takes the children down with the master.
            with contextlib.suppress(Exception):
                self._postfix("abort", check=False)
            time.sleep(1.0)
            if self._alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._own_root and not os.environ.get("BENCH_KEEP_POSTFIX"):
            shutil.rmtree(self.root, ignore_errors=True)

    def queue_count(self, settle_s: float = 2.0) -> int:
        """Messages still in Postfix's queues (incoming, active, deferred).

        qmgr removes a queue file shortly after the smtp client reports the
        delivery, so a few seconds of grace avoid counting finished mail.
        """
        deadline = time.monotonic() + settle_s
        while (count := self._queued()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return count

    def _queued(self) -> int:
        total = 0
        for name in ("incoming", "active", "deferred", "hold", "maildrop"):
            for _dirpath, _dirs, files in os.walk(self.queue / name):
                total += len(files)
        return total

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = (self.root / "maillog").read_text(errors="replace").splitlines()
        except OSError:
            return "(no maillog)"
        return "\n".join(text[-lines:])

    def __enter__(self) -> PostfixInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
