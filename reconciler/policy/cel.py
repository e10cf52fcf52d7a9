"""Compile CEL expressions once into fast Python closures.

cel-python parses (its grammar and syntax errors are the reference), but its
interpreter costs ~200 us per evaluation plus ~40 us to wrap a resource in
``celtypes``; with thousands of resources times several policies that is
seconds. So the parse tree is compiled here into closures that work on the
plain JSON of a resource (a few microseconds each), with CEL's semantics from
:mod:`reconciler.policy.cel_ops`.

Constructs outside that subset (timestamps, durations, bytes, unsigned
ints, ``type()``, message literals) still work: such an expression runs on
cel-python's own interpreter instead (:mod:`reconciler.policy.cel_interpreted`),
only slower. The comprehension macros are in :mod:`reconciler.policy.cel_macros`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partialmethod
from importlib.metadata import version
from pathlib import Path
from typing import Any

import celpy
import lark
from celpy.celparser import CELParser
from celpy.evaluation import celstr

from reconciler.policy import cel_ops as ops
from reconciler.policy.cel_interpreted import interpreted
from reconciler.policy.cel_macros import MACROS
from reconciler.policy.cel_ops import Activation, CelError, Node
from reconciler.policy.functions import HELPERS

FUNCTIONS: dict[str, Callable[..., Any]] = {**ops.BUILTINS, **HELPERS}

# Names cel-python knows that this compiler leaves to it (see module docstring).
_CELPY_ONLY = (frozenset(celpy.evaluation.base_functions) | {"dyn"}) - frozenset(FUNCTIONS)
_TYPE_IDENTS = frozenset({"int", "uint", "double", "bool", "string", "bytes", "list", "map",
                          "null_type", "type"})
# Grammar rules that only wrap their single child.
_PASS_THROUGH = frozenset({"expr", "conditionalor", "conditionaland", "relation", "addition",
                           "multiplication", "unary", "member", "primary"})


class CelCompileError(Exception):
    """A syntax error or an unknown name; ``line``/``column`` are 1-based in the expression."""

    def __init__(self, message: str, line: int = 1, column: int = 1, context: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.context = context


class _Unsupported(Exception):
    """The expression needs cel-python's interpreter."""


@dataclass(frozen=True, slots=True)
class Program:
    """A compiled expression; call it with the activation (variable name -> JSON value)."""

    source: str
    fast: bool  # False: runs on cel-python's interpreter
    run: Node
    # (variable, field) pairs read, e.g. ("spec", "security"); lets the engine
    # catch a misspelt field once, at the policy. Empty on the slow path.
    fields: frozenset[tuple[str, str]] = frozenset()

    def __call__(self, activation: Activation) -> Any:
        return self.run(activation)


@dataclass(slots=True)
class _Const:
    """A constant sub-expression, so operators can fold it at compile time."""

    value: Any

    def __call__(self, activation: Activation) -> Any:
        return self.value


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    # Lark also checks a hash of grammar, options and its own version inside the file
    return Path(base) / "reconciler" / f"cel-lalr-{version('cel-python')}-{lark.__version__}.pickle"


def _build_parser() -> None:
    """Build cel-python's LALR parser with Lark's on-disk cache of the grammar analysis.

    Building the tables costs ~0.4 s of every `validate`/`plan` process; the cache
    brings that to ~0.05 s. The options are cel-python's own (its ``CELParser``
    builds the same ``Lark`` without ``cache``; cel-python is capped for this).
    Lark checks the grammar and options hash in the file and rebuilds on any
    mismatch or unreadable file; the file lives in the user's own cache folder,
    never a shared temp folder, because Lark reads it with pickle.
    """
    callbacks = CELParser.__new__(CELParser)
    cache = _cache_file()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        use_cache: str | bool = str(cache) if os.access(cache.parent, os.W_OK) else False
    except OSError:
        use_cache = False
    CELParser.CEL_PARSER = lark.Lark(
        (Path(celpy.celparser.__file__).parent / "cel.lark").read_text(),
        parser="lalr", start="expr", debug=True, g_regex_flags=re.M,
        lexer_callbacks={"IDENT": callbacks.ambiguous_literals}, propagate_positions=True,
        maybe_placeholders=False, priority="invert", tree_class=lark.Tree, cache=use_cache)


