"""`reconcile convert PATH`: write apiVersion conversions back to the files (SPEC C9).

``validate`` already converts older documents in memory; this command makes
the change permanent so the notices go away. Files are edited with ruamel's
round-trip mode so comments, key order, quoting and the yaml-language-server
modeline survive; a file with nothing to convert is never rewritten.
"""

from __future__ import annotations

import difflib
import io
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import click
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, MarkedYAMLError, YAMLError
from ruamel.yaml.tokens import CommentToken

from reconciler.cli.common import document_label, finish
from reconciler.config.diagnostics import Diagnostics
from reconciler.config.loader import iter_config_files, load_text
from reconciler.config.versions import CONVERSIONS, upgrade

# (mapping, sequence, offset) layouts tried in turn; the one that reproduces
# the untouched file exactly is used, so unchanged lines stay unchanged.
_LAYOUTS = ((2, 4, 2), (2, 2, 0), (4, 4, 2), (4, 4, 0), (4, 6, 4), (3, 3, 0))


class ConvertError(Exception):
    """A file that cannot be converted; ``line``/``col`` are 1-based, 0 if unknown."""

    def __init__(self, message: str, line: int = 0, col: int = 0) -> None:
        super().__init__(message)
        self.line = line
        self.col = col


@dataclass
class Conversion:
    """What converting one file did (or would do)."""

    text: str  # the converted file content
    notices: list[tuple[str, int, list[str]]] = field(default_factory=list)  # label, line, notes
    layout_exact: bool = True  # False: formatting of unchanged parts could not be reproduced


def _needs_conversion(text: str, name: str) -> bool:
    """Whether any document has an older apiVersion; syntax errors raise.

    Uses the fast loader so a large repo with nothing to convert costs no
    round-trip parse.
    """
    diags = Diagnostics()
    documents = load_text(text, name, diags)
    for d in diags.items:
        if d.code == "yaml-syntax":
            hint = f" ({d.hint})" if d.hint else ""
            raise ConvertError(d.message + hint, d.line, d.col)
    return any(
        isinstance(doc.data, dict) and doc.data.get("apiVersion") in CONVERSIONS
        for doc in documents
    )


def _round_trip_yaml(layout: tuple[int, int, int] = _LAYOUTS[0],
                     explicit_start: bool = False) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long lines such as URLs
    mapping, sequence, offset = layout
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    yaml.explicit_start = explicit_start
    return yaml


def _dump(docs: list[Any], yaml: YAML) -> str:
    buffer = io.StringIO()
    yaml.dump_all(docs, buffer)
    return buffer.getvalue()


def _starts_explicitly(text: str) -> bool:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped.startswith("---")
    return False


def _choose_layout(docs: list[Any], text: str) -> tuple[YAML, bool]:
    """The dumper whose output of the untouched documents matches ``text`` best,
    and whether it matches exactly."""
    explicit = _starts_explicitly(text)
    tried = []
    for layout in _LAYOUTS:
        yaml = _round_trip_yaml(layout, explicit)
        out = _dump(docs, yaml)
        if out == text:
            return yaml, True
        changed = sum(line[:1] in "+-" for line in difflib.ndiff(text.splitlines(),
                                                                  out.splitlines()))
        tried.append((changed, len(tried), yaml))
    return min(tried)[2], False


def _walk_maps(node: Any) -> Iterator[CommentedMap]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, CommentedMap):
            yield item
            stack.extend(item.values())
        elif isinstance(item, CommentedSeq):
            stack.extend(item)


def _snapshot(doc: Any) -> list[tuple[CommentedMap, list[tuple[Any, int]]]]:
    return [(m, [(k, id(v)) for k, v in m.items()]) for m in _walk_maps(doc)]


def _tail_slot(container: Any, key: Any) -> tuple[Any, Any, int]:
    """The (container, key, index in its comment entry) of the comment holding whatever
    follows ``container[key]``: for a nested block collection that is its last item,
    recursively."""
    value = container[key]
    while isinstance(value, CommentedMap | CommentedSeq) and len(value) \
            and not value.fa.flow_style():
        container = value
        key = next(reversed(value)) if isinstance(value, CommentedMap) else len(value) - 1
        value = container[key]
    return container, key, 0 if isinstance(container, CommentedSeq) else 2


