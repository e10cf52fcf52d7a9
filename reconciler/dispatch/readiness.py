"""Whether a routed server can send at all (SPEC O8 "configuration is not proper").

Checked after routing and before composing, so a misconfigured server turns
into an explicit SEND_FAILED with a reason instead of a confusing transport
error. ``validate`` catches most of these in git; the daemon checks again
because the store can be edited outside git (drift, P5).
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.config.models.outgoing_server import OutgoingProtocol, OutgoingServer
from reconciler.mail.outcome import NotSentReason


@dataclass(frozen=True, slots=True)
class Problem:
    reason: NotSentReason
    detail: str


def server_problems(server: OutgoingServer) -> tuple[Problem, ...]:
    spec = server.spec
    name = server.metadata.name
    problems: list[Problem] = []
    if not spec.enabled:
        problems.append(Problem(NotSentReason.SERVER_DISABLED, f"server {name} is disabled"))
    if spec.protocol in (OutgoingProtocol.SMTP, OutgoingProtocol.EWS) and not spec.host:
        problems.append(Problem(NotSentReason.SERVER_INCOMPLETE, f"server {name} has no host"))
    if spec.protocol == OutgoingProtocol.SMTP and (spec.port is None or spec.security is None):
        # derive fills both; missing means the spec was written around the pipeline
        problems.append(Problem(NotSentReason.SERVER_INCOMPLETE,
                                f"server {name} has no port or security"))
    if not spec.reply_to:
        # Replies must reach a monitored mailbox or they never become tickets.
        problems.append(Problem(NotSentReason.NO_REPLY_TO, f"server {name} has no replyTo"))
    return tuple(problems)
