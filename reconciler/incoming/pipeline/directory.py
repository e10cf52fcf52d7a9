"""Who the desk knows: the pipeline asks a :class:`SenderDirectory` about senders.

The pipeline depends only on that small protocol. The users come from the
namespace's SenderDirectory resources (the config repo, applied to the store:
:func:`directory_for`) and from the daemon's ``--sender-directory`` file, which
:class:`MappingSenderDirectory` reads from a mapping or a YAML/JSON file of this
shape (compared case-insensitively)::

    users:
      - email: jane@acme.example
        name: Jane Doe          # optional
        commands: true          # may send email commands (default false)
      - email: old@acme.example
        status: archived        # active (default) | archived | deleted
    domains:                    # optional: every address of these domains is a
      - acme.example            # known, active user without command rights
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from reconciler.config.models.base import Resource
from reconciler.config.models.sender_directory import SenderDirectory as DirectoryResource
from reconciler.config.models.sender_directory import UserStatus


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    email: str
    name: str | None = None
    status: UserStatus = UserStatus.ACTIVE
    commands: bool = False  # authorised to send email commands


class SenderDirectory(Protocol):
    def lookup(self, address: str) -> DirectoryEntry | None:
        """The user with this address, or None for a guest (unknown sender)."""
        ...


class DirectoryError(ValueError):
    """The directory file is unreadable or malformed; the message says how to fix it."""


class MappingSenderDirectory:
    """A directory held in memory: address -> entry, plus whole known domains."""

    def __init__(self, entries: Iterable[DirectoryEntry] = (),
                 domains: Iterable[str] = ()) -> None:
        self._entries = {e.email.strip().casefold(): e for e in entries}
        self._domains = frozenset(d.strip().casefold().rstrip(".") for d in domains)

    def lookup(self, address: str) -> DirectoryEntry | None:
        key = address.strip().casefold()
        if key in self._entries:
            return self._entries[key]
        domain = key.rpartition("@")[2]
        return DirectoryEntry(email=address) if domain and domain in self._domains else None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "directory"
                     ) -> MappingSenderDirectory:
        users = data.get("users", [])
        domains = data.get("domains", [])
        if not isinstance(users, list) or not isinstance(domains, list):
            raise DirectoryError(
                f"{source}: `users` and `domains` must be lists; see the example at the top "
                "of reconciler/incoming/pipeline/directory.py")
        entries = []
        for index, item in enumerate(users):
            if not isinstance(item, Mapping) or not isinstance(item.get("email"), str):
                raise DirectoryError(
                    f"{source}: users[{index}] needs an `email` (a string); write each user "
                    "as {email: jane@example.com, commands: true}")
            status = item.get("status", "active")
            if status not in UserStatus.__members__.values():
                raise DirectoryError(
                    f"{source}: users[{index}] has status {status!r}; use one of "
                    + ", ".join(s.value for s in UserStatus))
            entries.append(DirectoryEntry(
                email=item["email"], name=item.get("name"), status=UserStatus(status),
                commands=item.get("commands") is True))
        if not all(isinstance(d, str) for d in domains):
            raise DirectoryError(f"{source}: `domains` must be a list of domain names")
        return cls(entries, domains)

    @classmethod
    def from_file(cls, path: str | Path) -> MappingSenderDirectory:
        """Load a ``.json``, ``.yaml`` or ``.yml`` file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise DirectoryError(
                f"cannot read the sender directory {path}: {exc.strerror or exc}; "
                "check the path and its permissions") from None
        syntax = "JSON" if path.suffix.lower() == ".json" else "YAML"
        try:
            if syntax == "JSON":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
            raise DirectoryError(f"{path} is not valid {syntax}: {exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise DirectoryError(
                f"{path}: expected a mapping with `users` (and optionally `domains`)")
        return cls.from_mapping(data, source=str(path))


class _Chained:
    """Several directories asked in order; the first that knows the address answers."""

    def __init__(self, *directories: SenderDirectory) -> None:
        self._directories = directories

    def lookup(self, address: str) -> DirectoryEntry | None:
        return next((e for d in self._directories if (e := d.lookup(address)) is not None), None)


def directory_for(resources: Iterable[Resource],
                  file: SenderDirectory | None) -> SenderDirectory | None:
    """The namespace's SenderDirectory resources (all together), then the daemon's file;
    None when there is neither."""
    found = [r.spec for r in resources if isinstance(r, DirectoryResource)]
    if not found:
        return file
    applied = MappingSenderDirectory(
        (DirectoryEntry(u.email, u.name, u.status, u.commands) for s in found for u in s.users),
        (d for s in found for d in s.domains))
    return applied if file is None else _Chained(applied, file)
