"""The steps of a connection check and what each one came to (SPEC O9, O10).

A probe walks a protocol's steps in order and stops at the first failure, so
the report can say *which* step failed; the health monitor keeps the same
report as a server's status, and `reconcile test-connection` prints it line
by line. Each protocol declares its plan up front, so steps that never ran
can be shown as "not run" rather than silently missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum

from reconciler.mail.failover import Endpoint
from reconciler.mail.outcome import Failure, Health, HealthStatus


class Step(StrEnum):
    DNS = "dns"
    TCP = "tcp"
    PROXY = "proxy"  # through a ProxyServer: connect to it and open the tunnel
    TLS = "tls"  # implicit TLS handshake, or STARTTLS plus its handshake
    GREETING = "greeting"
    EHLO = "ehlo"
    AUTH = "auth"
    TOKEN = "token"  # Graph/EWS: fetch an access token (O11)
    API = "api"  # Graph/EWS: one cheap authenticated call
    SEND = "send"  # test-connection only: a real message through the transport
    FETCH = "fetch"  # incoming: a mailbox command after login (select, list, download, flag)
    FOLDER = "folder"  # incoming check: open the folder read-only
    COUNT = "count"  # incoming check: how many messages, how many unread
    SAMPLE = "sample"  # incoming check: one message's headers, read-only

    @property
    def label(self) -> str:
        return _LABELS[self]


# What the HTTP API protocols walk: Graph always, EWS for OAuth2 servers (with Basic auth
# EWS has no token step; its API call checks the password).
HTTP_API_PLAN = (Step.DNS, Step.TCP, Step.TLS, Step.TOKEN, Step.API)


_LABELS = {
    Step.DNS: "DNS",
    Step.TCP: "TCP",
    Step.PROXY: "Proxy",
    Step.TLS: "TLS",
    Step.GREETING: "Greeting",
    Step.EHLO: "EHLO",
    Step.AUTH: "AUTH",
    Step.TOKEN: "Token",
    Step.API: "API call",
    Step.SEND: "Send",
    Step.FETCH: "Fetch",
    Step.FOLDER: "Folder",
    Step.COUNT: "Messages",
    Step.SAMPLE: "Sample",
}


class Reason(StrEnum):
    """Why a step failed, finer than :class:`Failure`: what the fix table keys on."""

    NXDOMAIN = "nxdomain"
    DNS_TEMPORARY = "dns-temporary"
    REFUSED = "refused"
    NO_ROUTE = "no-route"
    TIMEOUT = "timeout"
    CLOSED = "closed"
    UNTRUSTED = "untrusted"
    HOSTNAME_MISMATCH = "hostname-mismatch"
    EXPIRED = "expired"
    HANDSHAKE = "handshake"
    NO_STARTTLS = "no-starttls"
    REJECTED = "rejected"
    PROXY_AUTH = "proxy-auth"  # the ProxyServer refused its username/password
    AUTH_FAILED = "auth-failed"
    APP_PASSWORD = "app-password"  # 534: the provider wants an app password or OAuth
    ENCRYPTION_REQUIRED = "encryption-required"  # 530 "must issue STARTTLS first", 538
    AUTH_REQUIRED = "auth-required"  # 530 at MAIL: the server wants AUTH
    TEMPORARY = "temporary"  # any 4xx
    AUTH_NOT_OFFERED = "auth-not-offered"
    AUTH_NOT_OFFERED_PLAINTEXT = "auth-not-offered-plaintext"
    SECRET = "secret"  # the password reference cannot be resolved here
    NOT_BOUND = "credential-not-bound"  # no apply bound the credential to this endpoint (S2)
    NO_TOKEN_PROVIDER = "no-token-provider"
    TOKEN = "token"
    TOKEN_PERMANENT = "token-permanent"  # revoked grant, bad secret, no consent: a person acts
    PERMISSION = "permission"  # HTTP 403: the app may not use the mailbox (Graph, EWS)
    NOT_FOUND = "not-found"  # HTTP 404: no such mailbox (Graph, EWS)
    SENDER = "sender"  # MAIL FROM refused
    RECIPIENT = "recipient"  # RCPT TO refused
    CONTENT = "content"  # refused after DATA
    UNEXPECTED = "unexpected"


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step: passed or failed, how long it took, and what the server said.

    ``detail`` has been through the probe's redactor: it never holds a secret.
    ``code`` is the server's reply code (SMTP) or HTTP status when it answered.
    """

    step: Step
    ok: bool
    detail: str
    seconds: float
    failure: Failure | None = None
    code: int | None = None
    reason: Reason | None = None
    fix: str = ""  # the step's own fix when it knew one (a proxy, a mailbox); redacted


@dataclass(frozen=True)
class ProbeReport:
    """The steps planned for one host of one server and the results of those that ran."""

    server: str  # namespace/name
    protocol: str
    endpoint: Endpoint | None
    plan: tuple[Step, ...]
    results: tuple[StepResult, ...] = ()
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def failed(self) -> StepResult | None:
        return next((r for r in self.results if not r.ok), None)

    @property
    def ok(self) -> bool:
        return self.failed is None and len(self.results) == len(self.plan)

    @property
    def not_run(self) -> tuple[Step, ...]:
        done = {r.step for r in self.results}
        return tuple(s for s in self.plan if s not in done)

    def with_result(self, result: StepResult) -> ProbeReport:
        report = self
        if result.step == Step.PROXY:  # a walk through a proxy opens the tunnel for TCP
            report = replace(self, plan=tuple(Step.PROXY if s == Step.TCP else s
                                              for s in self.plan))
        return replace(report.with_plan(result.step), results=(*self.results, result))

    def with_plan(self, *steps: Step) -> ProbeReport:
        """The same report with more steps planned (test-connection adds SEND)."""
        return replace(self, plan=(*self.plan, *(s for s in steps if s not in self.plan)))

    @property
    def error(self) -> str | None:
        """``step: detail`` of the failure, the form kept as a server's last error."""
        failed = self.failed
        if failed is not None:
            return f"{failed.step}: {failed.detail}"
        return f"{self.not_run[0]}: not run" if not self.ok else None

    def health(self) -> Health:
        """The protocol-neutral summary the dispatch layer already knows."""
        address = self.endpoint.address if self.endpoint else None
        if self.ok:
            return Health(HealthStatus.REACHABLE, address, "all checks passed",
                          checked_at=self.checked_at)
        failed = self.failed
        return Health(HealthStatus.UNREACHABLE, address, self.error or "",
                      failed.failure if failed else None,
                      str(failed.step) if failed else None, self.checked_at)
