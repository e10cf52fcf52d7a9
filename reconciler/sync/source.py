"""The git source the syncer follows (SPEC X5): fetch a branch, check out a commit.

Everything goes through the ``git`` command line: fetching, credentials, SSH and
proxies behave as operators know them from git itself. Credentials never reach
argv, the URL or a log line: an HTTPS token travels as an ``http.extraHeader``
set through git's ``GIT_CONFIG_*`` environment, an SSH key as ``GIT_SSH_COMMAND``
naming a 0600 file, and git's own messages are scrubbed of the token anyway.
SSH host keys are checked, never accepted blindly: they are pinned in the
daemon user's ``~/.ssh/known_hosts`` or in ``known_hosts`` in the cache folder.
"""

from __future__ import annotations

import base64
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit, urlunsplit

from reconciler.config.secrets import SecretError, resolve_operator

GIT_TIMEOUT_S = 300.0  # a first fetch of a large repository over a slow link
# What git prints when the server refused the credential (it then asks for a username
# it may not prompt for).
AUTH_REFUSED = ("Authentication failed", "could not read Username", " 401", " 403")


class GitError(Exception):
    """Fetching or reading the repository failed; the message says why, without secrets."""


@dataclass(frozen=True, slots=True)
class Commit:
    sha: str
    author: str  # "Name <email>"
    message: str
    tree: Path  # the checked-out config folder of this commit


@dataclass(frozen=True)
class GitSource:
    """``url``: a URL git understands or a local path. ``path``: the config folder inside
    the repository. ``token_ref`` / ``ssh_key_ref``: operator secret references."""

    url: str
    cache_dir: Path
    branch: str = "main"
    path: str = "."
    token_ref: str | None = None
    ssh_key_ref: str | None = None
    _secrets: set[str] = field(default_factory=set, repr=False, compare=False)

    def __post_init__(self) -> None:
        if urlsplit(self.url).password:
            raise GitError(f"the sync repository URL {self.shown} carries a password: give "
                           "the token as a secret reference (--sync-token-ref) instead")
        folder = PurePosixPath(self.path)
        if folder.is_absolute() or ".." in folder.parts:
            raise GitError(f"--sync-path {self.path!r} must be a folder inside the repository")

    @property
    def shown(self) -> str:
        """The URL as logs and `sync status` show it: no user information."""
        parts = urlsplit(self.url)
        if not parts.netloc or "@" not in parts.netloc:
            return self.url
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))

    @property
    def _bare(self) -> Path:
        return self.cache_dir / "repo.git"

    def fetch(self) -> str:
        """Fetch the branch into the cache; the sha it points at."""
        if not (self._bare / "HEAD").exists():
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            self._git("init", "--bare", "--quiet", str(self._bare), bare=False)
        ref = f"refs/sync/{self.branch}"
        self._git("fetch", "--quiet", "--no-tags", "--force", "--", self.url,
                  f"+refs/heads/{self.branch}:{ref}", remote=True)
        return self._git("rev-parse", "--verify", f"{ref}^{{commit}}").strip()

    def checkout(self, sha: str) -> Commit:
        """The commit's config folder in the cache's one work tree, made exactly the commit's.

        ``read-tree --reset -u`` with an index of our own rewrites only the files that
        differ from the last checkout and removes the ones the commit no longer has, so a
        one-file commit costs one file, not the repository. Symlinks are checked out as
        plain files holding the link text: a pushed link cannot make validation read a
        file of the daemon's host.
        """
        info = self._git("show", "-s", "--format=%H%x00%an <%ae>%x00%B", sha)
        full, author, message = info.split("\x00", 2)
        tree = self.cache_dir / "tree"
        tree.mkdir(parents=True, exist_ok=True)
        self._git("-c", "core.symlinks=false", "--work-tree", str(tree), "read-tree",
                  "--reset", "-u", full)
        folder = tree / self.path
        if not folder.is_dir():
            raise GitError(f"commit {full[:12]} of {self.shown} has no folder {self.path!r} "
                           "(--sync-path)")
        return Commit(full, author, message.strip(), folder)

    # -- running git -----------------------------------------------------------

    def _env(self, remote: bool) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1", LC_ALL="C",
                   GIT_INDEX_FILE=str(self.cache_dir / "index"))
        if not remote:
            return env
        try:
            if self.token_ref:
                token = resolve_operator(self.token_ref)
                self._secrets.add(token)
                basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
                self._secrets.add(basic)
                env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraHeader",
                           GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}")
            if self.ssh_key_ref:
                # host keys: the daemon user's known_hosts, or one in the cache folder
                known = f"UserKnownHostsFile=~/.ssh/known_hosts {self.cache_dir / 'known_hosts'}"
                env["GIT_SSH_COMMAND"] = (f"ssh -i {shlex.quote(str(self._key_file()))} "
                                          f"-o {shlex.quote(known)} -o IdentitiesOnly=yes "
                                          "-o BatchMode=yes")
        except SecretError as exc:
            raise GitError(f"cannot read the sync repository credential: {exc}") from None
        return env

    def _key_file(self) -> Path:
        key = resolve_operator(self.ssh_key_ref or "")
        self._secrets.add(key)
        path = self.cache_dir / "ssh-key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key.strip() + "\n")
        return path

    def _git(self, *args: str, remote: bool = False, bare: bool = True) -> str:
        return self._git_bytes(*args, remote=remote, bare=bare).decode("utf-8", "replace")

    def _git_bytes(self, *args: str, remote: bool = False, bare: bool = True) -> bytes:
        cmd = ["git", *(["--git-dir", str(self._bare)] if bare else []), *args]
        try:
            done = subprocess.run(cmd, env=self._env(remote), capture_output=True,
                                  timeout=GIT_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise GitError(f"git {args[0]} of {self.shown} failed: {exc}") from None
        if done.returncode:
            raise GitError(self._explain(args[0], done.stderr.decode("utf-8", "replace")))
        return done.stdout

    def _explain(self, verb: str, stderr: str) -> str:
        for secret in self._secrets:
            stderr = stderr.replace(secret, "***")
        stderr = stderr.replace(self.url, self.shown).strip()
        lines = [line for line in stderr.splitlines() if line.strip()]
        detail = " ".join(line.removeprefix("fatal: ") for line in lines[-3:])
        hint = ""
        if "Permission denied (publickey" in stderr:
            hint = (" The SSH server refused the key: check that the key --sync-ssh-key-ref "
                    "names is allowed to read the repository (e.g. a deploy key).")
        elif "Host key verification failed" in stderr:
            hint = (" The server's SSH host key is not pinned: add it to the daemon user's "
                    f"~/.ssh/known_hosts or to {self.cache_dir / 'known_hosts'}.")
        elif any(sign in stderr for sign in AUTH_REFUSED):
            hint = (" The repository refused the credential: check the token that "
                    "--sync-token-ref names (read access to the repository).")
        elif "couldn't find remote ref" in stderr:
            hint = f" Check --sync-branch {self.branch!r}."
        return f"git {verb} of {self.shown} (branch {self.branch}) failed: {detail}.{hint}"
