"""Config repo loading: YAML files -> documents that remember where each value came from.

Parsing is the dominant cost of validating a large repo, so this uses
libyaml's C parser (PyYAML ``CSafeLoader``) rather than a pure-Python
round-trip parser, and records source marks while constructing mappings
instead of re-parsing when an error needs a position. Documents are built
straight from the parser's events rather than from a node graph, which makes
this faster than a bare ``yaml.load_all`` with ``CSafeLoader`` despite the
marks (see ``bench/validate_scale.py``).

Booleans follow YAML 1.2 (only ``true``/``false``), so ``country: NO`` or
``security: off`` stay strings instead of silently becoming ``False``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reconciler.config import forkpool
from reconciler.config.diagnostics import Diagnostic, Diagnostics, Severity
from reconciler.config.limits import AliasBudget, LimitExceeded, first_too_deep, too_deep
from reconciler.config.positions import Mark, PosDict, PosList, pack, unpack
from reconciler.config.yaml_errors import (
    MAX_INT_DIGITS,
    SCALAR_ERRORS,
    UTF8_HINT,
    decode_file,
    unreadable_value,
    yaml_error_diagnostic,
)
from reconciler.config.yaml_events import NeedsNodes, roots

YAML_SUFFIXES = (".yaml", ".yml")

def _packed(node: yaml.Node) -> int:
    return pack(node.start_mark.line + 1, node.start_mark.column + 1)


class _PositionalLoader(yaml.CSafeLoader):  # type: ignore[misc]
    """Safe loader that builds PosDict/PosList and reports duplicate keys."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str, strings: dict[str, str] | None = None) -> None:
        super().__init__(stream)
        self.duplicate_keys: list[tuple[str, Mark, Mark]] = []
        self.aliases = AliasBudget()
        self.strings = {} if strings is None else strings
        self._share = len(self.strings) < _SHARED_STRINGS  # room left in the shared table
        self._in_file: dict[str, str] = {}  # once it is full: repeats within this file

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except SCALAR_ERRORS as exc:
            raise unreadable_value(node, exc) from None

    def construct_bounded_int(self, node: yaml.ScalarNode) -> int:
        value: int = self.construct_yaml_int(node)
        if value.bit_length() > _MAX_INT_BITS:
            # 0x/0b forms get past Python's digit limit on reading, then break every
            # str() of the value: error messages, canonical JSON
            raise ValueError("digits")
        return value

    def construct_pos_mapping(self, node: yaml.MappingNode) -> PosDict:
        explicit = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
        self.flatten_mapping(node)
        # flatten_mapping puts the pairs merged in with `<<` first; keys written after them
        # override them (that is what merge keys are for), so only explicit repeats count
        merged = len(node.value) - explicit
        result = PosDict(_packed(node))
        written: set[Any] = set()
        for i, (key_node, value_node) in enumerate(node.value):
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    "found an unhashable or complex key", key_node.start_mark)
            if isinstance(key, str):
                key = sys.intern(key)  # the same few keys in every resource
            if i >= merged:
                if key in written:
                    first = result.key_mark(key) or (0, 0)
                    self.duplicate_keys.append((str(key), first, unpack(_packed(key_node))))
                written.add(key)
            result.put(key, self.construct_object(value_node, deep=True), _packed(key_node),
                       _packed(value_node))
        result.seal()
        return result

    def construct_pos_sequence(self, node: yaml.SequenceNode) -> PosList:
        result = PosList(_packed(node))
        for child in node.value:
            result.add(self.construct_object(child, deep=True), _packed(child))
        result.seal()
        return result

    def read_nodes(self, file: str, documents: list[Document],
                   too_deep_at: tuple[int, yaml.Mark] | None = None) -> None:
        """Append every document of the stream, composing nodes first (any YAML).

        ``too_deep_at`` is the first document nested past the limit and where
        (see :func:`~reconciler.config.limits.first_too_deep`): the composer
        recurses in C, so that document must never reach it.
        """
        index = 0
        while self.check_node():
            if too_deep_at is not None and index == too_deep_at[0]:
                raise too_deep(too_deep_at[1])
            node = self.get_node()
            self.aliases.check(node)
            data = self.construct_document(node)
            if data is not None:
                documents.append(Document(file, index, data, unpack(_packed(node))))
            index += 1

    def read_events(self, file: str, documents: list[Document]) -> None:
        """Append every document of the stream, built straight from parser events
        (:mod:`~reconciler.config.yaml_events`); raises :class:`NeedsNodes` where
        only :meth:`read_nodes` can read the stream."""
        for index, root, mark in roots(self.get_event, self._scalar, self.strings):
            documents.append(_document(file, index, root, mark))

    def _scalar(self, event: yaml.ScalarEvent, depth: int, index: int) -> Any:
        if event.anchor is not None or event.tag is not None:
            raise NeedsNodes(depth, index)
        value = event.value
        if not event.implicit[0]:  # quoted: always a string
            tag = _STR_TAG
        elif (tag := _TAG_CACHE.get(value)) is None:
            tag = _tag(self, value, event.implicit)
        if tag != _STR_TAG:
            return self._construct_scalar(event, tag, depth, index)
        # values repeat across resources (apiVersion, kinds, protocols, hosts):
        # one copy each, up to a bound so unique values do not grow the table.
        # Only text that reads as a string unquoted too goes in: the event reader
        # takes any scalar found in it for that string without resolving its tag.
        shared = self.strings.get(value)
        if shared is not None:
            return shared
        if self._share and (event.implicit[0] or _tag(self, value, (True, False)) == _STR_TAG):
            self.strings[value] = value
            self._share = len(self.strings) < _SHARED_STRINGS
            return value
        return self._in_file.setdefault(value, value)

    def _construct_scalar(self, event: yaml.ScalarEvent, tag: str, depth: int,
                          index: int) -> Any:
        construct = self.yaml_constructors.get(tag)  # none for `<<` and `=`
        if construct is None:
            raise NeedsNodes(depth, index)
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            return construct(self, node)
        except SCALAR_ERRORS as exc:
            raise unreadable_value(node, exc) from None


