"""Mappings and lists that remember where each of their entries was written.

Every key, value and list item of a config repo carries its line and column
so that any later stage can point at it. Kept as a dict of ``(line, col)``
tuples per mapping, that was two dicts and two tuples per key: about 3.4 KB
of each 6 KB resource, and most of the 2.1 GB that validating 180,000
resources took. Here a container keeps one ``array('Q')`` instead: its own
start, then the marks of its entries in insertion order, each line and
column packed into one 64-bit word (8 bytes a mark, no objects). Looking a
mark up walks the keys, which only happens when a diagnostic is written.
"""

from __future__ import annotations

from array import array
from typing import Any

Mark = tuple[int, int]  # 1-based line, column

_COL_BITS = 32
_COL_MASK = (1 << _COL_BITS) - 1


def pack(line: int, col: int) -> int:
    """One word for a 1-based line and column (each below 2**32)."""
    return line << _COL_BITS | col


def unpack(packed: int) -> Mark:
    return (packed >> _COL_BITS, packed & _COL_MASK)


class PosDict(dict[Any, Any]):
    """A mapping that knows the position of its own start, each key and each value.

    ``marks`` holds the start, then key and value mark of each entry added by
    :meth:`put`, in insertion order. Entries added later by plain assignment
    (a value filled in by a conversion) have no marks and position at the
    mapping; removing an entry removes its marks so the rest stay aligned.
    """

    __slots__ = ("marks",)

    def __init__(self, start: int = 0) -> None:
        super().__init__()
        self.marks = array("Q", (start,))

    @property
    def mark(self) -> Mark:
        return unpack(self.marks[0])

    def put(self, key: Any, value: Any, key_mark: int, value_mark: int) -> None:
        """Add or (a duplicate key) overwrite an entry together with its marks."""
        marks = self.marks
        if key in self:
            i = self._slot(key)
            dict.__setitem__(self, key, value)
            if i is not None:
                marks[i], marks[i + 1] = key_mark, value_mark
            return
        dict.__setitem__(self, key, value)
        marks.append(key_mark)
        marks.append(value_mark)

    def _slot(self, key: Any) -> int | None:
        """Index in ``marks`` of the key mark of ``key``, None when it has none."""
        for i, existing in enumerate(self):
            if existing == key:
                slot = 1 + 2 * i
                return slot if slot + 1 < len(self.marks) else None
        return None

    def key_mark(self, key: Any) -> Mark | None:
        slot = self._slot(key)
        return None if slot is None else unpack(self.marks[slot])

    def value_mark(self, key: Any) -> Mark | None:
        slot = self._slot(key)
        return None if slot is None else unpack(self.marks[slot + 1])

    @property
    def key_marks(self) -> dict[Any, Mark]:
        """Every key's mark (built on demand; for tests and diagnostics)."""
        return {k: unpack(self.marks[1 + 2 * i]) for i, k in enumerate(self)
                if 2 + 2 * i < len(self.marks)}

    @property
    def value_marks(self) -> dict[Any, Mark]:
        return {k: unpack(self.marks[2 + 2 * i]) for i, k in enumerate(self)
                if 2 + 2 * i < len(self.marks)}

    def rename_key(self, old: Any, new: Any) -> None:
        """Move the entry ``old`` to the end under the name ``new``, marks included."""
        slot = self._slot(old)
        marks = (self.marks[slot], self.marks[slot + 1]) if slot is not None else None
        value = self.pop(old)
        if marks is None:
            self[new] = value
        else:
            self.pop(new, None)
            self.put(new, value, *marks)

    def _forget(self, key: Any) -> None:
        slot = self._slot(key)
        if slot is not None:
            del self.marks[slot:slot + 2]

    def pop(self, key: Any, *default: Any) -> Any:
        if key in self:
            self._forget(key)
        return dict.pop(self, key, *default)

    def __delitem__(self, key: Any) -> None:
        self._forget(key)
        dict.__delitem__(self, key)

    def popitem(self) -> tuple[Any, Any]:
        key = next(reversed(self))
        return key, self.pop(key)

    def clear(self) -> None:
        dict.clear(self)
        del self.marks[1:]


class PosList(list[Any]):
    """A sequence that knows the position of its start and of each item."""

    __slots__ = ("marks",)

    def __init__(self, start: int = 0) -> None:
        super().__init__()
        self.marks = array("Q", (start,))

    @property
    def mark(self) -> Mark:
        return unpack(self.marks[0])

    def add(self, value: Any, mark: int) -> None:
        self.append(value)
        self.marks.append(mark)

    def item_mark(self, index: int) -> Mark | None:
        return unpack(self.marks[index + 1]) if 0 <= index < len(self.marks) - 1 else None

    @property
    def item_marks(self) -> list[Mark]:
        return [unpack(m) for m in self.marks[1:]]
