"""Why a config file could not be read, in plain words at file:line:col.

libyaml's errors name the token it choked on, not what to fix; these
functions turn them (and undecodable bytes, values their type cannot hold,
and the limits of :mod:`reconciler.config.limits`) into one diagnostic each.
"""

from __future__ import annotations

import sys

import yaml

from reconciler.config.diagnostics import Diagnostic
from reconciler.config.limits import LimitExceeded

# What PyYAML's scalar constructors raise on values their tag cannot hold:
# int('9' * 5000) (Python's digit limit), 2001-02-30, `!!bool maybe`, `!!timestamp x`.
SCALAR_ERRORS = (ValueError, KeyError, AttributeError, TypeError, OverflowError)
# Python's int_max_str_digits (0 when someone lifted it: keep the default then)
MAX_INT_DIGITS = sys.get_int_max_str_digits() or 4300
UTF8_HINT = "config files must be readable UTF-8 text"


class UnreadableValue(yaml.constructor.ConstructorError):
    """A scalar that parses but that its (possibly implicit) type cannot hold."""


def unreadable_value(node: yaml.Node, exc: Exception) -> UnreadableValue:
    """A positioned YAML error for a scalar its tag cannot construct."""
    tag = node.tag.rsplit(":", 1)[-1]
    raw = str(node.value)
    if isinstance(exc, ValueError) and "digits" in str(exc):
        problem = f"this number has more than {MAX_INT_DIGITS} digits"
    elif not isinstance(node, yaml.ScalarNode):
        shape = "a mapping" if isinstance(node, yaml.MappingNode) else "a list"
        problem = f"{shape} cannot be read as {tag}"
    else:
        shown = repr(raw) if len(raw) <= 40 else repr(raw[:37] + "...")
        problem = f"{shown} is not a valid {tag}"
    return UnreadableValue(None, None, problem, node.start_mark)


def decode_file(data: bytes, file: str) -> str | Diagnostic:
    """The text of a config file, or where and why it is not UTF-8.

    A UTF-8 byte order mark is dropped (editors on Windows write one); UTF-16
    files are named as such since their error would otherwise be byte 0.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return Diagnostic(code="file-unreadable", file=file, line=1, col=1,
                          message="the file is UTF-16 text, not UTF-8",
                          hint=UTF8_HINT)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = exc.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line_start = data.rfind(b"\n", 0, start) + 1
        # the column in characters, as an editor shows it
        col = len(data[line_start:start].decode("utf-8", errors="replace")) + 1
        return Diagnostic(code="file-unreadable", file=file, line=data.count(b"\n", 0, start) + 1,
                          col=col, message=f"byte 0x{data[start]:02X} is not UTF-8 text",
                          hint=UTF8_HINT)


def yaml_error_diagnostic(exc: LimitExceeded | yaml.YAMLError, text: str, file: str) -> Diagnostic:
    """One diagnostic for anything that stopped a file from loading."""
    if isinstance(exc, LimitExceeded):
        return Diagnostic(code=exc.code, file=file, line=exc.mark[0], col=exc.mark[1],
                          message=exc.message, hint=exc.hint)
    if isinstance(exc, UnreadableValue) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return Diagnostic(code="yaml-value", file=file, line=mark.line + 1, col=mark.column + 1,
                          message=f"cannot read YAML: {exc.problem}",
                          hint="quote it to keep it as text, or correct the value")
    if isinstance(exc, yaml.MarkedYAMLError):
        return _syntax_diagnostic(exc, text, file)
    if isinstance(exc, yaml.reader.ReaderError):  # control characters and the like
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character or "?")
        return Diagnostic(
            code="yaml-syntax", file=file, line=line, col=col,
            message=f"cannot read YAML: character #x{char:04X} is not allowed ({exc.reason})",
            hint="remove the character or write it as an escape inside double quotes")
    return Diagnostic(code="yaml-syntax", file=file, message=f"cannot read YAML: {exc}")


def _syntax_diagnostic(exc: yaml.MarkedYAMLError, text: str, file: str) -> Diagnostic:
    """Plain words for a libyaml error, at the position where the fix goes."""
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "invalid YAML"
    context, start = exc.context, exc.context_mark
    if mark is not None and _tab_before(text, mark.line, mark.column):
        # libyaml's "found character that cannot start any token" does not name the tab
        return Diagnostic(code="yaml-syntax", file=file, line=mark.line + 1, col=mark.column + 1,
                          message="YAML syntax error: tab character in indentation",
                          hint="indent with spaces, not tabs")
    if context == "while scanning a quoted scalar" and start is not None:
        # the end of the file is where it was noticed; the opening quote is what to fix
        return Diagnostic(code="yaml-syntax", file=file, line=start.line + 1,
                          col=start.column + 1,
                          message="YAML syntax error: this quoted value is never closed",
                          hint="add the matching closing quote")
    message = f"YAML syntax error: {problem}"
    if (context and start is not None and mark is not None
            and (start.line, start.column) != (mark.line, mark.column)):
        message += f" ({context} that starts at line {start.line + 1}, column {start.column + 1})"
    line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
    return Diagnostic(code="yaml-syntax", file=file, line=line, col=col, message=message,
                      hint=_syntax_hint(f"{problem} {context or ''}"))


def _tab_before(text: str, line: int, column: int) -> bool:
    """True when a tab sits in the indentation of ``line`` up to ``column`` (0-based)."""
    lines = text.splitlines()
    if not 0 <= line < len(lines):
        return False
    head = lines[line][: column + 1]
    return "\t" in head and not head.lstrip(" \t")[:-1]


# (words all found in libyaml's problem and context, hint); the first match wins
_SYNTAX_HINTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("tab character",), "indent with spaces, not tabs"),  # not "unconstructable"
    (("flow sequence",), "close the '[' with ']' and separate the items with ','"),
    (("flow mapping",), "close the '{' with '}' and separate the entries with ','"),
    (("expected key",), "the keys of one mapping must start in the same column"),
    (("block mapping", "<block end>"), "the keys of one mapping must start in the same column"),
    (("mapping values are not allowed",),
     "quote the value if it contains ': ', or fix the indentation"),
    (("could not find expected ':'",), "each line of a mapping needs 'key: value'"),
)


def _syntax_hint(problem: str) -> str:
    return next((hint for words, hint in _SYNTAX_HINTS if all(w in problem for w in words)),
                "check indentation, quotes and brackets around this position")