def _move_tail_comment(mapping: CommentedMap, old_last: Any, new_last: Any) -> None:
    """Keys added after the old last key must not end up below the comment lines
    that introduce the next, outer key."""
    holder, slot, index = _tail_slot(mapping, old_last)
    entry = holder.ca.items.get(slot)
    token = entry[index] if entry and len(entry) > index else None
    if not isinstance(token, CommentToken) or "\n" not in token.value.rstrip("\n"):
        return
    value: str = token.value
    if value.startswith("#"):
        eol, _, rest = value.partition("\n")
        token.value = eol + "\n"
        tail = "\n" + rest
    else:
        entry[index] = None
        tail = value
    target, target_slot, target_index = _tail_slot(mapping, new_last)
    target_entry = target.ca.items.setdefault(target_slot, [None, None, None, None])
    if target_entry[target_index] is None:
        target_entry[target_index] = CommentToken(tail, CommentMark(0), None)


def _restore_layout(snapshot: list[tuple[CommentedMap, list[tuple[Any, int]]]]) -> None:
    """Undo the side effects of a conversion on layout.

    ``versions.upgrade`` renames a key by popping it and adding the new name,
    which would move it to the end of its mapping and drop its comment. A
    renamed key is recognised by carrying the very same value object.
    """
    for mapping, before in snapshot:
        old_keys = [key for key, _ in before]
        now = list(mapping.keys())
        if now == old_keys:
            continue
        renamed = _renamed(mapping, before)
        order = [renamed.get(key, key) for key in old_keys if key in mapping or key in renamed]
        order += [key for key in now if key not in order]
        for key in order:
            mapping.move_to_end(key)
        for old, new in renamed.items():
            if old in mapping.ca.items:
                mapping.ca.items[new] = mapping.ca.items.pop(old)
        if old_keys and order:
            old_last = renamed.get(old_keys[-1], old_keys[-1])
            if old_last in mapping and order[-1] != old_last:
                _move_tail_comment(mapping, old_last, order[-1])


def _renamed(mapping: CommentedMap, before: list[tuple[Any, int]]) -> dict[Any, Any]:
    """Old key -> new key, for keys gone whose value object now sits under an added key."""
    was = dict(before)
    added = [key for key in mapping if key not in was]
    renamed: dict[Any, Any] = {}
    for key, ident in before:
        if key in mapping:
            continue
        match = next((a for a in added if id(mapping[a]) == ident
                      and a not in renamed.values()), None)
        if match is not None:
            renamed[key] = match
    return renamed


# A document marker at the start of a line can only be a marker (YAML forbids it
# inside scalars), so a file splits into documents without parsing it.
_DOCUMENT_START = re.compile(r"^---(?=[ \t]|$)", re.MULTILINE)
_DIRECTIVE = re.compile(r"^%", re.MULTILINE)


