"""Fuzzing `reconcile validate` (issue 11 item 6): whatever the files hold, the
answer is exit 0 or 1 with diagnostics — never a traceback.

Each example takes one file of examples/config and mutates it — bytes, lines,
values of the parsed structure, or hostile YAML fragments (deep nesting,
aliases, tags, merge keys, BOMs, tabs, directives) — then validates the whole
example repo with that file replaced, in-process through the CLI. Examples are
derandomized and bounded so the run is the same every time and takes seconds.
"""

from __future__ import annotations

import shutil
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.cli.main import cli

from .helpers import EXAMPLES

FILES = {p.relative_to(EXAMPLES).as_posix(): p.read_bytes()
         for p in sorted(EXAMPLES.rglob("*.yaml"))}
NAMES = sorted(FILES)

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Bytes that mean something to YAML, to libyaml's reader, or to Python's decoders.
TOKENS = [
    b"{", b"}", b"[", b"]", b":", b": ", b",", b"- ", b"? ", b"&a ", b"*a", b"<<: ", b"!!",
    b"!!binary ", b"!!set ", b"!!omap ", b"!!timestamp ", b"!!int ", b"!!float ", b"!!bool ",
    b"!!python/object:os.system ", b"!local ", b"|", b">-", b"'", b'"', b"#", b"%YAML 1.1\n",
    b"%TAG ! tag:x,2000:\n", b"---\n", b"...\n", b"\t", b"\n", b"\r", b"\r\n", b"\x00",
    b"\x1b", b"\x85", b"\xff", b"\xc3", b"\xef\xbb\xbf", b"\xff\xfe", b"\\u0000", b"~", b"null",
    b"true", b".nan", b"-.inf", b"1e999", b"0x" + b"F" * 40, b"9" * 4400, b"0b" + b"1" * 15000,
    b"2001-02-30", b"2001-12-14t21:59:43.10-05:00", b"=", b"@", b"`", b"%",
]
# Values for the structure mutations: every YAML type, odd text, large numbers.
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63, max_value=2**200),
    st.floats(), st.text(max_size=30),
    st.sampled_from(["", " ", "NO", "off", "reconciler.dev/v1", "reconciler.dev/v1alpha1",
                     "OutgoingServer", "Policy", "env:X", "file:/etc/shadow", "a" * 300,
                     "\u202e", "caf\u00e9", "\ud7ff", "x\ny"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=10), st.integers(), st.booleans()),
                        inner, max_size=4),
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "config"
    shutil.copytree(EXAMPLES, root)
    return root


def assert_validates_without_crashing(repo: Path, name: str, data: bytes, fmt: str) -> None:
    """Validate ``repo`` with ``name`` replaced by ``data``; exit 0/1, no traceback."""
    path = repo / name
    path.write_bytes(data)
    try:
        result = CliRunner().invoke(cli, ["validate", str(repo), "--format", fmt])
    finally:
        path.write_bytes(FILES[name])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        crash = "".join(traceback.format_exception(result.exception))
        raise AssertionError(f"validate crashed on {name}:\n{data[:2000]!r}\n{crash}")
    assert result.exit_code in (0, 1), result.output
    assert "Traceback" not in result.output


FORMATS = st.sampled_from(["text", "json", "github"])


BYTE_EDITS = st.tuples(st.just("bytes"), st.floats(0, 1), st.integers(0, 12),
                       st.one_of(st.sampled_from(TOKENS), st.binary(max_size=6)))
LINE_EDITS = st.tuples(
    st.sampled_from(["delete", "duplicate", "move", "indent", "dedent", "tab", "foreign"]),
    st.floats(0, 1), st.floats(0, 1), st.integers(1, 6))
OTHER_LINES = [line for n in NAMES for line in FILES[n].split(b"\n")]


def _edit(data: bytes, edit: tuple[Any, ...]) -> bytes:
    op, a, b, arg = edit
    if op == "bytes":
        i = int(a * len(data))
        return data[:i] + arg + data[i + b:]
    lines = data.split(b"\n")
    i, j = int(a * (len(lines) - 1)), int(b * (len(lines) - 1))
    if op == "delete":
        del lines[i]
    elif op == "duplicate":
        lines.insert(j, lines[i])
    elif op == "move":
        lines.insert(j, lines.pop(i))
    elif op == "indent":
        lines[i] = b" " * arg + lines[i]
    elif op == "dedent":
        lines[i] = lines[i][arg:]
    elif op == "tab":
        lines[i] = b"\t" + lines[i]
    else:
        lines.insert(i, OTHER_LINES[int(b * (len(OTHER_LINES) - 1))])
    return b"\n".join(lines)


