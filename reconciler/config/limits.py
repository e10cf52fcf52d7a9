"""What one config file may not exceed, checked before anything recurses over it.

Two shapes of hostile or broken YAML would otherwise crash `validate` or eat
the machine's memory:

- **Deep nesting.** libyaml's parser is event based and never recurses, but
  its node composer (used for anchors, tags and merge keys) does, in C: a
  few hundred thousand ``[`` crash the process. PyYAML's constructor, pydantic
  and ``json`` recurse in Python and raise RecursionError after about 1000
  levels. The deepest real resource is about 8 levels (document, spec, rules,
  a rule, conditions, a condition, values), so :data:`MAX_DEPTH` = 64 leaves
  eight times that for anything legitimate while staying far below where any
  consumer recurses into trouble (~3 Python frames a level in the
  constructor). Depth is counted on events, before any node is composed.
- **Alias expansion ("billion laughs").** Nine anchors of nine aliases each
  are a few hundred bytes of YAML and 387 million values once expanded. The
  constructor shares the aliased objects, but every later stage (models,
  canonical JSON, plans) copies them. So the node graph of each document is
  measured with aliases expanded, once per node, and a file may expand to at
  most :data:`ALIAS_ALLOWANCE` values plus :data:`ALIAS_RATIO` times the
  values it writes out. An alias to a value that contains it (a loop) is
  refused the same way, with its own message.
"""

from __future__ import annotations

import yaml

from reconciler.config.positions import Mark

MAX_DEPTH = 64
ALIAS_ALLOWANCE = 10_000
ALIAS_RATIO = 10


class LimitExceeded(Exception):
    """A limit of this module was passed; the loader turns it into one diagnostic."""

    def __init__(self, code: str, mark: Mark, message: str, hint: str) -> None:
        super().__init__(message)
        self.code = code
        self.mark = mark
        self.message = message
        self.hint = hint


def _mark(mark: yaml.Mark) -> Mark:
    return (mark.line + 1, mark.column + 1)


def too_deep(mark: yaml.Mark) -> LimitExceeded:
    return LimitExceeded(
        "nesting-too-deep", _mark(mark),
        f"nested more than {MAX_DEPTH} levels deep here",
        "a resource needs fewer than 10 levels; check for unbalanced brackets or "
        "runaway indentation")


def first_too_deep(loader: yaml.CSafeLoader, depth: int,
                   index: int) -> tuple[int, yaml.Mark] | None:
    """Read the remaining events of ``loader`` and find where nesting passes the limit.

    ``depth`` is the nesting already open and ``index`` the document being read
    when the caller stopped. Returns the index of the first document that is too
    deep and where, or None. Syntax errors end the scan quietly: reading the
    file again reports them in their place.
    """
    start_events = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
    end_events = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
    try:
        while True:
            event = loader.get_event()
            if isinstance(event, start_events):
                depth += 1
                if depth > MAX_DEPTH:
                    return index, event.start_mark
            elif isinstance(event, end_events):
                depth -= 1
            elif isinstance(event, yaml.DocumentEndEvent):
                index += 1
                depth = 0
            elif isinstance(event, yaml.StreamEndEvent):
                return None
    except yaml.YAMLError:
        return None


class AliasBudget:
    """Counts the values of one file's documents with aliases expanded (see module doc)."""

    __slots__ = ("expanded", "written")

    def __init__(self) -> None:
        self.written = 0  # distinct nodes, as written in the file
        self.expanded = 0  # nodes once every alias is replaced by what it names

    def check(self, root: yaml.Node) -> None:
        """Raise :class:`LimitExceeded` if ``root`` loops, is too deep or expands too much."""
        # id(node) -> (values in its subtree once expanded, levels of nesting in it)
        seen: dict[int, tuple[int, int]] = {}
        open_nodes: set[int] = set()

        def measure(node: yaml.Node, depth: int) -> tuple[int, int]:
            key = id(node)
            known = seen.get(key)
            if known is not None:  # an alias: its subtree again, here
                size, height = known
                if depth + height - 1 > MAX_DEPTH:
                    raise too_deep(node.start_mark)
                self.expanded += size
                limit = ALIAS_ALLOWANCE + ALIAS_RATIO * self.written
                if self.expanded > limit:
                    raise LimitExceeded(
                        "alias-expansion", _mark(node.start_mark),
                        f"aliases expand this file to more than {limit:,} values; the value "
                        "anchored here is repeated by aliases of aliases",
                        "write the values out instead of nesting aliases of aliases")
                return known
            if key in open_nodes:
                raise LimitExceeded(
                    "alias-loop", _mark(node.start_mark),
                    "an alias refers to the value anchored here from inside it (a loop)",
                    "point the alias at a value outside this one, or write the value out")
            self.written += 1
            self.expanded += 1
            if not isinstance(node, yaml.CollectionNode):
                seen[key] = (1, 0)
                return 1, 0
            if depth > MAX_DEPTH:  # only through aliases: plain nesting was checked
                raise too_deep(node.start_mark)
            children: list[yaml.Node] = ([n for pair in node.value for n in pair]
                                         if isinstance(node, yaml.MappingNode) else node.value)
            open_nodes.add(key)
            size, height = 1, 0
            for child in children:
                child_size, child_height = measure(child, depth + 1)
                size += child_size
                height = max(height, child_height)
            open_nodes.discard(key)
            seen[key] = (size, height + 1)
            return size, height + 1

        measure(root, 1)
