"""A real OpenSSH server on loopback for the sync tests: its own config, host key and
authorized key in a temporary folder, run in the foreground as a child of the test.

Clients log in as the user running the tests and run plain git over ssh
(``git-upload-pack``) on the repositories of the file system.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
# sshd run as root wants its privilege-separation folder; a container without systemd
# never made it (the openssh-server package's tmpfiles.d does at boot).
PRIVSEP = Path("/run/sshd")
START_TIMEOUT_S = 30.0


def keygen(path: Path, comment: str) -> str:
    """A fresh ed25519 key pair without passphrase; the public key line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f",
                    str(path)], check=True, capture_output=True)
    return path.with_suffix(".pub").read_text().strip()


class Sshd:
    """``client_key``: the private key file that may log in; ``known_hosts``: the line that
    pins this server's host key; ``url(path)``: an ssh:// URL of a repository."""

    def __init__(self, folder: Path) -> None:
        assert Path(SSHD).exists(), "sshd is missing: apt-get install -y openssh-server"
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        host = keygen(folder / "host_key", "sync-test-host")
        self.client_key = folder / "client_key"
        (folder / "authorized_keys").write_text(keygen(self.client_key, "sync-test") + "\n")
        self.port = _free_port()
        self.user = getpass.getuser()
        self.known_hosts = f"[127.0.0.1]:{self.port} {' '.join(host.split()[:2])}\n"
        (folder / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
            f"PidFile {folder / 'sshd.pid'}\nAuthorizedKeysFile {folder / 'authorized_keys'}\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "PermitRootLogin prohibit-password\nLogLevel VERBOSE\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = (folder / "sshd.log").open("wb")

    def start(self) -> Sshd:
        if os.geteuid() == 0:
            PRIVSEP.mkdir(mode=0o755, exist_ok=True)
        # -D: stay in the foreground as our child; -e: log to stderr (our file)
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.folder / "sshd_config")],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sshd did not start:\n{self.logged()}")
            time.sleep(0.05)
        return self

    def _listening(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def url(self, path: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{path}"

    def logged(self) -> str:
        return (self.folder / "sshd.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
