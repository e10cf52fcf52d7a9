"""`reconcile test-connection SERVER --to ADDR` (SPEC O10): walk DNS, TCP, TLS, greeting,
EHLO, AUTH (Graph and EWS: DNS, TCP, TLS, token, API call), then send a short test message
through the real transport; print each step with ✓/✗ and its time, and for a failure
the step and the likely fix. For an IncomingServer (SPEC I9: IMAP, POP3, EWS, Graph) the
steps go on after AUTH with the folder, the message count and one message's headers,
read-only.
Through a ProxyServer the TCP step is the proxy step (connect to it, open the tunnel).

The server comes from the live store (what the daemon runs) or, with
``--config DIR``, from a config repo before it is applied. Secret references
are resolved only inside the probe and the transport, on this machine; their
values are never printed. Exit 0 when every step passed, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from pydantic import ValidationError

from reconciler.cli.common import (
    UserError,
    finish,
    opened_store,
    split_name,
    store_option,
    token_key_option,
)
from reconciler.cli.connection_target import Server, Target, from_config, from_store
from reconciler.config.models.incoming_server import IncomingServer
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.health.diagnose import likely_fix
from reconciler.health.probes import (
    UnsupportedProtocol,
    endpoint_of,
    probe_incoming,
    probe_server,
    sample_notification,
    send_test_message,
    supports,
)
from reconciler.mail.fetcher import FetchError
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.registry import OUTGOING
from reconciler.mail.sender_dns import DomainReport, check_domain
from reconciler.mail.steps import ProbeReport, Step


@click.command("test-connection")
@click.argument("server_name", metavar="SERVER")
@click.option("--namespace", "-n", default=None,
              help="Namespace of SERVER (needed when the name exists in several).")
@click.option("--to", "to", default=None, metavar="ADDR",
              help="Where the test message goes (an OutgoingServer needs it).")
@click.option("--kind", type=click.Choice(["outgoing", "incoming"]), default=None,
              help="Which server, when an OutgoingServer and an IncomingServer share SERVER.")
@click.option("--config", "config_dir", default=None, metavar="DIR",
              type=click.Path(path_type=Path, exists=True),
              help="Read SERVER from this config repo instead of the live store.")
@store_option
@token_key_option
@click.option("--ca-file", default=None, metavar="PEM",
              type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Extra trusted CA certificates (a private CA).")
@click.option("--timeout", default=None, metavar="S", type=click.FloatRange(0.1, 600),
              help="Time budget per phase in seconds (default: the server's timeout, at "
                   "most 30).")
@click.option("--alternate", is_flag=True, help="Test the alternate host instead of the main.")
@click.option("--dns-server", default=None, metavar="HOST:PORT", callback=lambda c, p, v:
              _host_port(v), help="Ask this DNS server about the sender domain's SPF, DKIM "
              "and DMARC (default: this machine's resolver).")
@click.option("--dkim-selector", "selectors", multiple=True, metavar="SEL",
              help="The DKIM selector(s) the server signs with (default: try common ones).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--approve-credential-move", "approvals", multiple=True,
              metavar="KIND/NAME|all", help="Present SERVER's credentials to its endpoints "
              "for this test even where no apply bound them (e.g. a server read with "
              "--config before it is applied).")
@click.pass_context
def command(ctx: click.Context, server_name: str, namespace: str | None, to: str | None,
            kind: str | None, config_dir: Path | None, store_url: str | None,
            token_key_ref: str | None, ca_file: Path | None, timeout: float | None,
            alternate: bool, dns_server: tuple[str, int] | None, selectors: tuple[str, ...],
            fmt: str, approvals: tuple[str, ...]) -> None:
    """Check that SERVER works: each connection step, then (outgoing) a test message to ADDR
    or (incoming) the folder, its message count and one message's headers."""
    if config_dir is not None and ctx.get_parameter_source("store_url") == \
            ParameterSource.COMMANDLINE:
        raise UserError("give either --store or --config, not both")
    wanted = f"{kind.capitalize()}Server" if kind else None
    namespace, name = split_name(server_name, namespace, wanted or "OutgoingServer")
    if config_dir is not None:
        target = from_config(config_dir, name, namespace, wanted)
    else:
        target = from_store(store_url, name, namespace, wanted)
    server = target.server
    if isinstance(server, OutgoingServer):
        _check_outgoing(server, to, alternate)
    elif alternate:
        raise UserError("--alternate applies to an OutgoingServer only")
    _load_bindings(store_url, target, approvals)
    quiet = logging.NullHandler()
    # The report says everything the transport would log; without a handler
    # Python would print those warnings to stderr a second time.
    logging.getLogger("reconciler").addHandler(quiet)
    try:
        with _token_provider(server, store_url, token_key_ref, ca_file) as tokens:
            options = ProbeOptions(ca_file=ca_file, timeout=timeout, token_provider=tokens,
                                   proxy_lookup=target.proxy_lookup())
            report = asyncio.run(_walk(server, to, alternate, options))
        domain = None if isinstance(server, IncomingServer) else asyncio.run(check_domain(
            str(server.spec.email).rsplit("@", 1)[-1], selectors=selectors,
            nameserver=dns_server))
    finally:
        logging.getLogger("reconciler").removeHandler(quiet)
    if fmt == "json":
        click.echo(json.dumps(_json(report, server) | _domain_json(domain), indent=2,
                              ensure_ascii=False))
    else:
        click.echo("\n".join(_text(report, server, to, domain)))
    finish(0 if report.ok else 1)


