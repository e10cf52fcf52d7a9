"""The CEL compiler: semantics, agreement with cel-python, errors, helpers."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.policy.cel import CelCompileError, compile_expression, parse
from reconciler.policy.cel_interpreted import interpreted
from reconciler.policy.cel_ops import CelError
from reconciler.policy.functions import domain_of, host_of, is_exchange_online, is_microsoft_host
from reconciler.policy.models import VARIABLES

DATA: dict[str, Any] = {
    "apiVersion": "reconciler.dev/v1",
    "kind": "OutgoingServer",
    "metadata": {"name": "mail", "namespace": "default", "labels": {"env": "prod"}},
    "spec": {
        "unset": None,
        "limit": 30.0,
        "count": 3,
        "text": "Hello",
        "items": [1, 2],
        "map": {"k": "v"},
        "flag": True,
        "host": "smtp.office365.com",
    },
}


def run(source: str, data: dict[str, Any] = DATA) -> Any:
    return compile_expression(source, VARIABLES)(data)


def error(source: str) -> str:
    with pytest.raises(CelError) as info:
        run(source)
    return str(info.value)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('spec.text == "Hello"', True),
        ("spec.unset == null", True),
        ('spec.unset != "x"', True),
        ("spec.limit > 25", True),  # double vs int compares by value
        ("spec.limit == 30", True),
        ("spec.count == 3.0", True),
        ("spec.flag == 1", False),  # bool is not a number
        ('1 == "1"', False),
        ("[1, 2] == spec.items", True),
        ('{"k": "v"} == spec.map', True),
        ("7 / 2", 3),
        ("-7 / 2", -3),  # truncates towards zero
        ("-5 % 3", -2),
        ("7.0 / 2.0", 3.5),
        ('"a" + "b"', "ab"),
        ("spec.items + [3]", [1, 2, 3]),
        ('"k" in spec.map', True),
        ("2 in spec.items", True),
        ('spec.text in ["Hello", "World"]', True),
        ('1 in ["1"]', False),
        ("has(spec.unset)", True),  # the key is present, its value null
        ("has(spec.missing)", False),
        ("has(metadata.labels.env)", True),
        ("spec.flag ? 1 : 2", 1),
        ("!spec.flag", False),
        ("size(spec.text) == spec.text.size()", True),
        ('spec.text.startsWith("He") && spec.text.endsWith("lo")', True),
        ('spec.text.contains("ell")', True),
        ('spec.text.matches("^H.l+o$")', True),
        ('spec.text.lowerAscii() == "hello"', True),
        ("spec.items.exists(x, x == 2)", True),
        ("spec.items.all(x, x > 1)", False),
        ("spec.items.exists_one(x, x > 0)", False),
        ("spec.items.map(x, x * 10)", [10, 20]),
        ("spec.items.filter(x, x > 1)", [2]),
        ('spec.map.exists(k, k == "k")', True),
        ("int(spec.limit) + 1", 31),
        ("string(spec.count)", "3"),
        ("double(spec.count)", 3.0),
        ("0x10", 16),
        # Errors on one side of || / && are absorbed when the other side decides.
        ("spec.missing == 1 || true", True),
        ("false && spec.missing == 1", False),
        ("spec.missing == 1 && false", False),
        ("isMicrosoftHost(spec.host)", True),
        ("spec.host.isMicrosoftHost()", True),
        ("isMicrosoftHost(spec.unset)", False),
        ('hostOf("https://Outlook.Office365.com/EWS/Exchange.asmx")', "outlook.office365.com"),
    ],
)
def test_semantics(source: str, expected: Any) -> None:
    result = run(source)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("spec.map.x", "spec.map has no key 'x'"),
        ('metadata.labels["team"] == "a"', "metadata.labels has no key 'team'"),
        ("spec.items[5]", "out of range"),
        ("spec.count / 0", "division by zero"),
        ("spec.count + 1.5", "+ cannot be applied to (int, double)"),
        ('spec.unset.startsWith("x")', "startsWith cannot be applied to (null, string)"),
        ("spec.unset.field", "cannot read .field of spec.unset: it is null"),
        ("spec.count ? 1 : 2", "is int, not bool"),
        ("spec.missing == 1 || false", "spec has no key 'missing'"),
        ("9223372036854775807 + 1", "overflow"),
        ('spec.text.matches("(")', "invalid regular expression"),
    ],
)
def test_runtime_errors(source: str, fragment: str) -> None:
    assert fragment in error(source)


# Expressions both engines support; the compiled one must agree with cel-python.
AGREEMENT = [
    'spec.text == "Hello" && spec.count > 2',
    "spec.limit > 25 || spec.count < 1",
    "spec.unset == null",
    "has(spec.unset) && !has(spec.missing)",
    "spec.items.exists(x, x == 2) && spec.items.all(x, x > 0)",
    "spec.items.map(x, x * 2)",
    "spec.items.filter(x, x > 1)",
    '"k" in spec.map && 2 in spec.items',
    'spec.text.startsWith("He") ? spec.count * 2 : spec.count - 1',
    "size(spec.items) + spec.items.size()",
    '[1, "a"] + ["b"]',
    "7 / 2 + 7 % 2",
    "-7 / 2",
    'metadata.labels.env != "dev"',
    "spec.missing == 1 || true",
    "spec.map.missing",
    "spec.count / 0",
    'spec.text + "!"',
    "isMicrosoftHost(spec.host) && !isExchangeOnline(spec.unset)",
]


@pytest.mark.parametrize("source", AGREEMENT)
def test_agrees_with_cel_python(source: str) -> None:
    program = compile_expression(source, VARIABLES)
    assert program.fast

    def outcome(fn: Any) -> tuple[str, Any]:
        try:
            return ("value", fn(DATA))
        except CelError:
            return ("error", None)

    ours, reference = outcome(program), outcome(interpreted(parse(source)))
    assert ours == reference
    if ours[0] == "value":
        assert type(ours[1]) is type(reference[1])


def test_constructs_outside_the_subset_fall_back_to_cel_python() -> None:
    program = compile_expression('type(spec.text) == string && duration("1h") > duration("1m")',
                                 VARIABLES)
    assert not program.fast
    assert program(DATA) is True
    slow_error = compile_expression('timestamp("nonsense") == timestamp("x")', VARIABLES)
    with pytest.raises(CelError):
        slow_error(DATA)


@pytest.mark.parametrize(
    ("source", "message", "column"),
    [
        ("spec.text &&& true", "CEL syntax error at line 1, column 13: unexpected character '&'",
         13),
        ("spec.text ==", "unexpected end of expression", 11),
        ("specs.text == 1", "unknown name 'specs'; the variables are apiVersion, kind", 1),
        ("spec.text.shout()", "unknown function 'shout'", 11),
        ("has(spec)", "has() takes one field selection", 1),
        ("spec.items.all(1, true)", "all() takes a variable name", 1),
    ],
)
def test_compile_errors(source: str, message: str, column: int) -> None:
    with pytest.raises(CelCompileError) as info:
        compile_expression(source, VARIABLES)
    assert message in info.value.message
    assert info.value.column == column


def test_macro_variable_is_only_in_scope_inside_the_macro() -> None:
    assert run("spec.items.exists(x, x == 1)") is True
    with pytest.raises(CelCompileError, match="unknown name 'x'"):
        compile_expression("spec.items.exists(x, x == 1) && x == 1", VARIABLES)


def test_fields_read_are_recorded() -> None:
    program = compile_expression(
        'has(spec.alternateHost) && spec.auth.type == "basic" && metadata.labels["env"] == "x"'
        " && spec.items.exists(spec, spec.other)",  # a macro variable named spec is not the spec
        VARIABLES | {"items"},
    )
    assert program.fields == {
        ("spec", "alternateHost"), ("spec", "auth"), ("spec", "items"), ("metadata", "labels"),
    }


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("smtp.office365.com", True),
        ("outlook.office365.com", True),
        ("smtp-mail.outlook.com", True),
        ("SMTP.OFFICE365.COM.", True),
        ("outlook.office.com", True),
        ("graph.microsoft.com", True),
        ("smtp.office365.us", True),
        ("partner.outlook.cn", True),
        ("outlook.office.de", True),
        ("https://outlook.office365.com/EWS/Exchange.asmx", True),
        ("smtp.office365.com:587", True),
        ("notoffice365.com", False),
        ("office365.com.evil.example", False),
        ("smtp.gmail.com", False),
        ("office.de", False),
        (None, False),
        ("", False),
    ],
)
def test_is_microsoft_host(host: str | None, expected: bool) -> None:
    assert is_microsoft_host(host) is expected


def test_is_exchange_online() -> None:
    assert is_exchange_online("https://outlook.office365.com/EWS/Exchange.asmx")
    assert is_exchange_online("webmail.apps.mil")
    assert not is_exchange_online("www.microsoft.com")  # Microsoft's own mail, not the service
    assert not is_exchange_online("https://mail.corp.example.com/EWS/Exchange.asmx")
    assert not is_exchange_online(None)


def test_host_and_domain_helpers() -> None:
    assert host_of("HTTPS://Mail.Example.com:8443/ews") == "mail.example.com"
    assert host_of("mail.example.com") == "mail.example.com"
    assert host_of(None) is None
    assert domain_of("Help@Example.COM") == "example.com"
    assert domain_of("no-at-sign") is None
    with pytest.raises(CelError):
        run("isMicrosoftHost(spec.count)")