def parse(source: str) -> lark.Tree:
    if CELParser.CEL_PARSER is None:
        _build_parser()
    try:
        return CELParser().parse(source)
    except celpy.CELParseError as exc:
        line = getattr(exc, "line", None) or 1
        column = getattr(exc, "column", None) or 1
        context = str(exc.args[0]).rstrip("\n") if exc.args else ""
        raise CelCompileError(f"CEL syntax error at line {line}, column {column}: "
                              f"{_problem(source)}", line, column, context) from None


def _problem(source: str) -> str:
    """What the parser tripped over; cel-python's own message is only a caret."""
    parser = CELParser.CEL_PARSER
    try:
        if parser is not None:
            parser.parse(source)
    except lark.exceptions.UnexpectedToken as exc:
        if exc.token.type == "$END":
            return "unexpected end of expression"
        return f"unexpected {str(exc.token)[:20]!r}"
    except lark.exceptions.UnexpectedCharacters as exc:
        return f"unexpected character {exc.char!r}"
    except lark.exceptions.LarkError:
        pass
    return "invalid expression"


@lru_cache(maxsize=1024)
def compile_expression(source: str, variables: frozenset[str]) -> Program:
    """Compile ``source`` once; ``variables`` are the names the activation provides.

    Raises :class:`CelCompileError` for syntax errors and names that can never
    resolve, so a typo is reported once at the policy rather than once per resource.
    """
    try:
        tree = parse(source)
        compiler = _Compiler(source, variables)
        try:
            return Program(source, True, compiler.compile(tree), frozenset(compiler.fields))
        except _Unsupported:
            return Program(source, False, interpreted(tree))
    except RecursionError:
        raise CelCompileError("expression is nested too deeply") from None


def _unwrap(tree: Any) -> Any:
    while (isinstance(tree, lark.Tree) and tree.data in _PASS_THROUGH
           and len(tree.children) == 1 and isinstance(tree.children[0], lark.Tree)):
        tree = tree.children[0]
    return tree