def _check_outgoing(server: OutgoingServer, to: str | None, alternate: bool) -> None:
    """What must hold before an OutgoingServer's check can run."""
    if not supports(server):
        checked = ", ".join(sorted(str(p) for p in OUTGOING))
        raise UserError(f"test-connection cannot check protocol {server.spec.protocol} yet; "
                        f"it checks: {checked}")
    if to is None:
        raise UserError("--to ADDR is needed for an OutgoingServer: the test message goes "
                        "there")
    try:
        sample_notification(server, to)
    except ValidationError:
        raise UserError(f"--to {to!r} is not a usable email address") from None
    try:
        endpoint_of(server, alternate=alternate)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _load_bindings(store_url: str | None, target: Target,
                   approvals: tuple[str, ...]) -> None:
    """The store's credential bindings (SPEC S2): a test presents a credential only where
    an apply bound it, also for a server read with --config (without a store nothing is
    bound), unless the person running it approves SERVER's moves on the command line."""
    from reconciler.config.desired import ResourceKey
    from reconciler.config.endpoints import pairs_of
    from reconciler.credentials import gate
    from reconciler.credentials.moves import parse_approval

    server = target.server
    key = ResourceKey(target.kind, server.metadata.namespace, server.metadata.name)
    approved = False
    for given in approvals:
        try:
            named = parse_approval(given)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        approved = approved or named is None or named == key
    try:
        with opened_store(store_url) as store:
            pairs = store.credential_bindings()
    except UserError:
        pairs = frozenset()
    if approved:  # the server's credentials and its proxy's password
        spec = server.spec.model_dump(by_alias=True, mode="json", exclude_none=True)
        pairs = pairs | pairs_of(target.kind, spec)
        proxy = target.proxy_lookup()(server)
        if proxy is not None:
            pairs |= pairs_of("ProxyServer", proxy.model_dump(by_alias=True, mode="json",
                                                              exclude_none=True))
    gate.install(gate.Bindings(pairs))


@contextmanager
def _token_provider(server: Server, store_url: str | None, key_ref: str | None,
                    ca_file: Path | None) -> Iterator[Any]:
    """The daemon's token provider for an OAuth2 server (tokens cached sealed in the store,
    so a test uses and refreshes the same grant the daemon does); None for other servers."""
    if server.spec.auth.type != "oauth2":
        yield None
        return
    from reconciler.oauth.provider import provider_for_store

    with opened_store(store_url) as store:
        yield provider_for_store(store, key_ref=key_ref, ca_file=str(ca_file) if ca_file else None)


async def _walk(server: Server, to: str | None, alternate: bool,
                options: ProbeOptions) -> ProbeReport:
    try:
        if isinstance(server, IncomingServer):
            return await probe_incoming(server, options)
        report = (await probe_server(server, alternate=alternate, options=options)
                  ).with_plan(Step.SEND)
        if report.failed is None and to is not None:
            report = report.with_result(
                await send_test_message(server, to, alternate=alternate, options=options))
    except (UnsupportedProtocol, FetchError) as exc:
        raise UserError(str(exc)) from None
    return report


