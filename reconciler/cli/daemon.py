"""`reconcile daemon`: run the dispatch daemon until SIGTERM or SIGINT (SPEC O, X3, X4).

Mail-server configuration is not given here: the daemon reads what
`reconcile apply` wrote to the store and picks up new revisions while it runs.
The options are about how this process runs. Logs go to stderr as one JSON
object per line.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import click

from reconciler.cli.common import UserError, store_option, token_key_option
from reconciler.cli.console import console_options, console_settings
from reconciler.cli.sync import sync_options, sync_settings
from reconciler.runtime.settings import DaemonSettings

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(DaemonSettings)
             if f.default is not dataclasses.MISSING}
LOG_LEVELS = ("debug", "info", "warning", "error")
ROLES = ("all", "intake", "worker")  # as reconciler.daemon.app.ROLES, without importing it
MAX_AUTO_WORKERS = 2  # see auto_workers


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``:PORT`` (all interfaces)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--listen {text!r}: write HOST:PORT, e.g. 127.0.0.1:8025")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class WorkersParam(click.ParamType):
    """``--workers``: a count 0-64, or ``auto``."""

    name = "workers"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> int | str:
        if value == "auto" or isinstance(value, int):
            return value  # type: ignore[return-value]
        text = str(value)
        if text.isdigit() and int(text) <= 64:
            return int(text)
        self.fail(f"{text!r}: write a number of worker processes (0-64) or auto", param, ctx)


def auto_workers(cores: int | None = None) -> int:
    """Worker processes for ``--workers auto`` on a machine with ``cores`` usable cores.

    One Python process uses one core, so a second core is only used by a second
    process: the intake (HTTP, validation, the outbox commit) in one, sending in the
    others. A worker delivers nearly as fast as one intake accepts (bench/dispatch.py),
    so more than two would wait for the one intake, and on SQLite only add writers
    taking turns at the write lock. On a single core splitting only adds a claim
    transaction per message (one process hands new messages to its worker directly).
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count() or 1
    return max(0, min(cores - 1, MAX_AUTO_WORKERS))


def check_token_refs(refs: tuple[str, ...], what: str = "--api-token-ref") -> tuple[str, ...]:
    """Secret references only, each readable now: a typo fails at start, not at first call."""
    from pydantic import ValidationError

    from reconciler.config.secrets import SecretError, SecretRef, redact_ref, resolve_operator

    for ref in refs:
        try:
            parsed = SecretRef.model_validate({"secretRef": ref})
        except ValidationError:
            raise UserError(f"{what} takes a secret reference (env:NAME, file:/path "
                            "or enc:v1:...), never the token itself") from None
        try:
            resolve_operator(parsed.secret_ref)
        except SecretError as exc:
            raise UserError(f"{what} {redact_ref(ref)}: {exc}") from None
    return refs


@click.command("daemon")
@store_option
@click.option("--listen", default=f"{_DEFAULTS['listen_host']}:{_DEFAULTS['listen_port']}",
              show_default=True, metavar="HOST:PORT", help="Where the HTTP API listens.")
@click.option("--api-token-ref", "--api-token", "api_token_refs", multiple=True, metavar="REF",
              help="Bearer token of the API as a secret reference (env:NAME, file:/path); "
              "repeatable, e.g. one per client. Such a token is an admin of every "
              "namespace; give roles and namespaces with --access-file.")
@click.option("--access-file", default=None, metavar="FILE",
              type=click.Path(exists=True, dir_okay=False),
              help="YAML file of API tokens with their role (sender, viewer, auditor, "
              "operator, admin) and namespaces, and whether /metrics needs a token "
              "(metrics.requireToken; default: yes when any token is configured). "
              "See docs/access.md.")
@click.option("--worker-id", default=None, metavar="ID",
              help="Owner name of this daemon's outbox leases; unique per running daemon "
              "(default HOST:PID).")