@FUZZ
@given(name=st.sampled_from(NAMES), fmt=FORMATS,
       edits=st.lists(st.one_of(BYTE_EDITS, LINE_EDITS), min_size=1, max_size=6))
def test_byte_and_line_mutations(repo: Path, name: str, fmt: str,
                                 edits: list[tuple[Any, ...]]) -> None:
    """Bytes spliced in or cut out, lines deleted, repeated, moved, re-indented, borrowed."""
    data = FILES[name]
    for edit in edits:
        data = _edit(data, edit)
    assert_validates_without_crashing(repo, name, data, fmt)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def _replace(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    node[path[0]] = _replace(node[path[0]], path[1:], value)
    return node


@FUZZ
@given(name=st.sampled_from(NAMES), fmt=FORMATS, data=st.data())
def test_structure_mutations(repo: Path, name: str, fmt: str, data: st.DataObject) -> None:
    """Any value of any YAML type at any place of a document (or in place of one)."""
    documents = list(yaml.safe_load_all(FILES[name]))  # a fresh copy to mutate
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(documents) - 1))
        paths = list(_paths(documents[index]))
        path = paths[data.draw(st.integers(0, len(paths) - 1))]
        documents[index] = _replace(documents[index], path, data.draw(VALUES))
    if data.draw(st.booleans()):
        documents.append(documents[data.draw(st.integers(0, len(documents) - 1))])
    text = yaml.safe_dump_all(documents, allow_unicode=data.draw(st.booleans()))
    assert_validates_without_crashing(repo, name, text.encode(), fmt)


def _nested(depth: int, block: bool) -> str:
    if block:
        return "\n" + "".join("  " * (i + 1) + "-\n" for i in range(depth)) + "  " * (
            depth + 1) + "- x"
    return "[" * depth + "x" + "]" * depth


def _laughs(levels: int, width: int) -> str:
    parts = ["{l0: &l0 [lol]"]
    parts += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]"
              for i in range(1, levels)]
    return ", ".join(parts) + f", all: *l{levels - 1}}}"


FRAGMENTS = st.one_of(
    st.builds(_nested, st.integers(1, 400), st.booleans()),
    st.builds(_laughs, st.integers(1, 10), st.integers(1, 12)),
    st.sampled_from([
        "&r [*r]", "&r {a: *r}", "{<<: {a: 1}, a: 2}", "{<<: [*undefined]}", "? [a]\n: b",
        "{[a]: 1}", "!!set {a, b}", "!!omap [{a: 1}, {a: 2}]", "!!binary aGVsbG8=",
        "!!python/name:os.system", "!<tag:yaml.org,2002:str> x", "!!map [a]", "!!seq {a: 1}",
        "!!float x", "!!int 0x", "!!timestamp 2001-02-03T25:00:00Z", "*nowhere", "&a",
        "|\n  literal\n  text", ">-\n  folded", "\"\\x00\\uffff\\U0010ffff\"", "'\t'",
        "\ufeffbom", "{a: 1, a: 2}", "[1, 2", "{a: [1, 2}", "'unclosed", "\"\\q\"",
        "2001-02-30", "0b" + "1" * 15000, "9" * 5000, "1e999", ".nan", "--- x\n--- y",
    ]),
)


@FUZZ
@given(name=st.sampled_from(NAMES), fmt=FORMATS, line=st.floats(0, 1), fragment=FRAGMENTS,
       bom=st.booleans())
def test_hostile_fragments(repo: Path, name: str, fmt: str, line: float, fragment: str,
                           bom: bool) -> None:
    """A hostile YAML fragment as the value of one `key: value` line."""
    lines = FILES[name].decode().split("\n")
    candidates = [i for i, text in enumerate(lines) if ": " in text and
                  not text.lstrip().startswith("#")]
    i = candidates[int(line * (len(candidates) - 1))]
    key = lines[i].split(": ", 1)[0]
    lines[i] = f"{key}: {fragment}"
    data = "\n".join(lines).encode()
    assert_validates_without_crashing(repo, name, (b"\xef\xbb\xbf" if bom else b"") + data, fmt)