def _host_port(value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    host, _, port = value.rpartition(":") if value.count(":") == 1 or value.startswith("[") \
        else (value, "", "53")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:53)")
    return host.strip("[]"), int(port)


# -- rendering ---------------------------------------------------------------------


def _domain_text(domain: DomainReport | None) -> list[str]:
    """The sender domain's records: advice, outside the exit code."""
    if domain is None:
        return []
    lines = [f"Sender domain {domain.domain} (DNS: {domain.resolver}; advice, not part of "
             "the exit code):"]
    if domain.skipped:
        return [*lines, f"    {domain.skipped}", ""]
    lines += [f"    {'✓' if c.ok else '✗'} {c.record:<5}  {c.detail}" for c in domain.checks]
    lines += [f"    Fix {c.record}: {c.fix}" for c in domain.checks if not c.ok]
    return [*lines, ""]


def _domain_json(domain: DomainReport | None) -> dict[str, Any]:
    if domain is None:
        return {}
    return {"senderDomain": {
        "domain": domain.domain, "resolver": domain.resolver, "skipped": domain.skipped or None,
        "records": [{"record": c.record, "ok": c.ok, "detail": c.detail, "fix": c.fix or None}
                    for c in domain.checks]}}


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _fix(report: ProbeReport, server: Server) -> str | None:
    failed, endpoint = report.failed, report.endpoint
    if failed is None or endpoint is None:
        return None
    if isinstance(server, IncomingServer):
        return failed.fix  # the fetcher's classifier words it for this server
    return likely_fix(failed, server, endpoint)


def _text(report: ProbeReport, server: Server, to: str | None,
          domain: DomainReport | None = None) -> list[str]:
    spec = server.spec
    endpoint = report.endpoint
    which = "alternate host " if endpoint is not None and endpoint.alternate else ""
    how = (f"security {spec.security}" if isinstance(server, OutgoingServer) else
           f"{'starttls, ' if spec.starttls else ''}folder {spec.folder}")
    head = (f"Testing {server.kind} {report.server}: {spec.protocol} {which}"
            f"{endpoint.address if endpoint else '?'}, {how}, auth {spec.auth.type}")
    lines = [head + ("" if spec.enabled else " (disabled: the daemon does not use it)"), ""]
    width = max(len(step.label) for step in report.plan)
    for result in report.results:
        mark = "✓" if result.ok else "✗"
        lines.append(f"  {mark} {result.step.label:<{width}}  {result.detail}  "
                     f"({_ms(result.seconds)})")
    for step in report.not_run:
        lines.append(f"  · {step.label:<{width}}  not run")
    lines += ["", *_domain_text(domain)]
    failed = report.failed
    if failed is None and report.ok:
        lines.append(f"All checks passed; a test message was sent to {to}." if to and
                     isinstance(server, OutgoingServer) else
                     "All checks passed; nothing on the server was changed.")
        return lines
    if failed is not None and endpoint is not None:
        lines.append(f"Failed at {failed.step.label}: {failed.detail}")
        fix = _fix(report, server)
        if fix:
            lines.append(f"Likely fix: {fix}")
    return lines


def _json(report: ProbeReport, server: Server) -> dict[str, Any]:
    failed = report.failed
    endpoint = report.endpoint
    return {
        "server": report.server,
        "protocol": report.protocol,
        "address": endpoint.address if endpoint else None,
        "alternate": bool(endpoint and endpoint.alternate),
        "ok": report.ok,
        "steps": [
            {"step": str(r.step), "ok": r.ok, "detail": r.detail,
             "milliseconds": round(r.seconds * 1000, 1),
             "failure": str(r.failure) if r.failure else None, "code": r.code,
             "reason": str(r.reason) if r.reason else None}
            for r in report.results
        ],
        "notRun": [str(s) for s in report.not_run],
        "failedStep": str(failed.step) if failed else None,
        "fix": _fix(report, server),
    }
