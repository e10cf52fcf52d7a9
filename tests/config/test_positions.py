"""Packed positions (config.positions) point exactly where the tuples they replaced did,
also where a key and its value do not fit one word: far apart, or past column 65,535."""

from __future__ import annotations

from pathlib import Path

from reconciler.config.diagnostics import Diagnostics
from reconciler.config.loader import load_text
from reconciler.config.positions import PosDict, pack

from .helpers import Expect, assert_reported, validate_files

HEAD = "apiVersion: reconciler.dev/v1\nkind: ProxyServer\nmetadata: {name: p}\n"


def test_value_many_lines_below_its_key(tmp_path: Path) -> None:
    text = HEAD + "spec:\n  host: proxy.example\n  port:\n" + "    # note\n" * 20 + "    99999\n"
    result = validate_files(tmp_path, {"f.yaml": text})
    assert_reported(result, [Expect("f.yaml", 27, 5, "spec.port",
                                    "99999 is above the maximum 65535")])


def test_key_and_value_past_column_65535(tmp_path: Path) -> None:
    padding = "x" * 70_000
    text = HEAD + f'spec: {{username: "{padding}", host: proxy.example, port: 99999}}\n'
    col = text.splitlines()[3].index("99999") + 1
    assert col > 65_535
    result = validate_files(tmp_path, {"f.yaml": text})
    assert_reported(result, [Expect("f.yaml", 4, col, "spec.port",
                                    "99999 is above the maximum 65535")])


def test_marks_survive_a_wide_entry_among_narrow_ones() -> None:
    text = "a: 1\nb:\n" + "\n" * 30 + "  2\nc: 3\n"
    [doc] = load_text(text, "f.yaml", Diagnostics())
    assert doc.data.key_marks == {"a": (1, 1), "b": (2, 1), "c": (34, 1)}
    assert doc.data.value_marks == {"a": (1, 4), "b": (33, 3), "c": (34, 4)}


def test_duplicate_rename_and_removal_keep_the_other_marks_aligned() -> None:
    [doc] = load_text("a: 1\nb: 2\nc: 3\nb: 4\n", "f.yaml", diags := Diagnostics())
    data = doc.data
    assert [d.message for d in diags] == ["duplicate key 'b' (first defined at line 2)"]
    assert data.key_marks == {"a": (1, 1), "b": (4, 1), "c": (3, 1)}
    data.rename_key("a", "z")
    assert list(data) == ["b", "c", "z"]
    assert data.value_marks == {"b": (4, 4), "c": (3, 4), "z": (1, 4)}
    del data["b"]
    data["new"] = 5  # a filled-in value has no marks of its own
    assert data.key_mark("c") == (3, 1) and data.key_mark("new") is None
    assert data.pop("z") == 1 and data.value_marks == {"c": (3, 4)}


def test_a_mapping_built_by_hand_has_marks_only_for_entries_put_with_them() -> None:
    data = PosDict(pack(7, 3))
    data.put("x", 1, pack(8, 5), pack(8, 8))
    data["y"] = 2
    assert data.mark == (7, 3)
    assert data.key_marks == {"x": (8, 5)}
    assert data.value_mark("y") is None
