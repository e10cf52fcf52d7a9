"""config.loader: files -> documents with source positions (SPEC C1, C4)."""

from __future__ import annotations

from pathlib import Path

from reconciler.config.diagnostics import Diagnostics
from reconciler.config.loader import (
    PosDict,
    PosList,
    iter_config_files,
    load_text,
    load_tree,
    locate,
)

from .helpers import EXAMPLES

TEXT = """\
apiVersion: reconciler.dev/v1
kind: OutgoingServer
metadata:
  name: gmail
spec:
  email: a@b.example
  port: 587
  conditions:
    - {field: subject, value: x}
    - field: from
      value: y
---
# a comment-only document is skipped, the next one keeps its index
---
kind: RecipientFilter
"""


def _load(text: str) -> tuple[list, Diagnostics]:  # type: ignore[type-arg]
    diags = Diagnostics()
    return load_text(text, "f.yaml", diags), diags


def test_documents_keep_file_index_and_positions() -> None:
    docs, diags = _load(TEXT)
    assert not diags
    assert [(d.file, d.index) for d in docs] == [("f.yaml", 0), ("f.yaml", 2)]
    data = docs[0].data
    assert isinstance(data, PosDict)
    assert docs[0].mark == (1, 1)
    assert docs[1].mark == (15, 1)
    assert data.key_marks["spec"] == (5, 1)
    spec = data["spec"]
    assert spec.value_marks["port"] == (7, 9)
    assert isinstance(spec["conditions"], PosList)
    assert spec["conditions"].item_marks == [(9, 7), (10, 7)]


def test_locate_walks_as_deep_as_the_path_exists() -> None:
    data = _load(TEXT)[0][0].data
    assert locate(data, ("spec", "port")) == (7, 9)
    assert locate(data, ("spec", "port"), key=True) == (7, 3)
    assert locate(data, ("spec", "conditions", 1, "value")) == (11, 14)
    # a missing tail resolves to the innermost existing node
    assert locate(data, ("spec", "conditions", 1, "operator")) == (10, 7)
    assert locate(data, ("spec", "conditions", 7)) == (9, 5)
    assert locate(data, ("nope",)) == (1, 1)
    assert locate("scalar", ("spec",)) == (0, 0)


def test_yaml_12_booleans_only_true_and_false() -> None:
    docs, _ = _load("a: yes\nb: NO\nc: off\nd: true\ne: False\nf: on\n")
    assert docs[0].data == {"a": "yes", "b": "NO", "c": "off", "d": True, "e": False, "f": "on"}


def test_duplicate_keys_reported_at_the_second_occurrence() -> None:
    docs, diags = _load("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n")
    assert docs[0].data["a"] == 3
    found = sorted((d.line, d.col, d.message) for d in diags)
    assert found == [
        (4, 3, "duplicate key 'c' (first defined at line 3)"),
        (5, 1, "duplicate key 'a' (first defined at line 1)"),
    ]
    assert {d.code for d in diags} == {"duplicate-key"}


def test_documents_before_a_syntax_error_are_kept() -> None:
    docs, diags = _load("a: 1\n---\nb: 2\n---\nc: [\n")
    assert [d.data for d in docs] == [{"a": 1}, {"b": 2}]
    assert [(d.code, d.line) for d in diags] == [("yaml-syntax", 6)]


def test_unsafe_tags_are_syntax_errors_not_code() -> None:
    docs, diags = _load("spec: !!python/object/apply:os.system [echo hi]\n")
    assert docs == []
    [d] = list(diags)
    assert d.code == "yaml-syntax"
    assert "could not determine a constructor" in d.message


def test_merge_keys_may_be_overridden_without_a_duplicate_error() -> None:
    docs, diags = _load("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n")
    assert not diags
    assert docs[0].data["other"] == {"x": 1, "y": 3}


def test_written_twice_after_a_merge_is_still_a_duplicate() -> None:
    _, diags = _load("base: &b {x: 1}\nother:\n  <<: *b\n  y: 3\n  y: 4\n")
    assert [(d.line, d.col, d.message) for d in diags] == [
        (5, 3, "duplicate key 'y' (first defined at line 4)")]


def test_tree_walk_order_suffixes_and_hidden_folders(tmp_path: Path) -> None:
    for name in ("b/z.yml", "a.yaml", "b/a.yaml", ".git/x.yaml", "b/.hidden/y.yaml",
                 "notes.txt", "c/d/e.yaml"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("kind: X\n", encoding="utf-8")
    files = [p.relative_to(tmp_path).as_posix() for p in iter_config_files(tmp_path)]
    assert files == ["a.yaml", "b/a.yaml", "b/z.yml", "c/d/e.yaml"]
    diags = Diagnostics()
    docs = load_tree(tmp_path, diags)
    assert [d.file for d in docs] == files
    assert not diags


def test_single_file_root_is_named_by_its_file_name(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "one.yaml"
    path.parent.mkdir()
    path.write_text("kind: X\n", encoding="utf-8")
    docs = load_tree(path, Diagnostics())
    assert [d.file for d in docs] == ["one.yaml"]


def test_unreadable_file_is_a_diagnostic(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    (tmp_path / "ok.yaml").write_text("kind: X\n", encoding="utf-8")
    diags = Diagnostics()
    docs = load_tree(tmp_path, diags)
    assert [d.file for d in docs] == ["ok.yaml"]
    [d] = list(diags)
    assert (d.code, d.file) == ("file-unreadable", "latin1.yaml")
    assert d.hint == "config files must be readable UTF-8 text"


def _dump(value: object) -> object:
    """A document as plain data with every container's packed marks, for comparing readers."""
    if isinstance(value, PosDict | PosList):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return type(value).__name__, bytes(value.marks), [(k, _dump(v)) for k, v in items]
    return value


def test_event_and_node_readers_build_the_same_documents() -> None:
    # read_events is the fast path, read_nodes the fallback for anchors, duplicate keys
    # and wide marks: a file must load the same whichever of them reads it
    from reconciler.config.loader import _PositionalLoader

    texts = [TEXT, *(p.read_text() for p in iter_config_files(EXAMPLES))]
    for text in texts:
        built = []
        for read in ("read_events", "read_nodes"):
            loader, documents = _PositionalLoader(text), []
            getattr(loader, read)("f.yaml", documents)
            loader.dispose()
            built.append([(d.index, d.mark, _dump(d.data)) for d in documents])
        assert built[0] == built[1]


def test_a_key_reads_the_same_after_its_text_was_seen_quoted_or_plain() -> None:
    # keys read as strings are remembered by their text: a quoted '12' or 'true' must not
    # make a later plain 12 or true a string, nor a plain string key change its type
    for text in ("a: {'12': x, 'true': y, name: z}", "a: {12: x, true: y, 'name': z}",
                 "a: {12: x, true: y, name: z}"):
        [doc], diags = _load(text)
        assert not list(diags)
        plain = text.startswith("a: {12")
        assert list(doc.data["a"]) == ([12, True, "name"] if plain else ["12", "true", "name"])


def test_a_value_reads_the_same_after_its_text_was_seen_quoted(tmp_path: Path) -> None:
    # repeated string values are shared by their text across the files of a load: a
    # quoted '12' must not make a later plain 12 (in this file or the next) a string
    text = "a: '12'\nb: 12\nc: ['true', true, '~', ~, 'x', x]\n"
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(text)
    diags = Diagnostics()
    docs = load_tree(tmp_path, diags, workers=1)
    assert not list(diags)
    for doc in docs:
        assert dict(doc.data) == {"a": "12", "b": 12, "c": ["true", True, "~", None, "x", "x"]}
