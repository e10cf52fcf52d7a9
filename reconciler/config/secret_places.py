"""Where `file:` and `env:` secret references in the config may point (SPEC S2).

The config repository is written through pull requests, so a reference in it
must not be able to pick up any file or variable the daemon can read
(``file:/etc/shadow``, ``env:RECONCILE_TOKEN_KEY``) and hand it to a mail
server. The allowed places are operator settings, read from the environment
of the process that validates or resolves, never from the config itself:

- ``RECONCILE_SECRET_DIRS``: directories (``os.pathsep``-separated) below
  which ``file:`` references resolve. Default: ``/run/secrets``,
  ``/etc/reconciler/secrets`` and systemd's ``$CREDENTIALS_DIRECTORY``.
- ``RECONCILE_SECRET_ENV``: comma-separated glob patterns of the variable
  names ``env:`` references may name. Default: ``*``.

Whatever the pattern says, ``env:`` never names reconciler's own settings
(``RECONCILE_*``, the store's ``PGPASSWORD``), and neither form names a
variable or file that holds one of this process's operator secrets (API
tokens, token cache key, webhook secrets), which the daemon registers with
:func:`reserve` when it starts.

Paths are canonicalised (``..`` and symlinks resolved) before the
containment check, and the canonical path is what gets opened, so neither
``file:/run/secrets/../../etc/shadow`` nor a symlink out of the directory
reads anything.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

DIRS_ENV = "RECONCILE_SECRET_DIRS"
ENV_PATTERN_ENV = "RECONCILE_SECRET_ENV"
DEFAULT_DIRS = ("/run/secrets", "/etc/reconciler/secrets")
CREDENTIALS_DIR_ENV = "CREDENTIALS_DIRECTORY"  # systemd LoadCredential=
DEFAULT_ENV_PATTERN = "*"
OWN_PREFIX = "RECONCILE_"
# Not RECONCILE_* but still ours: libpq reads the store's password from it.
OWN_NAMES = frozenset({"PGPASSWORD"})

# Secrets the operator gave this process (references of API tokens, the token
# key, webhook secrets): filled by reserve(), never resolvable from the config.
_reserved_env: set[str] = set()
_reserved_files: set[str] = set()


class PlaceRefused(Exception):
    """A reference points outside the allowed places. ``message`` says what is wrong,
    ``hint`` how to fix it; neither holds a value (nothing was read)."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(f"{message}; {hint}")
        self.message = message
        self.hint = hint


class PlacesSettingError(ValueError):
    """RECONCILE_SECRET_DIRS or RECONCILE_SECRET_ENV cannot be used as given."""


def _places_of(refs: Iterable[str | None]) -> tuple[set[str], set[str]]:
    """(variable names, canonical file paths) of the ``env:``/``file:`` references among
    ``refs``; anything else (URLs, ``enc:v1:``, None) names no place."""
    names: set[str] = set()
    files: set[str] = set()
    for ref in refs:
        if ref and ref.startswith("env:"):
            names.add(ref[4:])
        elif ref and ref.startswith("file:"):
            files.add(os.path.realpath(ref[5:]))
    return names, files


def _operator_refs(env: Mapping[str, str]) -> list[str | None]:
    """Operator secrets the environment itself points at: the file holding the key of
    enc:v1: values and the token cache key's reference."""
    key_file = env.get("RECONCILE_SECRET_KEY_FILE")
    return [f"file:{key_file}" if key_file else None, env.get("RECONCILE_TOKEN_KEY_REF")]


def reserve(*refs: str | None) -> None:
    """Mark the places of operator secret references (``env:``/``file:``; other values
    are ignored) so that no config reference resolves them in this process."""
    names, files = _places_of(refs)
    _reserved_env.update(names)
    _reserved_files.update(files)


