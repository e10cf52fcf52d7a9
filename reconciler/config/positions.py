"""Mappings and lists that remember where each of their entries was written.

Every key, value and list item of a config repo carries its line and column
so that any later stage can point at it. Kept as a dict of ``(line, col)``
tuples per mapping, that was two dicts and two tuples per key: about 3.4 KB
of each 6 KB resource, and most of the 2.1 GB that validating 180,000
resources took. Here a container keeps one run of 64-bit words instead:
its own start, then the marks of its entries in insertion order, each line
and column packed into one word (8 bytes a mark, no objects; a mapping
entry's key and value usually share one word, see :func:`_entry`). The loader
appends to an ``array('Q')`` and, once the container is complete, seals it
into ``bytes`` of exactly that size (an array carries twice the header and
spare room for growth: ~60 bytes a container, ~60 MB for 180,000 resources).
Looking a mark up walks the keys, which only happens when a diagnostic is
written; changing a sealed container turns its marks back into an array.
"""

from __future__ import annotations

import sys
from array import array
from typing import Any

Mark = tuple[int, int]  # 1-based line, column
YamlPath = tuple[str | int, ...]  # keys and list indexes from a document's root

_COL_BITS = 32
_COL_MASK = (1 << _COL_BITS) - 1


def pack(line: int, col: int) -> int:
    """One word for a 1-based line and column (each below 2**32)."""
    return line << _COL_BITS | col


def unpack(packed: int) -> Mark:
    return (packed >> _COL_BITS, packed & _COL_MASK)


Marks = array | bytes  # open while the loader fills it, sealed afterwards


def _word(marks: Marks, i: int) -> int:
    if marks.__class__ is array:
        return int(marks[i])
    return int.from_bytes(marks[8 * i:8 * i + 8], sys.byteorder)


def _count(marks: Marks) -> int:
    return len(marks) if marks.__class__ is array else len(marks) // 8


def _opened(marks: Marks) -> array:
    if marks.__class__ is array:
        return marks  # type: ignore[return-value]
    words = array("Q")
    words.frombytes(marks)
    return words


# One word holds both marks of a mapping entry when the value starts at most 15
# lines below its key and both columns are below 65,536 -- every entry of a
# normal config. Layout: key line (28 bits), key column (16), value line minus
# key line (4), value column (16). A mapping with an entry that does not fit
# keeps two full words per entry, flagged in the top bit of its start word.
_WIDE = 1 << 63


def _entry(key_mark: int, value_mark: int) -> int | None:
    """``key_mark`` and ``value_mark`` (see :func:`pack`) in one word, if they fit."""
    key_line, key_col = key_mark >> _COL_BITS, key_mark & _COL_MASK
    value_line, value_col = value_mark >> _COL_BITS, value_mark & _COL_MASK
    below = value_line - key_line
    if key_line >> 28 or key_col >> 16 or value_col >> 16 or not 0 <= below < 16:
        return None
    return key_line << 36 | key_col << 20 | below << 16 | value_col


def _split(word: int) -> tuple[int, int]:
    key_line = word >> 36
    key_mark = pack(key_line, word >> 20 & 0xFFFF)
    return key_mark, pack(key_line + (word >> 16 & 0xF), word & 0xFFFF)


class _Marked:
    """The start mark and sealing shared by :class:`PosDict` and :class:`PosList`."""

    __slots__ = ()
    marks: Marks

    def __init__(self, start: int = 0) -> None:
        super().__init__()
        self.marks = array("Q", (start,))

    @property
    def mark(self) -> Mark:
        return unpack(_word(self.marks, 0) & ~_WIDE)

    def seal(self) -> int:
        """Store the marks in exactly the room they need; returns the packed start."""
        marks = self.marks
        if marks.__class__ is array:
            self.marks = marks.tobytes()  # type: ignore[union-attr]
        return _word(marks, 0) & ~_WIDE


