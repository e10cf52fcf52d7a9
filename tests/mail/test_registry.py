"""The registry is the one place that names protocols: every row loads and fits."""

from __future__ import annotations

import inspect

import pytest

from reconciler.config.models.incoming_server import IncomingProtocol
from reconciler.config.models.outgoing_server import OutgoingProtocol
from reconciler.mail import registry
from reconciler.mail.failover import HostSelector
from reconciler.mail.fetcher import Fetcher
from reconciler.mail.incoming_check import MailboxCheck
from reconciler.mail.transport import Transport


def test_every_outgoing_protocol_has_a_transport_and_a_check() -> None:
    assert set(registry.OUTGOING) == set(OutgoingProtocol)


@pytest.mark.parametrize("protocol", list(OutgoingProtocol))
def test_an_outgoing_row_loads_and_takes_the_options_it_lists(protocol: OutgoingProtocol) -> None:
    entry = registry.OUTGOING[protocol]
    cls = registry._load(entry.transport)
    assert issubclass(cls, Transport)
    assert cls.protocol == protocol
    accepted = set(inspect.signature(cls).parameters)
    assert set(entry.options) <= accepted
    for where in (entry.plan, entry.walk, entry.endpoints):
        assert where is None or callable(registry._load(where))


@pytest.mark.parametrize("protocol", list(OutgoingProtocol))
async def test_transport_for_builds_one_with_shared_options(protocol: OutgoingProtocol) -> None:
    transport = registry.transport_for(protocol, selector=HostSelector(),
                                       proxy_lookup=lambda server: None, connect_timeout=5.0)
    try:
        assert transport.protocol == protocol
    finally:
        await transport.aclose()


def test_every_incoming_protocol_has_a_fetcher() -> None:
    assert set(registry.FETCHERS) == set(IncomingProtocol)
    for where, options in registry.FETCHERS.values():
        cls = registry._load(where)
        assert issubclass(cls, Fetcher)
        assert set(options) <= set(inspect.signature(cls).parameters)


def test_every_incoming_protocol_has_a_connection_check() -> None:
    assert set(registry.INCOMING_CHECKS) == set(IncomingProtocol)
    for where in registry.INCOMING_CHECKS.values():
        assert issubclass(registry._load(where), MailboxCheck)