def _documents(text: str) -> list[tuple[int, str]]:
    """(0-based first line, text) of each document; a comment-only head is its own piece.

    Converting documents one by one leaves every other document byte-for-byte
    as it was, and lets each keep its own indentation style. Directives
    (``%YAML``) bind documents together, so such a file stays one piece.
    """
    if _DIRECTIVE.search(text):
        return [(0, text)]
    starts = [m.start() for m in _DOCUMENT_START.finditer(text)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    bounds = [*starts, len(text)]
    return [(text.count("\n", 0, a), text[a:b]) for a, b in pairwise(bounds)]


def _convert_piece(text: str, first_line: int, result: Conversion) -> str:
    if not text.endswith("\n"):
        text += "\n"
    try:
        docs = list(_round_trip_yaml().load_all(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + first_line + 1, mark.column + 1) if mark else (0, 0)
        raise ConvertError(str(exc.problem or exc.context or "invalid YAML"), line, col) from None
    except YAMLError as exc:
        raise ConvertError(f"cannot parse YAML: {exc}") from None
    yaml, exact = _choose_layout(docs, text)
    result.layout_exact &= exact
    for doc in docs:
        if not isinstance(doc, CommentedMap):
            continue
        snapshot = _snapshot(doc)
        notes = upgrade(doc)
        if notes is None:
            continue
        _restore_layout(snapshot)
        result.notices.append((document_label(doc), doc.lc.line + first_line + 1, notes))
    return _dump(docs, yaml)


def convert_text(text: str, name: str = "<text>") -> Conversion | None:
    """The converted text of one file, or ``None`` when nothing needs converting."""
    if not _needs_conversion(text, name):
        return None
    result = Conversion(text="")
    pieces = []
    for first_line, piece in _documents(text):
        if _needs_conversion(piece, name):
            piece = _convert_piece(piece, first_line, result)
        pieces.append(piece)
    result.text = "".join(pieces)
    # Never write a file that the next `validate` could not read.
    try:
        if _needs_conversion(result.text, name):
            raise ConvertError("internal error: the converted file still has an older apiVersion")
    except ConvertError as exc:
        raise ConvertError(f"conversion produced invalid YAML, file left unchanged ({exc})") \
            from None
    return result


def _read(path: Path) -> tuple[str, str]:
    """The file's text with '\\n' line ends, and the line end to write back."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConvertError(f"cannot read file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        col = exc.start - before.rfind(b"\n")  # 1-based; rfind is -1 on the first line
        raise ConvertError("not UTF-8 text", before.count(b"\n") + 1, col) from None
    newline = "\r\n" if "\r\n" in text else "\n"
    return text.replace("\r\n", "\n"), newline


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one step: readers see the old or the new file, never half."""
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _convert_file(path: Path, check: bool) -> Conversion | None:
    text, newline = _read(path)
    result = convert_text(text, str(path))
    if result is None or check:
        return result
    try:
        _write_atomically(path, result.text.replace("\n", newline))
    except OSError as exc:
        raise ConvertError(f"cannot write file: {exc.strerror}") from None
    return result


def _report(path: Path, result: Conversion, check: bool) -> None:
    verb = "would convert" if check else "converted"
    click.echo(f"{path}: {verb} {len(result.notices)} document(s)")
    for label, line, notes in result.notices:
        click.echo(f"  {path}:{line}  {label}: {notes[0]}")
        for note in notes[1:]:
            click.echo(f"      - {note}")
    if not result.layout_exact:
        click.echo("  note: the file's formatting could not be reproduced exactly; "
                   "review the diff of the lines outside the converted fields")


@click.command("convert")
@click.argument("path", type=click.Path(path_type=Path), default=Path("."))
@click.option("--check", is_flag=True,
              help="Only report what would change; exit 1 if anything would (for CI).")
def command(path: Path, check: bool) -> None:
    """Rewrite resources with an older apiVersion below PATH to the current version.

    Comments, key order and quoting are kept; files without older versions are
    not touched. Exit 0 when done (or, with --check, nothing to convert), 1 on
    errors or when --check finds files to convert.
    """
    if not path.exists():
        raise click.UsageError(f"{path}: no such file or directory")
    converted = unchanged = failed = 0
    for file in iter_config_files(path):
        try:
            result = _convert_file(file, check)
        except ConvertError as exc:
            where = f"{file}:{exc.line}:{exc.col}" if exc.line else str(file)
            click.echo(f"{where}: error: {exc}; file left unchanged", err=True)
            failed += 1
            continue
        if result is None:
            unchanged += 1
            continue
        converted += 1
        _report(file, result, check)
    verb = "would be converted" if check else "converted"
    summary = f"{converted} file(s) {verb}, {unchanged} unchanged"
    if failed:
        summary += f", {failed} with errors"
    if check and converted:
        summary += f"; run `reconcile convert {path}` and commit the result"
    click.echo(summary)
    finish(1 if failed or (check and converted) else 0)
