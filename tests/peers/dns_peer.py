"""A tiny authoritative DNS server on loopback UDP, built on dnspython's message API:
it answers TXT queries from ``records`` (name -> TXT strings) and NXDOMAIN for every
other name, so the sender-domain checks never ask a public resolver."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from peers.smtp import HOST


@dataclass
class DnsPeer:
    sock: socket.socket
    port: int
    records: dict[str, list[str]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def serve(self) -> None:
        while True:
            try:
                wire, client = self.sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(wire)
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True).lower()
            self.asked.append(name)
            if name not in self.records:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.TXT:
                texts = [f'"{text}"' for text in self.records[name]]
                response.answer.append(dns.rrset.from_text(question.name, 300, "IN", "TXT",
                                                           *texts))
            self.sock.sendto(response.to_wire(), client)


@pytest.fixture
def dns_peer() -> Iterator[DnsPeer]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    peer = DnsPeer(sock, int(sock.getsockname()[1]))
    threading.Thread(target=peer.serve, name="dns-peer", daemon=True).start()
    yield peer
    sock.close()
