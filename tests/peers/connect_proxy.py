"""Proxies for tests: HTTP CONNECT and SOCKS5 tunnels to loopback ports, recording what
they saw.

Used by every transport that can be told to go through a ProxyServer (EWS, Graph).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading

HOST = "127.0.0.1"


class ConnectProxy:
    """An HTTP proxy that tunnels CONNECT to loopback ports (what requests uses for https);
    with ``tls``, an HTTPS proxy (TLS to the proxy, the tunnelled TLS inside it)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._tls = tls
        self.tunnels: list[str] = []
        self.proxy_auth: list[str | None] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((HOST, 0))
        self._sock.listen(16)
        self.port = int(self._sock.getsockname()[1])
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, name="connect-proxy", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            if self._tls is not None:
                try:
                    client = self._tls.wrap_socket(client, server_side=True)
                except (OSError, ssl.SSLError):
                    client.close()
                    continue
            self._open.append(client)
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            head += chunk
        lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        self.proxy_auth.append(headers.get("Proxy-Authorization"))
        host, _, port = target.rpartition(":")
        if method != "CONNECT" or host not in ("localhost", HOST):
            client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            client.close()
            return
        self.tunnels.append(target)
        self._splice(client, int(port), b"HTTP/1.1 200 Connection established\r\n\r\n")

    def _splice(self, client: socket.socket, port: int, established: bytes) -> None:
        upstream = socket.create_connection((HOST, port))
        self._open.append(upstream)
        client.sendall(established)

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := src.recv(65536):
                    dst.sendall(data)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)

    def close(self) -> None:
        self._sock.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.close()


class Socks5Proxy(ConnectProxy):
    """A SOCKS5 proxy (RFC 1928, CONNECT only) with username/password login (RFC 1929);
    ``proxy_auth`` records ``user:password`` (None without a login)."""

    def _tunnel(self, client: socket.socket) -> None:
        def read(n: int) -> bytes:
            data = b""
            while len(data) < n and (chunk := client.recv(n - len(data))):
                data += chunk
            return data

        _, count = read(2)
        login = 2 in read(count)
        client.sendall(b"\x05" + (b"\x02" if login else b"\x00"))
        auth = None
        if login:
            user = read(read(2)[1]).decode()
            auth = f"{user}:{read(read(1)[0]).decode()}"
            client.sendall(b"\x01\x00")
        self.proxy_auth.append(auth)
        _, command, _, kind = read(4)
        if kind == 3:
            host = read(read(1)[0]).decode()
        else:
            host = socket.inet_ntop(socket.AF_INET if kind == 1 else socket.AF_INET6,
                                    read(4 if kind == 1 else 16))
        port = int.from_bytes(read(2), "big")
        if command != 1 or host not in ("localhost", HOST):
            client.sendall(b"\x05\x02\x00\x01" + bytes(6))  # not allowed by ruleset
            client.close()
            return
        self.tunnels.append(f"{host}:{port}")
        self._splice(client, port, b"\x05\x00\x00\x01" + bytes(6))
