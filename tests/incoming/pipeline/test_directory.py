from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.incoming.pipeline.directory import (
    DirectoryError,
    MappingSenderDirectory,
    UserStatus,
)


def test_yaml_file_users_and_domains(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("users:\n  - {email: Jane@Acme.example, commands: true}\n"
                    "  - {email: old@acme.example, status: deleted}\ndomains: [Partner.example]\n")
    d = MappingSenderDirectory.from_file(path)
    jane = d.lookup("jane@acme.EXAMPLE")
    assert jane is not None and jane.commands and jane.status == UserStatus.ACTIVE
    old = d.lookup("old@acme.example")
    assert old is not None and old.status == UserStatus.DELETED
    partner = d.lookup("x@partner.example")
    assert partner is not None and not partner.commands
    assert d.lookup("x@other.example") is None


def test_json_file(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    path.write_text('{"users": [{"email": "a@b.example"}]}')
    assert MappingSenderDirectory.from_file(path).lookup("a@b.example") is not None


@pytest.mark.parametrize(("text", "words"), [
    ("users: {a: 1}\n", "must be lists"),
    ("users: [{name: x}]\n", "users[0] needs an `email`"),
    ("users: [{email: a@b.example, status: gone}]\n", "status 'gone'"),
    ("- just a list\n", "expected a mapping"),
    ("users: [\n", "not valid YAML"),
])
def test_bad_files_say_what_is_wrong(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(text)
    with pytest.raises(DirectoryError, match=words.replace("[", r"\[").replace("]", r"\]")):
        MappingSenderDirectory.from_file(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DirectoryError, match="cannot read the sender directory"):
        MappingSenderDirectory.from_file(tmp_path / "nope.yaml")