class _Compiler:
    def __init__(self, source: str, variables: frozenset[str]) -> None:
        self.source = source
        self.variables = variables
        self.bound: set[str] = set()  # macro variables currently in scope
        self.fields: set[tuple[str, str]] = set()

    def fail(self, tree: lark.Tree | lark.Token, message: str) -> CelCompileError:
        if isinstance(tree, lark.Token):
            return CelCompileError(message, tree.line or 1, tree.column or 1)
        return CelCompileError(message, getattr(tree.meta, "line", 1),
                               getattr(tree.meta, "column", 1))

    def text(self, tree: lark.Tree) -> str:
        meta = tree.meta
        if getattr(meta, "empty", True):
            return "value"
        return self.source[meta.start_pos : meta.end_pos]

    def compile(self, tree: lark.Tree) -> Node:
        tree = _unwrap(tree)
        method = getattr(self, "c_" + str(tree.data), None)
        if method is None:
            raise _Unsupported(tree.data)
        node: Node = method(tree)
        return node

    # -- logic ---------------------------------------------------------------
    def c_expr(self, tree: lark.Tree) -> Node:
        cond, then, other = (self.compile(c) for c in tree.children)
        where = self.text(tree.children[0])

        def conditional(act: Activation) -> Any:
            c = cond(act)
            if c is True:
                return then(act)
            if c is False:
                return other(act)
            raise CelError(f"the condition of ?: ({where}) is {ops.type_name(c)}, not bool")

        return conditional

    def _logic(self, tree: lark.Tree, *, absorbing: bool) -> Node:
        left, right = (self.compile(c) for c in tree.children)
        op = "||" if absorbing else "&&"

        # CEL's || and && are commutative: an error on one side is absorbed when
        # the other side alone decides the result (true for ||, false for &&).
        def logic(act: Activation) -> bool:
            error: CelError | None = None
            try:
                a = left(act)
                if a is absorbing:
                    return absorbing
                if a is not (not absorbing):
                    error = ops.no_overload(op, a)
            except CelError as exc:
                error = exc
            b = right(act)
            if b is absorbing:
                return absorbing
            if error is not None:
                raise error
            if b is not (not absorbing):
                raise ops.no_overload(op, b)
            return not absorbing

        return logic

    c_conditionalor = partialmethod(_logic, absorbing=True)
    c_conditionaland = partialmethod(_logic, absorbing=False)

    def c_unary(self, tree: lark.Tree) -> Node:
        op, operand = tree.children
        inner = self.compile(operand)
        fn = ops.logical_not if op.data == "unary_not" else ops.negate
        if isinstance(inner, _Const):
            try:
                return _Const(fn(inner.value))
            except CelError:
                pass  # keep the error for evaluation time, where it is reported
        return lambda act: fn(inner(act))

    # -- binary operators ----------------------------------------------------
    def c_relation(self, tree: lark.Tree) -> Node:
        op_tree, right_tree = tree.children
        (left_tree,) = op_tree.children
        left, right = self.compile(left_tree), self.compile(right_tree)
        kind = str(op_tree.data)
        fast = self._fast_compare(kind, left, right)
        if fast is not None:
            return fast
        fn = _BINARY[kind]
        return lambda act: fn(left(act), right(act))

    c_addition = c_multiplication = c_relation

    def _fast_compare(self, kind: str, left: Node, right: Node) -> Node | None:
        """``x == "literal"`` and ``x in ["a", "b"]`` without the generic equality."""
        if not isinstance(right, _Const) or isinstance(left, _Const):
            return None
        value = right.value
        if kind in ("relation_eq", "relation_ne") and (value is None or type(value) in (str,
                                                                                       bool)):
            # Python agrees with CEL here: "a" == 1 is False, None is only None.
            negate = kind == "relation_ne"
            if type(value) is str:
                return (lambda act: left(act) != value) if negate else (
                    lambda act: left(act) == value)
            return (lambda act: left(act) is not value) if negate else (
                lambda act: left(act) is value)
        if kind == "relation_in" and type(value) is list and all(type(v) is str for v in value):
            members = frozenset(value)

            def member(act: Activation) -> bool:
                item = left(act)
                return type(item) is str and item in members

            return member
        return None

    # -- member access -------------------------------------------------------
    def c_member_dot(self, tree: lark.Tree) -> Node:
        receiver, name_token = tree.children
        name = str(name_token)
        # A chain of field names from a variable (spec.auth.type) compiles to
        # one closure that walks the dicts, the most common thing policies do.
        chain = self._chain(tree)
        if chain is not None:
            root, names, texts = chain
            self._check_name(root, tree)
            self._record(root, names[0])

            def walk(act: Activation) -> Any:
                value = act[root]
                for field, where in zip(names, texts, strict=True):
                    if type(value) is dict and field in value:
                        value = value[field]
                    else:
                        value = ops.select(value, field, where)
                return value

            return walk
        inner = self.compile(receiver)
        where = self.text(receiver)
        return lambda act: ops.select(inner(act), name, where)

    def _chain(self, tree: lark.Tree) -> tuple[str, list[str], list[str]] | None:
        names: list[str] = []
        texts: list[str] = []
        node = _unwrap(tree)
        while node.data == "member_dot":
            receiver, name_token = node.children
            names.append(str(name_token))
            texts.append(self.text(receiver))
            node = _unwrap(receiver)
        if node.data != "ident":
            return None
        names.reverse()
        texts.reverse()
        return str(node.children[0]), names, texts

    def c_member_index(self, tree: lark.Tree) -> Node:
        receiver, key_tree = tree.children
        inner, key = self.compile(receiver), self.compile(key_tree)
        where = self.text(receiver)
        return lambda act: ops.index(inner(act), key(act), where)

    def c_member_dot_arg(self, tree: lark.Tree) -> Node:
        receiver, name_token, *rest = tree.children
        name = str(name_token)
        args = rest[0].children if rest else []
        if name in MACROS:
            return self._macro(tree, name, receiver, args)
        target = self.compile(receiver)
        compiled = [self.compile(a) for a in args]
        fn = self._function(name, name_token)
        return self._call(name, fn, [target, *compiled])

    def c_ident_arg(self, tree: lark.Tree) -> Node:
        name_token, *rest = tree.children
        name = str(name_token)
        args = rest[0].children if rest else []
        if name == "has":
            return self._has(tree, args)
        if name in MACROS:
            raise self.fail(name_token, f"{name}() must be called on a list or map: x.{name}(...)")
        fn = self._function(name, name_token)
        return self._call(name, fn, [self.compile(a) for a in args])

    def _function(self, name: str, token: lark.Token) -> Callable[..., Any]:
        fn = FUNCTIONS.get(name)
        if fn is not None:
            return fn
        if name in _CELPY_ONLY:
            raise _Unsupported(name)
        known = ", ".join(sorted(FUNCTIONS))
        raise self.fail(token, f"unknown function {name!r}; known: {known}")

    def _call(self, name: str, fn: Callable[..., Any], args: list[Node]) -> Node:
        def call(act: Activation) -> Any:
            values = [a(act) for a in args]
            try:
                return fn(*values)
            except CelError:
                raise
            except (TypeError, ValueError, AttributeError) as exc:
                raise ops.no_overload(name, *values) from exc

        return call

    def _has(self, tree: lark.Tree, args: list[Any]) -> Node:
        target = _unwrap(args[0]) if len(args) == 1 else None
        if target is None or target.data != "member_dot":
            raise self.fail(tree, "has() takes one field selection, e.g. has(metadata.labels.env)")
        receiver, name_token = target.children
        inner = self.compile(receiver)
        name = str(name_token)
        root = _unwrap(receiver)
        if root.data == "ident":
            self._record(str(root.children[0]), name)
        where = self.text(receiver)

        def has(act: Activation) -> bool:
            value = inner(act)
            if type(value) is dict:
                return name in value
            raise CelError(f"has() needs a map, but {where} is {ops.type_name(value)}")

        return has

    def _macro(self, tree: lark.Tree, name: str, receiver: Any, args: list[Any]) -> Node:
        var_tree = _unwrap(args[0]) if args else None
        if var_tree is None or var_tree.data != "ident" or len(args) not in (2, 3):
            raise self.fail(tree, f"{name}() takes a variable name and an expression: "
                                  f"x.{name}(v, v > 0)")
        if len(args) == 3 and name != "map":
            raise self.fail(tree, f"{name}() takes two arguments")
        var = str(var_tree.children[0])
        target = self.compile(receiver)
        where = self.text(receiver)
        was_bound = var in self.bound
        self.bound.add(var)
        try:
            bodies = [self.compile(a) for a in args[1:]]
        finally:
            if not was_bound:
                self.bound.discard(var)
        return MACROS[name](target, var, bodies, where)

    # -- leaves --------------------------------------------------------------
    def c_ident(self, tree: lark.Tree) -> Node:
        name = str(tree.children[0])
        self._check_name(name, tree)
        return lambda act: act[name]

    def _record(self, root: str, field: str) -> None:
        if root in self.variables and root not in self.bound:
            self.fields.add((root, field))

    def _check_name(self, name: str, tree: lark.Tree) -> None:
        scope = self.variables | self.bound
        if name in scope:
            return
        if name in _TYPE_IDENTS:
            raise _Unsupported(name)
        known = ", ".join(sorted(scope))
        raise self.fail(tree, f"unknown name {name!r}; the variables are {known}")

    def c_paren_expr(self, tree: lark.Tree) -> Node:
        return self.compile(tree.children[0])

    def c_list_lit(self, tree: lark.Tree) -> Node:
        items = [self.compile(c) for c in tree.children[0].children] if tree.children else []
        if all(isinstance(i, _Const) for i in items):
            return _Const([i.value for i in items])  # type: ignore[attr-defined]
        return lambda act: [i(act) for i in items]

    def c_map_lit(self, tree: lark.Tree) -> Node:
        parts = [self.compile(c) for c in tree.children[0].children] if tree.children else []
        pairs = list(zip(parts[::2], parts[1::2], strict=True))

        def build(act: Activation) -> dict[Any, Any]:
            result: dict[Any, Any] = {}
            for k, v in pairs:
                key = k(act)
                if type(key) not in (str, int, bool):
                    raise CelError(f"a map key must be string, int or bool, not "
                                   f"{ops.type_name(key)}")
                result[key] = v(act)
            return result

        return build

    def c_literal(self, tree: lark.Tree) -> Node:
        token: lark.Token = tree.children[0]
        kind, text = token.type, str(token)
        if kind == "INT_LIT":
            return _Const(ops.check_int(int(text, 16 if "x" in text else 10)))
        if kind == "FLOAT_LIT":
            return _Const(float(text))
        if kind in ("STRING_LIT", "MLSTRING_LIT"):
            return _Const(str(celstr(token)))
        if kind == "BOOL_LIT":
            return _Const(text == "true")
        if kind == "NULL_LIT":
            return _Const(None)
        raise _Unsupported(kind)  # bytes, unsigned ints


_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "relation_eq": ops.equals,
    "relation_ne": lambda a, b: not ops.equals(a, b),
    "relation_lt": ops.less,
    "relation_le": ops.less_equal,
    "relation_gt": ops.greater,
    "relation_ge": ops.greater_equal,
    "relation_in": ops.contained,
    "addition_add": ops.add,
    "addition_sub": ops.subtract,
    "multiplication_mul": ops.multiply,
    "multiplication_div": ops.divide,
    "multiplication_mod": ops.modulo,
}
