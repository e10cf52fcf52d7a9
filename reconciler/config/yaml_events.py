"""The loader's fast path: documents built straight from libyaml's parser events.

Skipping PyYAML's node graph makes parsing about a third faster (see
``bench/validate_scale.py``). Only plain mappings, sequences and scalars are
handled here; anchors, aliases, explicit tags, merge keys, complex and
duplicate keys, and entries whose marks do not fit one word raise
:class:`NeedsNodes` so that the node-based reader of
:mod:`~reconciler.config.loader` stays their one implementation. The result
is the same either way (``tests/config/test_loader.py`` compares them).

Hot path, a few hundred thousand events for a large repo: each container is
read by its own loop (one call per container, not per event), which keeps the
open container, its marks and the key waiting for a value in local variables
instead of stacks indexed per event; a container's marks are collected in a
plain list and packed once when it closes.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Iterator
from typing import Any

import yaml

from reconciler.config.limits import MAX_DEPTH, too_deep
from reconciler.config.positions import PosDict, PosList

# (event, depth, document index) -> the scalar's value; raises NeedsNodes
ScalarReader = Callable[[yaml.ScalarEvent, int, int], Any]


class NeedsNodes(Exception):
    """The stream uses a YAML feature that only the node-based reader handles.

    Carries how deep the nesting was and which document was being read, so the
    rest of the stream can be checked for depth before any node is composed.
    """

    def __init__(self, depth: int, index: int) -> None:
        super().__init__()
        self.depth = depth
        self.index = index


_SCALAR = yaml.ScalarEvent
_MAPPING = yaml.MappingStartEvent
_SEQUENCE = yaml.SequenceStartEvent
_MAPPING_END = yaml.MappingEndEvent
_SEQUENCE_END = yaml.SequenceEndEvent
_KEY_TYPES = (str, int, float, bool, type(None))
# Raw text -> interned key, for text that a plain key read as a string: written
# plain or quoted, that text is then the same string (a quoted '12' is not cached,
# as a plain 12 is a number), so the next such key skips tag resolution. Bounded
# like the loader's caches.
_KEYS: dict[str, str] = {}
_KEYS_SIZE = 8192


class _Reader:
    __slots__ = ("get_event", "index", "scalar", "strings")

    def __init__(self, get_event: Callable[[], yaml.Event], scalar: ScalarReader,
                 strings: dict[str, str]) -> None:
        self.get_event = get_event
        self.scalar = scalar
        # text -> the string it reads as, quoted or not; ``scalar`` fills it
        self.strings = strings
        self.index = 0  # of the document being read

    def container(self, event: yaml.CollectionStartEvent, depth: int) -> PosDict | PosList:
        """The mapping or list ``event`` opens, ``depth`` levels deep, read to its end."""
        if event.anchor is not None or event.tag is not None:
            raise NeedsNodes(depth, self.index)
        start = event.start_mark
        if depth > MAX_DEPTH:
            raise too_deep(start)
        words = [(start.line + 1) << 32 | (start.column + 1)]  # positions.pack, inlined
        if event.__class__ is _MAPPING:
            found: PosDict | PosList = self.mapping(dict.__new__(PosDict), words, depth)
        else:
            found = self.sequence(list.__new__(PosList), words, depth)
        found.marks = array("Q", words).tobytes()
        return found

    def mapping(self, result: PosDict, words: list[int], depth: int) -> PosDict:
        get_event, scalar, index, strings = self.get_event, self.scalar, self.index, self.strings
        while True:
            event = get_event()
            kind = event.__class__
            if kind is _MAPPING_END:
                return result
            if kind is not _SCALAR:  # a complex key or an alias: read_nodes reports it
                raise NeedsNodes(depth + (kind is not yaml.AliasEvent), index)
            key = _KEYS.get(event.value)
            if key is None or event.anchor is not None or event.tag is not None:
                key = self.key(event, depth)
            start = event.start_mark
            key_line, key_col = start.line + 1, start.column + 1
            event = get_event()
            kind = event.__class__
            if kind is _SCALAR:
                value = strings.get(event.value)  # the common case, without a call
                if value is None or event.anchor is not None or event.tag is not None:
                    value = scalar(event, depth, index)
            elif kind is _MAPPING or kind is _SEQUENCE:
                value = self.container(event, depth + 1)
            else:
                raise NeedsNodes(depth, index)  # an alias
            start = event.start_mark
            below = start.line + 1 - key_line
            col = start.column + 1
            if key in result or key_line >> 28 or key_col >> 16 or col >> 16 \
                    or not 0 <= below < 16:
                raise NeedsNodes(depth, index)  # a duplicate key, or marks too wide for a word
            result[key] = value
            words.append(key_line << 36 | key_col << 20 | below << 16 | col)  # positions._entry

    def key(self, event: yaml.ScalarEvent, depth: int) -> Any:
        """A mapping key that is not a plain string seen before."""
        key = self.scalar(event, depth, self.index)
        if key.__class__ is str:
            # the same few keys recur in every resource: one interned copy of each
            key = sys.intern(key)
            if event.implicit[0] and len(_KEYS) < _KEYS_SIZE:  # plain, and read as text
                _KEYS[key] = key
        elif not isinstance(key, _KEY_TYPES):
            raise NeedsNodes(depth, self.index)
        return key

    def sequence(self, result: PosList, words: list[int], depth: int) -> PosList:
        get_event, scalar, index, strings = self.get_event, self.scalar, self.index, self.strings
        while True:
            event = get_event()
            kind = event.__class__
            if kind is _SCALAR:
                value = strings.get(event.value)
                if value is None or event.anchor is not None or event.tag is not None:
                    value = scalar(event, depth, index)
                result.append(value)
            elif kind is _SEQUENCE_END:
                return result
            elif kind is _MAPPING or kind is _SEQUENCE:
                result.append(self.container(event, depth + 1))
            else:
                raise NeedsNodes(depth, index)  # an alias
            start = event.start_mark
            words.append((start.line + 1) << 32 | (start.column + 1))


def roots(get_event: Callable[[], yaml.Event], scalar: ScalarReader,
          strings: dict[str, str]) -> Iterator[tuple[int, Any, int]]:
    """(index, content, packed start mark) of each document of the stream with content.

    ``scalar`` reads a scalar; ``strings`` maps text to the string it reads as
    whether quoted or not (text such as ``12`` or ``true`` must never be in it).
    """
    reader = _Reader(get_event, scalar, strings)
    root: Any = None
    mark = 0
    while True:
        event = get_event()
        kind = event.__class__
        if kind is _SCALAR:
            root = scalar(event, 0, reader.index)
        elif kind is _MAPPING or kind is _SEQUENCE:
            root = reader.container(event, 1)
        elif kind is yaml.DocumentEndEvent:
            if root is not None:
                yield reader.index, root, mark
            root = None
            reader.index += 1
            continue
        elif kind is yaml.StreamEndEvent:
            return
        elif kind is yaml.AliasEvent:
            raise NeedsNodes(0, reader.index)
        else:  # stream and document start
            continue
        start = event.start_mark
        mark = (start.line + 1) << 32 | (start.column + 1)