@click.option("--health-interval", type=click.FloatRange(min=0.1), show_default=True,
              default=_DEFAULTS["health_interval_seconds"], metavar="SECONDS",
              help="How often each server is probed.")
@click.option("--notify-webhook", default=None, metavar="URL",
              help="Where server health transitions are posted.")
@click.option("--ca-file", default=None, metavar="PEM",
              type=click.Path(exists=True, dir_okay=False),
              help="Extra trusted CA certificates for private mail servers.")
@token_key_option
@click.option("--claim-batch", type=click.IntRange(1, 10_000), show_default=True,
              default=_DEFAULTS["claim_batch"], help="Outbox messages claimed at a time.")
@click.option("--lease-seconds", type=click.FloatRange(min=0.1), show_default=True,
              default=_DEFAULTS["lease_seconds"], metavar="SECONDS",
              help="How long a claimed message stays ours without renewal; after a crash "
              "other daemons wait this long before sending its messages.")
@click.option("--poll-interval", type=click.FloatRange(min=0.001), show_default=True,
              default=_DEFAULTS["poll_interval_seconds"], metavar="SECONDS",
              help="Idle wait between outbox checks.")
@click.option("--reload-interval", type=click.FloatRange(min=0.01), show_default=True,
              default=_DEFAULTS["reload_interval_seconds"], metavar="SECONDS",
              help="How often the live config revision is checked.")
@click.option("--shutdown-grace", type=click.FloatRange(min=0), show_default=True,
              default=_DEFAULTS["shutdown_grace_seconds"], metavar="SECONDS",
              help="On SIGTERM, how long sends in flight may take to finish.")
@click.option("--workers", type=WorkersParam(), default=None, metavar="N|auto",
              help="Send in N worker processes beside one intake (API) process, "
              "supervised by this one (restarted on a crash, stopped together); 0: one "
              "process does everything. One Python process uses at most one core. "
              "[default: auto: one per core beyond the first, at most "
              f"{MAX_AUTO_WORKERS}; one process on a single core]")
@click.option("--role", type=click.Choice(ROLES), default="all", show_default=True,
              help="Run only the intake API or only the send workers in this process, e.g. "
              "on different hosts sharing a PostgreSQL store (workers then poll the outbox).")
@click.option("--events-webhook", default=None, metavar="URL|REF",
              help="Where ticket events from incoming mail, and delivery events (sent, "
              "failed, bounced) of notifications, are POSTed (a URL or a secret reference); "
              "without it ticket events wait in the store for GET /v1/events.")
@click.option("--events-secret", default=None, metavar="REF",
              help="Secret reference of the key that signs each event POST (HMAC-SHA256).")
@click.option("--sender-directory", default=None, metavar="FILE",
              type=click.Path(exists=True, dir_okay=False),
              help="YAML/JSON list of the desk's users for incoming mail (guests, commands), "
              "asked after the namespace's SenderDirectory resources.")
@click.option("--event-retention-days", type=click.FloatRange(min=0), show_default=True,
              default=_DEFAULTS["event_retention_days"], metavar="DAYS",
              help="Delete ticket events this long after the desk took them (webhook or "
              "ack); events not yet delivered are always kept. 0: keep for ever.")