def _document(file: str, index: int, root: Any, mark: int) -> Document:
    # a container knows its own start: no tuple per document for it
    start = _NO_START if root.__class__ in _CONTAINERS else unpack(mark)
    return Document(file=file, index=index, data=root, start=start)


def _tag(loader: _PositionalLoader, raw: str, implicit: tuple[bool, bool]) -> str:
    """The tag of a plain scalar (12 / true / null / ...), cached across files."""
    if raw and raw[0] not in _RESOLVED_FIRST:
        return _STR_TAG  # no implicit type starts with this character: no regex to run
    tag = _TAG_CACHE.get(raw)
    if tag is None:
        tag = loader.resolve(yaml.ScalarNode, raw, implicit)
        if len(_TAG_CACHE) < _TAG_CACHE_SIZE:
            _TAG_CACHE[raw] = tag
    return tag


_STR_TAG = "tag:yaml.org,2002:str"
_CONTAINERS = (PosDict, PosList)
_NO_START: Mark = (1, 1)
# The largest int whose decimal form Python will still print (its int_max_str_digits)
_MAX_INT_BITS = int(MAX_INT_DIGITS * 3.32)
# Plain scalar -> resolved tag. Keys and enum-like values repeat across a repo,
# and resolving runs a regex per candidate type; the size bound keeps unique
# values (emails, hosts) from growing it without limit.
_TAG_CACHE: dict[str, str] = {}
_TAG_CACHE_SIZE = 8192
# String values shared across the files of one load_tree (see read_events)
_SHARED_STRINGS = 16384


_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_PositionalLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL_RE, list("tTfF"))
_PositionalLoader.add_constructor("tag:yaml.org,2002:int", _PositionalLoader.construct_bounded_int)
# First characters of plain scalars that an implicit resolver may turn into another type
# than str (resolve() looks resolvers up by first character; there are no path or
# any-character resolvers, which would make every character count).
_RESOLVED_FIRST = frozenset(k for k in _PositionalLoader.yaml_implicit_resolvers if k)
assert None not in _PositionalLoader.yaml_implicit_resolvers
assert not _PositionalLoader.yaml_path_resolvers
_PositionalLoader.add_constructor("tag:yaml.org,2002:map", _PositionalLoader.construct_pos_mapping)
_PositionalLoader.add_constructor("tag:yaml.org,2002:seq", _PositionalLoader.construct_pos_sequence)


@dataclass(frozen=True, slots=True)
class Document:
    """One YAML document of one file."""

    file: str  # path relative to the config root, POSIX separators
    index: int  # 0-based position of the document within its file
    data: Any
    start: Mark = (1, 1)  # where the document's content starts (also for a bare scalar)

    @property
    def mark(self) -> Mark:
        return getattr(self.data, "mark", self.start)


def locate(data: Any, path: Sequence[str | int], *, key: bool = False) -> Mark:
    """Best source position for ``path`` inside ``data``.

    Walks as deep as the path exists; a missing tail (a required field that is
    absent) resolves to the innermost mapping that should have held it. With
    ``key=True`` the last step points at the key rather than its value, which
    reads better for "unknown field" style errors.
    """
    best: Mark = getattr(data, "mark", (0, 0))
    node = data
    for i, step in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, PosDict) and step in node:
            found = node.key_mark(step) if (key and last) else node.value_mark(step)
            best = found or best
            node = node[step]
        elif isinstance(node, PosList) and isinstance(step, int) and 0 <= step < len(node):
            best = node.item_mark(step) or best
            node = node[step]
        else:
            break
    return best


def value_at(data: Any, path: Sequence[str | int], default: Any = None) -> Any:
    """The value at ``path`` inside ``data``, or ``default`` where it is not written."""
    node = data
    for step in path:
        if (isinstance(node, dict) and step in node) or (
                isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node)):
            node = node[step]
        else:
            return default
    return node


