"""The intake route answered in front of FastAPI (daemon.intake_route) gives a client
exactly what the route gives through the FastAPI stack: each case is sent as raw HTTP
to an API with the fast path and to one without (``fast_intake=False``), over the same
store, and the answers (100 Continue, status line, headers but Date, body), the log
lines (refusals with their fields, store failures, uvicorn's errors) and whether the
connection stays open must match. The answers both paths build are checked against
Starlette's JSONResponse, what clients always got. Also: many requests on one
kept-alive connection, pipelined ones, and the 413 that closes it.
Real uvicorn on loopback, SQLite and PostgreSQL stores."""

# ruff: noqa: F811  (fixtures from api_kit used as parameters)

from __future__ import annotations

import json
import logging
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.responses import JSONResponse

from reconciler.daemon.api.intake_route import DaemonApi
from reconciler.runtime.live_config import ConfigHolder
from reconciler.state import SqlStore
from reconciler.state.base import StoreUnavailable

from .api_kit import (  # noqa: F401  (serve_api is a fixture)
    TOKEN,
    ServeApi,
    ServedApi,
    notification,
    serve_api,
)

LIMIT = 4096
BIG_LIMIT = 1_000_000  # room for bodies over PARSE_IN_THREAD_BYTES, parsed in a thread
RECV_TIMEOUT_S = 30.0