@click.option("--marker-retention-days", type=click.FloatRange(min=0), show_default=True,
              default=_DEFAULTS["marker_retention_days"], metavar="DAYS",
              help="Forget a fetched mail's done-marker once no fetch has listed the mail "
              "(unread, or on a POP3 server) for this long. 0: keep for ever.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
@sync_options
@console_options
def command(store_url: str | None, listen: str, api_token_refs: tuple[str, ...],
            access_file: str | None,
            worker_id: str | None, health_interval: float, notify_webhook: str | None,
            ca_file: str | None, token_key_ref: str | None, claim_batch: int,
            lease_seconds: float, poll_interval: float,
            reload_interval: float, shutdown_grace: float, workers: int | str | None, role: str,
            events_webhook: str | None, events_secret: str | None,
            sender_directory: str | None, event_retention_days: float,
            marker_retention_days: float, log_level: str, **sync: Any) -> None:
    """Send the outbox's notifications through the applied servers; serve the API.

    Stops gracefully on SIGTERM or SIGINT: sends in flight finish (within
    --shutdown-grace), the rest are handed back for the next daemon.
    """
    from reconciler.config.secret_places import PlacesSettingError, current
    from reconciler.daemon import logs
    from reconciler.daemon.app import DaemonError, run
    from reconciler.state import DEFAULT_STORE

    host, port = parse_listen(listen)
    try:
        current()  # a broken RECONCILE_SECRET_DIRS fails now, not at the first send
    except PlacesSettingError as exc:
        raise UserError(str(exc)) from None
    options: dict[str, object] = {}
    if worker_id:
        options["worker_id"] = worker_id
    from_file: dict[str, Any] = {}
    if access_file:
        access, from_file = _access(access_file)
        options.update(access)
    # The console's options arrive with the sync ones; the access file fills the rest.
    console = console_settings(sync, from_file)
    settings = DaemonSettings(
        store_url=store_url or DEFAULT_STORE,
        listen_host=host,
        listen_port=port,
        api_tokens=check_token_refs(api_token_refs),
        health_interval_seconds=health_interval,
        notify_webhook=notify_webhook,
        ca_file=ca_file,
        token_key_ref=token_key_ref,
        claim_batch=claim_batch,
        lease_seconds=lease_seconds,
        poll_interval_seconds=poll_interval,
        reload_interval_seconds=reload_interval,
        shutdown_grace_seconds=shutdown_grace,
        role=role,
        events_webhook=events_webhook,
        events_secret=events_secret,
        sender_directory=sender_directory,
        event_retention_days=event_retention_days,
        marker_retention_days=marker_retention_days,
        **options,  # type: ignore[arg-type]
        **sync_settings(sync),
        **console,
    )
    logs.configure(getattr(logging, log_level.upper()))
    if workers and role != "all":
        raise UserError("--workers starts both roles itself; leave out --role")
    # The default layout uses the machine's cores; --role runs one half in this process.
    count = auto_workers() if workers in (None, "auto") and role == "all" else int(workers or 0)
    try:
        _require_store(settings.store_url)
        if count:
            from reconciler.daemon.supervisor import SupervisorError, supervise

            try:
                supervise(settings, count, log_level)
            except SupervisorError as exc:
                raise DaemonError(str(exc)) from None
        else:
            run(settings)
    except DaemonError as exc:
        logging.getLogger("reconciler.daemon").error("daemon failed: %s", exc)
        raise UserError(f"daemon failed: {exc}") from None


def _access(path: str) -> tuple[dict[str, object], dict[str, Any]]:
    """The settings an access file gives, then its console settings (the command line
    may override those); its problems as one UserError, one per line."""
    from reconciler.runtime.access_file import AccessFileError, load_access_file

    try:
        parsed = load_access_file(path)
    except AccessFileError as exc:
        raise UserError(f"--access-file: {exc}") from None
    check_token_refs(tuple(t.secret_ref for t in parsed.tokens), f"--access-file {path}: token")
    return {"api_access": tuple(t.spec() for t in parsed.tokens), "access_file": path,
            "metrics_require_token": None if parsed.metrics is None
            else parsed.metrics.require_token}, parsed.console_settings()


def _require_store(url: str) -> None:
    """The daemon serves what was applied and never creates a store: on a mistyped
    --store it would accept notifications that no configuration can route."""
    from reconciler.daemon.app import DaemonError
    from reconciler.state import StoreError, open_store

    try:
        open_store(url, create=False).close()
    except StoreError as exc:
        raise DaemonError(str(exc)) from None
