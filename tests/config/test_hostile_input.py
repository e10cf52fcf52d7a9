"""Hostile and mangled YAML (issue 11 item 6): each input is one clear error at
file:line:col and exit 1 — never a traceback, a RecursionError or a crash.

Every case here crashed `validate` or misreported itself before the limits of
``reconciler.config.limits`` and the envelope checks existed.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli.main import cli
from reconciler.config.diagnostics import Diagnostics
from reconciler.config.limits import ALIAS_ALLOWANCE, MAX_DEPTH
from reconciler.config.loader import load_text

from .helpers import REPO, Expect, assert_reported, describe, validate_files

HEAD = "apiVersion: reconciler.dev/v1\nkind: ProxyServer\nmetadata: {name: p}\n"


def _port(value: str) -> str:
    """A proxy whose port (line 4, column 35) is written as ``value``."""
    return HEAD + "spec: {host: proxy.example, port: " + value + "}\n"


def _deep(levels: int, anchor: bool) -> str:
    """``levels`` nested flow mappings under `spec` (line 4 or 5), optionally after an anchor."""
    lead = "labels: &l {a: b}\n" if anchor else ""
    return (HEAD.replace("metadata: {name: p}\n", "metadata: {name: p}\n" + lead)
            + "spec: " + "{a: " * levels + "1" + "}" * levels + "\n")


def _laughs(levels: int) -> str:
    """The billion-laughs shape: each anchor a list of nine aliases of the previous one."""
    lines = [HEAD.rstrip("\n"), "spec:", "  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Hostile:
    id: str
    text: str
    expect: Expect


DEPTH_HINT = "a resource needs fewer than 10 levels"
VALUE_HINT = "quote it to keep it as text, or correct the value"
# the first mapping past the limit: the document is level 1, `spec: {` (column 7) level 2,
# and each further `{a: ` takes 4 columns
DEEP_COL = 7 + (MAX_DEPTH - 1) * 4

CASES = [
    Hostile("api-version-mapping", "apiVersion: {a: 1}\nkind: ProxyServer\n",
            Expect("f.yaml", 1, 13, "apiVersion", "`apiVersion` must be text, got a mapping",
                   hint="e.g. apiVersion: reconciler.dev/v1")),
    Hostile("api-version-list", "kind: ProxyServer\napiVersion: [reconciler.dev/v1]\n",
            Expect("f.yaml", 2, 13, "apiVersion", "`apiVersion` must be text, got a list")),
    Hostile("kind-list", "apiVersion: reconciler.dev/v1\nkind: [ProxyServer]\n",
            Expect("f.yaml", 2, 7, "kind", "`kind` must be text, got a list",
                   hint="e.g. kind: OutgoingServer")),
    Hostile("kind-number", "apiVersion: reconciler.dev/v1\nkind: 12\n",
            Expect("f.yaml", 2, 7, "kind", "`kind` must be text, got 12")),
    Hostile("nested-500-with-anchor", _deep(500, anchor=True),
            Expect("f.yaml", 5, DEEP_COL, "", f"nested more than {MAX_DEPTH} levels deep here",
                   hint=DEPTH_HINT)),
    Hostile("nested-500-plain", _deep(500, anchor=False),
            Expect("f.yaml", 4, DEEP_COL, "", f"nested more than {MAX_DEPTH} levels deep here",
                   hint=DEPTH_HINT)),
    Hostile("nested-block-lists", HEAD + "spec:\n" + "".join(
                "  " * i + "-\n" for i in range(200)) + "  " * 200 + "- x\n",
            # the list of level L starts on line L + 3, column 2L - 3
            Expect("f.yaml", MAX_DEPTH + 4, 2 * MAX_DEPTH - 1, "",
                   f"nested more than {MAX_DEPTH} levels deep here")),
    Hostile("nested-through-aliases", HEAD + "spec:\n  a0: &a0 [x]\n" + "".join(
                f"  a{i}: &a{i} [[[[[[[[[[*a{i - 1}]]]]]]]]]]\n" for i in range(1, 10)),
            # a_i is 10 i + 3 levels deep: a7 is the first past 64, where it repeats a6
            Expect("f.yaml", 11, 7, "", f"nested more than {MAX_DEPTH} levels deep here")),
    Hostile("alias-loop", HEAD + "spec: &s {host: proxy.example, again: [*s]}\n",
            Expect("f.yaml", 4, 7, "", "an alias refers to the value anchored here from inside "
                   "it (a loop)", hint="point the alias at a value outside this one")),
    Hostile("alias-loop-through-merge", HEAD + "spec: &s {<<: *s}\n",
            Expect("f.yaml", 4, 7, "", "an alias refers to the value anchored here from inside "
                   "it (a loop)")),
    Hostile("billion-laughs", _laughs(9),
            # a4 repeats a3 (line 8) nine times: 9 x 820 values pass 10,000 + 10 x 30 written
            Expect("f.yaml", 8, 7, "", "aliases expand this file to more than 10,300 values; "
                   "the value anchored here is repeated by aliases of aliases",
                   hint="write the values out")),
    Hostile("int-5000-digits", _port("9" * 5000),
            Expect("f.yaml", 4, 35, "", "cannot read YAML: this number has more than 4300 "
                   "digits", hint=VALUE_HINT)),
    Hostile("int-20000-binary-digits", _port("0b" + "1" * 20000),
            Expect("f.yaml", 4, 35, "", "cannot read YAML: this number has more than 4300 "
                   "digits")),
    Hostile("impossible-date", _port("2001-02-30"),
            Expect("f.yaml", 4, 35, "", "cannot read YAML: '2001-02-30' is not a valid "
                   "timestamp", hint=VALUE_HINT)),
    Hostile("bool-tag-on-word", _port("!!bool maybe"),
            Expect("f.yaml", 4, 35, "", "cannot read YAML: 'maybe' is not a valid bool")),
    Hostile("int-tag-on-word", _port("!!int abc"),
            Expect("f.yaml", 4, 35, "", "cannot read YAML: 'abc' is not a valid int")),
    Hostile("timestamp-tag-on-word", _port("!!timestamp x"),
            Expect("f.yaml", 4, 35, "", "cannot read YAML: 'x' is not a valid timestamp")),
    Hostile("map-tag-on-list", _port("!!map [a]"),
            Expect("f.yaml", 4, 35, "", "cannot read YAML: a list cannot be read as map")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_one_positioned_error(tmp_path: Path, case: Hostile) -> None:
    result = validate_files(tmp_path, {"f.yaml": case.text})
    assert_reported(result, [case.expect])
    assert not result.ok
    assert len(result.diagnostics.errors) == 1, describe(result.diagnostics)


def test_every_hostile_input_at_once_through_the_cli(tmp_path: Path) -> None:
    for case in CASES:
        (tmp_path / f"{case.id}.yaml").write_text(case.text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = set(result.output.splitlines())
    for case in CASES:
        exp = case.expect
        expected = Expect(f"{case.id}.yaml", exp.line, exp.col, exp.path, exp.message)
        assert expected.text_line() in lines, result.output


def test_known_crashes_reproduced_exactly(tmp_path: Path) -> None:
    """The two crashes the issue names: `apiVersion: {a: 1}` (TypeError, unhashable
    PosDict) and 500-deep flow mappings (RecursionError)."""
    (tmp_path / "a.yaml").write_text(
        "apiVersion: {a: 1}\nkind: OutgoingServer\nmetadata: {name: x}\nspec: {}\n")
    (tmp_path / "b.yaml").write_text("x: &a 1\na: " + "{a: " * 500 + "1" + "}" * 500 + "\n")
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 1
    assert "a.yaml:1:13  apiVersion  error: `apiVersion` must be text, got a mapping" in (
        result.output)
    assert f"b.yaml:2:{4 + (MAX_DEPTH - 1) * 4}  error: nested more than {MAX_DEPTH} levels " \
           "deep here" in result.output


def test_deep_nesting_with_anchors_does_not_crash_the_process(tmp_path: Path) -> None:
    """200,000 brackets in a file that also has an anchor used to reach libyaml's
    recursive C composer and end the process with SIGSEGV."""
    path = tmp_path / "deep.yaml"
    path.write_text("x: &a 1\ny: " + "[" * 200_000 + "]" * 200_000 + "\n")
    run = subprocess.run([sys.executable, "-m", "reconciler", "validate", str(path)],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "Traceback" not in run.stdout + run.stderr
    assert f"deep.yaml:2:{4 + MAX_DEPTH - 1}  error: nested more than {MAX_DEPTH} levels " \
           "deep here" in run.stdout


def test_documents_before_a_too_deep_one_are_still_checked(tmp_path: Path) -> None:
    result = validate_files(tmp_path, {"f.yaml": (
        "apiVersion: reconciler.dev/v1\nkind: ProxyServer\n"
        "metadata: {name: before, labels: &l {a: b}}\n"
        "spec: {host: proxy.example, port: 99999}\n---\n"
        + "[" * 100 + "]" * 100 + "\n")})
    assert_reported(result, [
        Expect("f.yaml", 4, 35, "spec.port", "99999 is above the maximum 65535"),
        Expect("f.yaml", 6, MAX_DEPTH + 1, "", f"nested more than {MAX_DEPTH} levels deep here"),
    ])


def test_aliases_within_the_allowance_still_work() -> None:
    """Ordinary anchors (shared labels, merge keys) are far below the allowance."""
    repeated = ", ".join(["*d"] * (ALIAS_ALLOWANCE // 20))
    text = "d: &d [a, b, c, d, e, f, g, h]\nmany: [" + repeated + "]\n"
    diags = Diagnostics()
    [doc] = load_text(text, "f.yaml", diags)
    assert not list(diags), describe(diags)
    assert len(doc.data["many"]) == ALIAS_ALLOWANCE // 20


def test_nesting_at_the_limit_is_accepted() -> None:
    text = "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n"
    for written in (text, "--- &a\n" + text):  # by events, and by nodes
        diags = Diagnostics()
        [doc] = load_text(written, "f.yaml", diags)
        assert not list(diags), describe(diags)
        depth, node = 0, doc.data
        while isinstance(node, list):
            depth += 1
            node = node[0] if node else None
        assert depth == MAX_DEPTH


def test_invalid_utf8_names_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_bytes(HEAD.encode() + b"spec: {host: caf\xe9.example}\n")
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert ("f.yaml:4:17  error: byte 0xE9 is not UTF-8 text" in result.output), result.output


def test_utf16_file_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_bytes(HEAD.encode("utf-16"))
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "f.yaml:1:1  error: the file is UTF-16 text, not UTF-8" in result.output, (
        result.output)


def test_recursive_alias_no_longer_gets_the_tab_hint() -> None:
    diags = Diagnostics()
    load_text("a: &a [*a]\n", "f.yaml", diags)
    [d] = list(diags)
    assert "tab" not in d.hint
