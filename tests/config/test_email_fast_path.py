"""The fast path for plain email addresses must never accept an address that
email_validator rejects (it only skips the slow check for the easy cases)."""

from __future__ import annotations

import random
import string

import pytest
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from reconciler.config.models.base import SPECIAL_USE_DOMAINS, is_plain_email

LOCAL = string.ascii_letters + string.digits + "_+-."
LABEL = string.ascii_letters + string.digits + "-"
TLDS = ["example", "com", "co", "local", "invalid", "onion", "arpa", "localhost", "x", "c0m"]


def _rejected(address: str) -> bool:
    try:
        validate_email(address, check_deliverability=False, test_environment=True)
    except EmailNotValidError:
        return True
    return False


def _generated(rng: random.Random) -> str:
    def part(chars: str, low: int, high: int) -> str:
        return "".join(rng.choice(chars) for _ in range(rng.randint(low, high)))

    labels = [part(LABEL, 1, 65) for _ in range(rng.randint(1, 4))]
    return f"{part(LOCAL, 1, 70)}@{'.'.join(labels)}.{rng.choice(TLDS)}"


@pytest.mark.parametrize("address", [
    "a..b@x.example", ".a@x.example", "a.@x.example", "a@-x.example", "a@x-.example",
    "a@x.123", "a@localhost", "a@x..example", "a@host.local", "a@svc.invalid",
    "a@ab--cd.example", "a@" + "b" * 64 + ".example",
])
def test_edge_cases_that_email_validator_rejects_take_the_slow_path(address: str) -> None:
    assert _rejected(address)
    assert not is_plain_email(address)


def test_fast_path_agrees_with_email_validator_on_generated_addresses() -> None:
    rng = random.Random(20261121)
    accepted = 0
    for _ in range(20_000):
        address = _generated(rng)
        if is_plain_email(address):
            accepted += 1
            assert not _rejected(address), address
    assert accepted > 1_000  # the generator does exercise the fast path


def test_plain_addresses_take_the_fast_path() -> None:
    for address in ("helpdesk@acme.example", "first.last+tag@sub.example.com", "a_b@x.co"):
        assert is_plain_email(address) and not _rejected(address)


def test_the_fast_path_knows_every_special_use_domain_of_email_validator() -> None:
    # the fast path keeps its own copy of the list (importing the library costs ~20 ms)
    assert set(SPECIAL_USE_DOMAINS) == set(SPECIAL_USE_DOMAIN_NAMES) - {"test"}