def diagnostic_at(document: Document, path: Sequence[str | int], code: str, message: str, *,
                  hint: str = "", severity: Severity = Severity.ERROR,
                  key: bool = False) -> Diagnostic:
    """A diagnostic positioned at ``path`` of ``document`` (see :func:`locate`)."""
    line, col = locate(document.data, path, key=key)
    return Diagnostic(code=code, message=message, file=document.file, line=line, col=col,
                      path=".".join(str(p) for p in path), hint=hint, severity=severity)


def iter_config_files(root: Path) -> Iterator[Path]:
    """Every YAML file below ``root`` in a stable order, skipping hidden folders."""
    for _, path in config_files(root):
        yield path


def config_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(name relative to ``root`` with ``/``, path) of every YAML file below ``root``.

    The order and choice of ``sorted(root.rglob("*"))`` (symlinked folders not
    followed, hidden names skipped), from one ``scandir`` per folder: on a
    warm plan of a large repo the walk is most of the work left, and pathlib
    spends a stat and a ``relative_to`` per file on top.
    """
    if root.is_file():
        yield root.name, root
        return
    yield from _walk(root, "")


def _walk(folder: Path, prefix: str) -> Iterator[tuple[str, Path]]:
    try:
        with os.scandir(folder) as found:
            # name by name depth first is the order of sorted full paths (part by part)
            entries = sorted(found, key=lambda e: e.name)
    except PermissionError:  # rglob skips such folders too
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        name = prefix + entry.name
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(folder / entry.name, name + "/")
        elif entry.name.endswith(YAML_SUFFIXES) and entry.is_file():
            yield name, folder / entry.name


def load_text(text: str, file: str, diagnostics: Diagnostics,
              strings: dict[str, str] | None = None) -> list[Document]:
    """Parse every document of one file; syntax errors become diagnostics.

    Documents before a syntax error are kept so their own problems are still
    reported in the same run. ``strings`` is a table of string values shared
    with other files of the same load, so each repeated value is stored once.
    """
    loader = _PositionalLoader(text, strings)
    documents: list[Document] = []
    try:
        try:
            loader.read_events(file, documents)
        except NeedsNodes as need:
            too_deep_at = first_too_deep(loader, need.depth, need.index)
            loader.dispose()
            loader = _PositionalLoader(text, strings)
            documents.clear()
            loader.read_nodes(file, documents, too_deep_at)
    except (LimitExceeded, yaml.YAMLError) as exc:
        diagnostics.add(yaml_error_diagnostic(exc, text, file))
    finally:
        loader.dispose()
    for name, first, again in loader.duplicate_keys:
        diagnostics.add(Diagnostic(
            code="duplicate-key", file=file, line=again[0], col=again[1],
            message=f"duplicate key {name!r} (first defined at line {first[0]})",
            hint="YAML keeps only the last value; remove one of them"))
    return documents


def load_tree(root: Path, diagnostics: Diagnostics, *,
              workers: int | None = None) -> list[Document]:
    """Load every ``*.yaml``/``*.yml`` below ``root`` (or the single file ``root``).

    A repo of many files is parsed by several forked processes (see
    :mod:`~reconciler.config.forkpool`); ``workers`` overrides how many (1: in
    this process). Documents and diagnostics come out the same, in the same
    order, either way.
    """
    if not root.exists():
        diagnostics.add(Diagnostic(
            code="path-missing", file=str(root), message="no such file or directory",
            hint="pass the folder of your config repo, e.g. examples/config"))
        return []
    files = list(config_files(root))
    if workers is None:
        workers = forkpool.workers_for(len(files), PARALLEL_FILES)
    loaded = (forkpool.ordered_map(_load_batch, forkpool.batched(files, workers), workers)
              if workers > 1 else iter([_load_batch(files)]))
    documents: list[Document] = []
    for batch in loaded:
        for found, problems in batch:
            diagnostics.extend(problems)
            documents.extend(found)
    return documents


# Below this many files a load stays in one process: forking and pickling the
# documents back cost more than a second core saves (~0.1 s of parsing)
PARALLEL_FILES = 200
FileResult = tuple[list[Document], list[Diagnostic]]


def _load_batch(files: list[tuple[str, Path]]) -> list[FileResult]:
    """Documents and diagnostics of each file; runs in a worker for a parallel load.

    One table of shared strings per batch: repeated values are stored once in
    it, and pickling the batch back writes each of them once too.
    """
    strings: dict[str, str] = {}
    return [_load_file(name, path, strings) for name, path in files]


def _load_file(name: str, path: Path, strings: dict[str, str]) -> FileResult:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [], [Diagnostic(code="file-unreadable", file=name,
                               message=f"cannot read file: {exc}", hint=UTF8_HINT)]
    text = decode_file(data, name)
    del data
    if isinstance(text, Diagnostic):
        return [], [text]
    diagnostics = Diagnostics()
    return load_text(text, name, diagnostics, strings), diagnostics.items