@dataclass
class Answer:
    status_line: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    interim: list[bytes]  # status lines of 1xx answers before this one (100 Continue)

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """One TCP connection speaking raw HTTP/1.1: what a client sends is exactly what
    the test wrote, byte for byte."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        assert parts.hostname and parts.port
        self.sock = socket.create_connection((parts.hostname, parts.port),
                                             timeout=RECV_TIMEOUT_S)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def exchange(self, request: bytes) -> Answer:
        self.sock.sendall(request)
        return self.read()

    def read(self) -> Answer:
        interim: list[bytes] = []
        while True:
            while b"\r\n\r\n" not in self.buffer:
                if not self._fill():
                    raise ConnectionError(f"closed before an answer: {self.buffer[:200]!r}")
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            status_line, *lines = head.split(b"\r\n")
            if not status_line.startswith(b"HTTP/1.1 1"):
                break
            interim.append(status_line)
        headers = [(k.strip().lower(), v.strip())
                   for k, v in (line.split(b":", 1) for line in lines)]
        length = int(next(v for k, v in headers if k == b"content-length"))
        while len(self.buffer) < length:
            if not self._fill():
                raise ConnectionError("closed in the middle of a body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Answer(status_line, headers, body, interim)

    def still_open(self) -> bool:
        """Whether the connection carries another request (a GET /healthz)."""
        try:
            return self.exchange(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                                 ).status == 200
        except (ConnectionError, OSError):
            return False


def request(body: bytes | None = None, *, token: str | None = TOKEN,
            method: str = "POST", path: str = "/v1/notifications",
            headers: Sequence[tuple[str, str]] = (), chunks: Sequence[bytes] | None = None,
            content_length: int | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines += [f"{name}: {value}" for name, value in headers]
    payload = b""
    if chunks is not None:
        lines.append("Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    elif body is not None:
        lines.append(f"Content-Length: {len(body) if content_length is None else content_length}")
        payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def as_json(i: int, **fields: Any) -> bytes:
    return json.dumps(notification(i, **fields)).encode()


@dataclass
class Case:
    name: str
    requests: list[bytes]  # on one connection; the last answer is compared
    status: int


def cases(key: str) -> list[Case]:
    """Every way the route can answer (body limit LIMIT). ``key`` keeps idempotency
    keys apart per server."""
    over = [b" " * 3000, b" " * 3000]
    return [
        Case("accepted", [request(as_json(1, idempotencyKey=f"{key}-a"))], 202),
        Case("accepted without a key", [request(as_json(2))], 202),
        Case("duplicate key", [request(as_json(3, idempotencyKey=f"{key}-d")),
                               request(as_json(4, idempotencyKey=f"{key}-d"))], 200),
        Case("no token", [request(as_json(5), token=None)], 401),
        Case("wrong token", [request(as_json(5), token=TOKEN + "x")], 401),
        Case("basic scheme", [request(as_json(5), token=None,
                                      headers=[("Authorization", "Basic dXNlcjpwYXNz")])], 401),
        Case("bearer without a token", [request(as_json(5), token=None,
                                                headers=[("Authorization", "Bearer ")])], 401),
        Case("lower-case scheme, spaces", [request(as_json(6), token=None, headers=[
            ("Authorization", f"bearer   {TOKEN}  ")])], 202),
        Case("the first authorization header counts", [request(
            as_json(7), token=TOKEN + "x", headers=[("Authorization", f"Bearer {TOKEN}")])],
             401),
        Case("wrong token, body over the limit", [request(token="nope", chunks=over)], 401),
        Case("not json", [request(b"{not json", headers=[("Content-Type",
                                                          "application/json")])], 422),
        Case("empty body", [request(b"")], 422),
        Case("no body at all", [request()], 422),
        Case("json sent as text/plain", [request(as_json(8), headers=[
            ("Content-Type", "text/plain")])], 202),
        Case("invalid fields", [request(as_json(9, to=["not an address"], subject="a\nb",
                                                priority="high"))], 422),
        Case("non-ascii in the message", [request(json.dumps(
            notification(10, to=["jäne@"]), ensure_ascii=False).encode())], 422),
        Case("unknown namespace", [request(as_json(11, namespace="globex"))], 422),
        Case("declared length over the limit", [request(b"{", content_length=LIMIT + 1)],
             413),
        Case("chunked over the limit", [request(chunks=over)], 413),
        Case("chunked within the limit", [request(chunks=[as_json(12)[:100],
                                                          as_json(12)[100:]])], 202),
        # The body is only asked for (100 Continue) once the token is good.
        Case("expects 100-continue", [request(as_json(13), headers=[
            ("Expect", "100-continue")])], 202),
        Case("expects 100-continue, wrong token", [request(as_json(13), token="nope", headers=[
            ("Expect", "100-continue")])], 401),
        Case("wrong method", [request(as_json(13), method="GET")], 405),
        Case("put", [request(as_json(13), method="PUT")], 405),
        Case("trailing slash", [request(as_json(14), path="/v1/notifications/")], 307),
        Case("query string", [request(as_json(15), path="/v1/notifications?x=1")], 202),
    ]


def big_cases(key: str) -> list[Case]:
    big = "x" * 400_000
    return [
        Case("big body, parsed in a thread", [request(as_json(1, textBody=big))], 202),
        Case("big invalid body", [request(as_json(2, textBody=big, cc=["nope"]))], 422),
    ]


_ID = re.compile(rb'("id":|/v1/notifications/)\d+')


def comparable(answer: Answer) -> tuple[list[bytes], bytes, list[tuple[bytes, bytes]], bytes]:
    """The answer without what differs between two servers: the Date header and the
    ids the store handed out (and so the length, checked against the body here)."""
    length = answer.header(b"content-length")
    assert length is not None and int(length) == len(answer.body)
    headers = [(k, _ID.sub(rb"\1<id>", v)) for k, v in answer.headers
               if k not in (b"date", b"content-length")]
    return answer.interim, answer.status_line, headers, _ID.sub(rb"\1<id>", answer.body)


def log_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, str, Any, Any]]:
    """What the daemon and uvicorn logged (refusals with their JSON fields)."""
    return [(r.name, r.levelname, r.getMessage(), getattr(r, "status", None),
             getattr(r, "reason", None))
            for r in caplog.records
            if r.name.startswith(("reconciler", "uvicorn")) and r.name != "uvicorn.access"]


def ask(api: ServedApi, case: Case) -> tuple[Answer, bool]:
    """The last answer of ``case`` and whether the connection stayed open after it."""
    connection = Connection(api.url)
    try:
        answers = [connection.exchange(r) for r in case.requests]
        return answers[-1], connection.still_open()
    finally:
        connection.close()


def pair(serve_api: ServeApi, **options: Any) -> tuple[ServedApi, ServedApi]:
    fast = serve_api(fast_intake=True, **options)
    options.setdefault("config", fast.config)  # the store is configured once
    slow = serve_api(fast_intake=False, **options)
    # The comparison only means something when one of them takes the fast path.
    assert isinstance(fast.app, DaemonApi) and fast.app.intake_route is not None
    assert isinstance(slow.app, DaemonApi) and slow.app.intake_route is None
    return fast, slow


def assert_same(fast: ServedApi, slow: ServedApi, make: Callable[[str], list[Case]],
                caplog: pytest.LogCaptureFixture) -> None:
    for mine, theirs in zip(make("fast"), make("slow"), strict=True):
        caplog.clear()
        fast_answer, fast_open = ask(fast, mine)
        fast_lines = log_lines(caplog)
        caplog.clear()
        slow_answer, slow_open = ask(slow, theirs)
        slow_lines = log_lines(caplog)
        assert slow_answer.status == mine.status, (mine.name, slow_answer)
        assert comparable(fast_answer) == comparable(slow_answer), mine.name
        assert fast_lines == slow_lines, mine.name
        assert fast_open == slow_open == (mine.status not in (413, 500)), mine.name


def test_every_answer_is_the_same_as_through_fastapi(
    serve_api: ServeApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="reconciler")
    fast, slow = pair(serve_api, max_body_bytes=LIMIT)
    woken: list[str] = []
    fast.app.state.wake_worker = lambda: woken.append("fast")
    slow.app.state.wake_worker = lambda: woken.append("slow")
    assert_same(fast, slow, cases, caplog)
    # Woken and counted once per stored notification, not for a duplicate or a refusal.
    accepted = sum(c.status == 202 for c in cases("x")) + 1  # and the duplicate's first
    assert woken == ["fast", "slow"] * accepted
    for served in (fast, slow):
        assert served.metrics.registry.get_sample_value(
            "reconcile_intake_accepted_total", {"namespace": "default"}) == accepted


def test_big_bodies_are_answered_the_same(
    serve_api: ServeApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="reconciler")
    fast, slow = pair(serve_api, max_body_bytes=BIG_LIMIT)
    assert_same(fast, slow, big_cases, caplog)


def test_answers_before_the_config_is_loaded_are_the_same(
    serve_api: ServeApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="reconciler")
    fast, slow = pair(serve_api, config=ConfigHolder())

    def make(key: str) -> list[Case]:
        return [Case("not loaded", [request(as_json(1))], 503),
                Case("invalid still names the field", [request(as_json(2, cc=["x"]))], 422),
                Case("no token", [request(as_json(3), token=None)], 401)]

    assert_same(fast, slow, make, caplog)


class _StoreGoneOutbox:
    """An outbox whose database went away: writes fail as SqlStore's do, and reading
    a stored message fails with ``read_error``."""

    def __init__(self, real: Any, read_error: Exception) -> None:
        self._real = real
        self._read_error = read_error

    def enqueue_many(self, requests: Sequence[Any], **kw: Any) -> list[Any]:
        if any(r.idempotency_key == "write-fails" for r in requests):
            raise StoreUnavailable("cannot connect to the store (test)")
        return self._real.enqueue_many(requests, **kw)

    def get(self, message_id: int) -> Any:
        raise self._read_error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _StoreGone:
    def __init__(self, real: SqlStore, read_error: Exception) -> None:
        self._real = real
        self.outbox = _StoreGoneOutbox(real.outbox, read_error)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_store_failures_are_answered_the_same(
    serve_api: ServeApi, store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="reconciler")
    fast, slow = pair(serve_api, api_store=_StoreGone(store, StoreUnavailable("gone (test)")))

    def make(key: str) -> list[Case]:
        return [
            Case("write fails", [request(as_json(1, idempotencyKey="write-fails"))], 503),
            Case("duplicate lookup fails",
                 [request(as_json(2, idempotencyKey=f"{key}-dup")),
                  request(as_json(2, idempotencyKey=f"{key}-dup"))], 503),
        ]

    assert_same(fast, slow, make, caplog)
    caplog.clear()
    answer, _ = ask(fast, make("again")[1])
    assert answer.status == 503 and answer.header(b"retry-after") == b"5"
    assert [(name, message) for name, _, message, _, _ in log_lines(caplog)] == [
        ("reconciler.daemon.api", "API request failed on the store: gone (test)")]


def test_an_unexpected_error_is_a_plain_500_as_through_fastapi(
    serve_api: ServeApi, store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    fast, slow = pair(serve_api, api_store=_StoreGone(store, ValueError("a bug (test)")))

    def make(key: str) -> list[Case]:
        duplicate = request(as_json(1, idempotencyKey=f"{key}-500"))
        return [Case("duplicate lookup raises", [duplicate, duplicate], 500)]

    assert_same(fast, slow, make, caplog)
    caplog.clear()
    answer, still_open = ask(fast, make("again")[0])
    assert answer.body == b"Internal Server Error" and not still_open
    assert [(name, level, message) for name, level, message, _, _ in log_lines(caplog)] == [
        ("uvicorn.error", "ERROR", "Exception in ASGI application\n")]


def test_answers_are_rendered_as_jsonresponse_renders_them(serve_api: ServeApi) -> None:
    # The two paths share the code that builds answers, so the comparison above
    # cannot see it drift; Starlette's JSONResponse is what clients always got.
    served = serve_api()
    connection = Connection(served.url)
    try:
        accepted = connection.exchange(request(as_json(1, idempotencyKey="render")))
        duplicate = connection.exchange(request(as_json(1, idempotencyKey="render")))
        no_token = connection.exchange(request(as_json(2), token=None))
        unknown = connection.exchange(request(as_json(3, namespace="globex")))
    finally:
        connection.close()
    id_ = accepted.json()["id"]
    location = {"Location": f"/v1/notifications/{id_}"}
    expected = [
        (accepted, JSONResponse({"id": id_, "duplicate": False, "status": "queued"}, 202,
                                location)),
        (duplicate, JSONResponse({"id": id_, "duplicate": True, "status": "queued"}, 200,
                                 location)),
        (no_token, JSONResponse({"detail": "a bearer token is required"}, 401,
                                {"WWW-Authenticate": 'Bearer realm="reconcile"'})),
        (unknown, JSONResponse({"detail": unknown.json()["detail"]}, 422)),
    ]
    for answer, response in expected:
        assert answer.status == response.status_code
        assert answer.headers[:2] == [(b"date", answer.headers[0][1]), (b"server", b"uvicorn")]
        assert answer.headers[2:] == response.raw_headers
        assert answer.body == response.body


def test_the_body_is_asked_for_only_with_a_good_token(serve_api: ServeApi) -> None:
    served = serve_api()
    expecting = [("Expect", "100-continue")]
    good, _ = ask(served, Case("good", [request(as_json(1), headers=expecting)], 202))
    bad, _ = ask(served, Case("bad", [request(as_json(1), token="no", headers=expecting)], 401))
    assert (good.interim, good.status) == ([b"HTTP/1.1 100 Continue"], 202)
    assert (bad.interim, bad.status) == ([], 401)


def test_a_client_gone_in_the_middle_of_its_body_is_logged_the_same(
    serve_api: ServeApi, caplog: pytest.LogCaptureFixture
) -> None:
    fast, slow = pair(serve_api)
    logged = []
    for served in (fast, slow):
        caplog.clear()
        connection = Connection(served.url)
        connection.sock.sendall(request(b'{"module": "requests"', content_length=100))
        connection.close()
        deadline = time.monotonic() + RECV_TIMEOUT_S
        while not log_lines(caplog) and time.monotonic() < deadline:
            time.sleep(0.01)
        logged.append(log_lines(caplog))
    assert logged[0] == logged[1]
    assert [(name, message) for name, _, message, _, _ in logged[0]] == [
        ("uvicorn.error", "Exception in ASGI application\n")]


def test_one_connection_carries_many_requests_until_a_413(serve_api: ServeApi) -> None:
    served = serve_api(max_body_bytes=4096)
    connection = Connection(served.url)
    try:
        statuses = [connection.exchange(r).status for r in (
            request(as_json(1)),
            request(b"{not json"),
            request(as_json(2), token="wrong"),
            request(chunks=[as_json(3)]),
            request(as_json(4), method="GET"),
            request(as_json(5, namespace="globex")),
            request(as_json(6)),
        )]
        assert statuses == [202, 422, 401, 202, 405, 422, 202]
        # pipelined: sent together, answered in order
        connection.sock.sendall(request(as_json(7)) + request(b"") + request(as_json(8)))
        assert [connection.read().status for _ in range(3)] == [202, 422, 202]
        assert connection.still_open()
        too_big = connection.exchange(request(chunks=[b" " * 3000, b" " * 3000]))
        assert too_big.status == 413 and too_big.header(b"connection") == b"close"
        assert not connection.still_open()
    finally:
        connection.close()
