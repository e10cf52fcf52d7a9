"""Rows read back through orjson give exactly what the standard library would."""

from __future__ import annotations

import json
import math

import pytest

from reconciler.state.codec import loads

CASES = [
    '{"spec": {"port": 587, "tls": true, "note": null, "ratio": 0.1}, "labels": {}}',
    "9223372036854775807",  # the largest signed 64-bit integer
    "18446744073709551616",  # past 64 bits: orjson alone would give a float
    "-9223372036854775809",
    '{"serial": 123456789012345678901234567890}',
    '{"phone": "12345678901234567890"}',  # digits in a string
    "[1.0000000000000002, -0.0, 5e-324, 1E5]",
    '"\\ud800"',  # a lone surrogate: json reads it, orjson refuses
    '{"a": 1, "a": 2}',
]


@pytest.mark.parametrize("text", CASES)
def test_the_same_values_and_types_as_json(text: str) -> None:
    got, want = loads(text), json.loads(text)
    assert got == want
    assert repr(got) == repr(want)  # int stays int, -0.0 stays -0.0


def test_nan_and_infinity_read_as_json_reads_them() -> None:
    got = loads('[NaN, Infinity, -Infinity]')
    assert math.isnan(got[0]) and got[1:] == [math.inf, -math.inf]


def test_invalid_json_raises_the_standard_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads('{"a": ')
