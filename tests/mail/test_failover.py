"""HostSelector: main host first, alternate while the main is down, back when healthy (O6)."""

from __future__ import annotations

import pytest
from dispatch.kit import server

from reconciler.mail.failover import Endpoint, HostSelector

WITH_ALT = server("relay", host="smtp.desk.example", port=587,
                  alternateHost="backup.desk.example", alternatePort=2587).spec


def test_main_first_then_alternate() -> None:
    assert HostSelector().candidates(WITH_ALT) == (
        Endpoint("smtp.desk.example", 587), Endpoint("backup.desk.example", 2587, True))


def test_alternate_port_defaults_to_the_main_port() -> None:
    spec = server("relay", alternateHost="backup.desk.example").spec
    assert HostSelector().candidates(spec)[1] == Endpoint("backup.desk.example", 587, True)


def test_without_alternate_there_is_one_candidate() -> None:
    selector = HostSelector()
    spec = server("solo").spec
    selector.mark_down(Endpoint("smtp.desk.example", 587), "refused")
    assert selector.candidates(spec) == (Endpoint("smtp.desk.example", 587),)


def test_down_main_goes_last_until_marked_healthy() -> None:
    selector = HostSelector()
    selector.mark_down(Endpoint("SMTP.desk.example", 587), "connection refused")
    assert selector.active(WITH_ALT).alternate
    assert [e.alternate for e in selector.candidates(WITH_ALT)] == [True, False]
    assert selector.down() == {("smtp.desk.example", 587): "connection refused"}
    selector.mark_healthy("smtp.desk.example", 587)
    assert not selector.active(WITH_ALT).alternate


def test_alternate_being_down_does_not_change_the_order() -> None:
    selector = HostSelector()
    selector.mark_down(Endpoint("backup.desk.example", 2587, True), "refused")
    assert not selector.active(WITH_ALT).alternate


def test_server_without_host_has_no_candidates() -> None:
    spec = server("graph", protocol="graph", host=None, port=443, security="tls").spec
    with pytest.raises(ValueError, match="no host"):
        HostSelector().candidates(spec)


def test_ipv6_endpoint_address_is_bracketed() -> None:
    assert Endpoint("::1", 25).address == "[::1]:25"