class PosDict(_Marked, dict[Any, Any]):
    """A mapping that knows the position of its own start, each key and each value.

    ``marks`` holds the start, then the marks of each entry added by
    :meth:`put` in insertion order: one word per entry (see :func:`_entry`),
    or two when the start word has the wide flag. Entries added later by
    plain assignment (a value filled in by a conversion) have no marks and
    position at the mapping; removing an entry removes its marks so the rest
    stay aligned.
    """

    __slots__ = ("marks",)

    def _width(self) -> int:
        return 2 if _word(self.marks, 0) & _WIDE else 1

    def _widen(self) -> array:
        """Switch to two words per entry (an entry that does not fit in one)."""
        old = _opened(self.marks)
        wide = array("Q", (old[0] | _WIDE,))
        for word in old[1:]:
            wide.extend(_split(word))
        self.marks = wide
        return wide

    def put(self, key: Any, value: Any, key_mark: int, value_mark: int) -> None:
        """Add or (a duplicate key) overwrite an entry together with its marks."""
        marks = self.marks = _opened(self.marks)
        word = None if marks[0] & _WIDE else _entry(key_mark, value_mark)
        if word is None and not marks[0] & _WIDE:
            marks = self._widen()
        slot = self._slot(key) if key in self else None
        dict.__setitem__(self, key, value)
        if word is None:
            if slot is None:
                marks.extend((key_mark, value_mark))
            else:
                marks[slot], marks[slot + 1] = key_mark, value_mark
        elif slot is None:
            marks.append(word)
        else:
            marks[slot] = word

    def _slot(self, key: Any) -> int | None:
        """Index in ``marks`` of the first word of ``key``'s marks, None when it has none."""
        width = self._width()
        for i, existing in enumerate(self):
            if existing == key:
                slot = 1 + width * i
                return slot if slot + width <= _count(self.marks) else None
        return None

    def _marks_at(self, slot: int) -> tuple[int, int]:
        if self._width() == 2:
            return _word(self.marks, slot), _word(self.marks, slot + 1)
        return _split(_word(self.marks, slot))

    def key_mark(self, key: Any) -> Mark | None:
        slot = self._slot(key)
        return None if slot is None else unpack(self._marks_at(slot)[0])

    def value_mark(self, key: Any) -> Mark | None:
        slot = self._slot(key)
        return None if slot is None else unpack(self._marks_at(slot)[1])

    @property
    def key_marks(self) -> dict[Any, Mark]:
        """Every key's mark, for tests (each lookup walks the keys)."""
        return {k: m for k in self if (m := self.key_mark(k)) is not None}

    @property
    def value_marks(self) -> dict[Any, Mark]:
        return {k: m for k in self if (m := self.value_mark(k)) is not None}

    def rename_key(self, old: Any, new: Any) -> None:
        """Move the entry ``old`` to the end under the name ``new``, marks included."""
        slot = self._slot(old)
        marks = None if slot is None else self._marks_at(slot)
        value = self.pop(old)
        if marks is None:
            self[new] = value
        else:
            self.pop(new, None)
            self.put(new, value, *marks)

    def _forget(self, key: Any) -> None:
        slot = self._slot(key)
        if slot is not None:
            marks = self.marks = _opened(self.marks)
            del marks[slot:slot + self._width()]

    def pop(self, key: Any, *default: Any) -> Any:
        if key in self:
            self._forget(key)
        return dict.pop(self, key, *default)

    def __delitem__(self, key: Any) -> None:
        self._forget(key)
        dict.__delitem__(self, key)


class PosList(_Marked, list[Any]):
    """A sequence that knows the position of its start and of each item."""

    __slots__ = ("marks",)

    def add(self, value: Any, mark: int) -> None:
        self.append(value)
        marks = self.marks = _opened(self.marks)
        marks.append(mark)

    def item_mark(self, index: int) -> Mark | None:
        if 0 <= index < _count(self.marks) - 1:
            return unpack(_word(self.marks, index + 1))
        return None

    @property
    def item_marks(self) -> list[Mark]:
        return [unpack(_word(self.marks, i)) for i in range(1, _count(self.marks))]
