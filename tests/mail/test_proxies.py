"""noProxy and the proxy URL: one rule for every HTTP protocol (Graph and EWS)."""

from __future__ import annotations

import pytest

from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.mail.proxies import bypasses, proxy_url
from reconciler.mail.transport import Redactor


def _proxy(*no_proxy: str, host: str = "proxy.corp.example") -> ProxyServerSpec:
    return ProxyServerSpec.model_validate({"host": host, "port": 3128, "noProxy": list(no_proxy)})


@pytest.mark.parametrize(("entry", "host", "direct"), [
    ("relay.corp.example", "relay.corp.example", True),
    ("corp.example", "mail.corp.example", True),
    (".corp.example", "mail.corp.example", True),
    ("*.corp.example", "mail.corp.example", True),
    (".corp.example", "corp.example", True),
    ("CORP.example.", "Mail.Corp.Example.", True),
    ("corp.example", "notcorp.example", False),
    ("corp.example", "corp.example.evil.test", False),
    ("mail.corp.example", "corp.example", False),
])
def test_no_proxy_covers_the_name_and_everything_below_it(entry: str, host: str,
                                                             direct: bool) -> None:
    assert bypasses(_proxy(entry), host) is direct


def test_no_entries_means_everything_goes_through_the_proxy() -> None:
    assert not bypasses(_proxy(), "graph.microsoft.com")


def test_an_ipv6_proxy_host_is_bracketed_in_the_url() -> None:
    assert proxy_url(_proxy(host="fd00::1"), Redactor()) == "http://[fd00::1]:3128"