@dataclass(frozen=True)
class SecretPlaces:
    dirs: tuple[str, ...]  # canonical
    env_patterns: tuple[str, ...]
    configured_dirs: bool  # from RECONCILE_SECRET_DIRS rather than the default
    reserved_env: frozenset[str] = frozenset()
    reserved_files: frozenset[str] = frozenset()

    def env_name(self, name: str) -> str:
        """``name`` if an ``env:`` reference may read it, else PlaceRefused."""
        if name.startswith(OWN_PREFIX) or name in OWN_NAMES:
            raise PlaceRefused(
                f"env:{name} is one of reconciler's own settings ({OWN_PREFIX}* and "
                "PGPASSWORD hold its keys, store and API tokens), which never go to a mail "
                "server",
                "put the mail server's secret in a variable of its own, e.g. "
                "env:ACME_SMTP_PASSWORD")
        if name in self.reserved_env:
            raise PlaceRefused(
                f"env:{name} holds one of this daemon's own secrets (an API token, the token "
                "key or a webhook secret), which are never sent to a mail server",
                "put the mail server's secret in a variable of its own")
        if not any(fnmatch.fnmatchcase(name, p) for p in self.env_patterns):
            raise PlaceRefused(
                f"env:{name} does not match {ENV_PATTERN_ENV} "
                f"({','.join(self.env_patterns)})",
                f"rename the variable to match, or set {ENV_PATTERN_ENV} (comma-separated "
                "glob patterns) to include it")
        return name

    def file_path(self, path: str) -> str:
        """The canonical path a ``file:`` reference may read, else PlaceRefused.
        Only the path is examined (symlinks followed); the file is not opened."""
        real = os.path.realpath(path)
        shown = path if real == path else f"{path} (which resolves to {real})"
        if real in self.reserved_files:
            raise PlaceRefused(
                f"file:{shown} holds one of reconciler's own keys or this daemon's "
                "secrets, which are never sent to a mail server",
                "put the mail server's secret in a file of its own")
        if not any(real.startswith(d.rstrip(os.sep) + os.sep) for d in self.dirs):
            where = ", ".join(self.dirs)
            setting = (f"set {DIRS_ENV}" if not self.configured_dirs
                       else f"add its directory to {DIRS_ENV}")
            raise PlaceRefused(
                f"file:{shown} is outside the secret directories ({where})",
                f"move the file below one of them, or {setting} (directories separated by "
                f"{os.pathsep!r}) where the daemon and validate run")
        return real

    def check(self, ref: str) -> None:
        """Raise PlaceRefused if ``ref`` (any scheme) points outside the allowed places."""
        if ref.startswith("env:"):
            self.env_name(ref[4:])
        elif ref.startswith("file:"):
            self.file_path(ref[5:])


def current() -> SecretPlaces:
    """The allowed places as this process's environment configures them."""
    env = os.environ
    raw_dirs = env.get(DIRS_ENV, "").strip()
    if raw_dirs:
        entries = [d.strip() for d in raw_dirs.split(os.pathsep) if d.strip()]
        relative = [d for d in entries if not os.path.isabs(d)]
        if relative:
            raise PlacesSettingError(
                f"{DIRS_ENV} entry {relative[0]!r} is not an absolute path; give the "
                f"secret directories as absolute paths separated by {os.pathsep!r}")
    else:
        entries = list(DEFAULT_DIRS)
        if env.get(CREDENTIALS_DIR_ENV):
            entries.append(env[CREDENTIALS_DIR_ENV])
    raw_env = env.get(ENV_PATTERN_ENV, "").strip()
    patterns = tuple(p.strip() for p in raw_env.split(",") if p.strip()) or (DEFAULT_ENV_PATTERN,)
    reserved_env, reserved_files = _places_of(_operator_refs(env))
    return SecretPlaces(dirs=tuple(dict.fromkeys(os.path.realpath(d) for d in entries)),
                        env_patterns=patterns, configured_dirs=bool(raw_dirs),
                        reserved_env=frozenset(reserved_env | _reserved_env),
                        reserved_files=frozenset(reserved_files | _reserved_files))
