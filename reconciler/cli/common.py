"""Shared CLI plumbing: user-facing errors become one message and exit 1; the
`--store` option and opening the store; resource keys, --format and the
--since/--until times on the command line.

SQLAlchemy and Alembic load only when a store is opened, so commands that
never touch the store start quickly.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from reconciler.config.desired import ResourceKey
from reconciler.config.secrets import SecretError
from reconciler.state import DEFAULT_STORE, Action, RevisionKind, RevisionMeta
from reconciler.state.base import StaleRevision, StoreError

if TYPE_CHECKING:
    from reconciler.state import Revision, Store

F = TypeVar("F", bound=Callable[..., Any])

STORE_ENV = "RECONCILE_STORE"


class UserError(click.ClickException):
    """A problem the user can fix; shown without a traceback."""

    exit_code = 1


class UsageExitsOne(click.Command):
    """Usage errors exit 1, not click's 2: for commands where 2 means "there are
    changes" (plan) or "drift found" (drift), so CI can tell them apart."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            exc.exit_code = 1
            raise


def format_option(*choices: str) -> Callable[[F], F]:
    """``--format``, defaulting to the first of ``choices`` (text or json if none)."""
    choices = choices or ("text", "json")
    return click.option("--format", "fmt", type=click.Choice(choices), default=choices[0],
                        show_default=True)


def finish(code: int) -> NoReturn:
    raise click.exceptions.Exit(code)


store_option = click.option(
    "--store", "store_url", envvar=STORE_ENV, metavar="URL",
    help=f"State store: a SQLite file or postgresql://user@host/db URL "
    f"(default {DEFAULT_STORE}, or ${STORE_ENV}).",
)


def split_name(text: str, namespace: str | None, kind: str | None = None,
               ) -> tuple[str | None, str]:
    """``NAME`` or ``NAMESPACE/NAME`` (optionally after ``KIND/``) -> (namespace, name).

    The namespace is ``--namespace`` when the text has none; a text that names
    another namespace than ``--namespace`` is an error, not a silent choice.
    """
    if kind and text.startswith(f"{kind}/"):
        text = text[len(kind) + 1:]
    if "/" not in text:
        return namespace, text
    ns, _, name = text.partition("/")
    if not ns or not name or "/" in name:
        raise UserError(f"{text!r}: give SERVER as NAME or NAMESPACE/NAME")
    if namespace and namespace != ns:
        raise UserError(f"{text!r} names namespace {ns!r} but --namespace says {namespace!r}")
    return ns, name


# the key sealing cached OAuth2 tokens, as a secret reference
token_key_option = click.option(
    "--token-key", "token_key_ref", envvar="RECONCILE_TOKEN_KEY_REF", metavar="REF",
    help="Secret reference (env:NAME, file:/path) of the key that seals "
    "cached OAuth2 tokens in the store (default env:RECONCILE_TOKEN_KEY).",
)


@contextmanager
def opened_store(url: str | None, *, create: bool = False) -> Iterator[Store]:
    """The store, with every store error turned into one message and exit 1.

    Only ``apply`` passes ``create``: every other command on a store that does
    not exist says so, so a mistyped ``--store`` or ``$RECONCILE_STORE`` never
    becomes a new, empty store (on which plan would show everything as new).
    """
    from reconciler.state import open_store

    location = url or DEFAULT_STORE
    try:
        if create:
            _check_creatable(location)
        with open_store(location, create=create) as store:
            yield store
    except StoreError as exc:
        raise UserError(str(exc)) from None


def _check_creatable(location: str) -> None:
    """A new SQLite store goes only into a folder that exists, or the default folder.

    Creating folders would turn a typo in the path into a store nobody finds again.
    """
    from reconciler.state.location import STORE_SETTINGS, parse_location

    path = parse_location(location).sqlite_path
    # .reconcile/ in the working folder is made on first apply, like git's .git/
    if path is None or path.exists() or path.parent.is_dir() or path == Path(DEFAULT_STORE):
        return
    why = "is not a folder" if path.parent.exists() else "does not exist"
    raise UserError(
        f"no state store at {path}, and apply creates one only in an existing folder: "
        f"{path.parent} {why}. Check {STORE_SETTINGS} for a typo, or create the folder first."
    )


def parse_key(text: str, namespace: str | None) -> ResourceKey:
    """``KIND/NAME`` (in ``--namespace`` or default) or ``KIND/NAMESPACE/NAME``."""
    from reconciler.config.models import KINDS

    try:
        key = ResourceKey.parse(text, default_namespace=namespace or "default")
    except ValueError as exc:
        raise UserError(f"{exc}, e.g. OutgoingServer/gmail-notifications") from None
    if not all(key):
        raise UserError(f"{text!r} has an empty part; write KIND/NAME or KIND/NAMESPACE/NAME")
    if namespace and text.count("/") == 2 and key.namespace != namespace:
        raise UserError(f"{text!r} names namespace {key.namespace!r} but --namespace says "
                        f"{namespace!r}")
    if key.kind not in KINDS:
        close = difflib.get_close_matches(key.kind, list(KINDS), n=1)
        hint = f"did you mean {close[0]}?" if close else "known kinds: " + ", ".join(sorted(KINDS))
        raise UserError(f"unknown kind {key.kind!r}; {hint}")
    return key


_RELATIVE = re.compile(r"^(?P<n>\d+)(?P<unit>[smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(value: str, *, end_of_day: bool, now: datetime | None = None) -> datetime:
    """ISO date or time (UTC unless a zone is given), or an age like ``90m``, ``2h``, ``7d``."""
    relative = _RELATIVE.match(value.strip())
    if relative:
        age = timedelta(**{_UNITS[relative["unit"]]: int(relative["n"])})
        return (now or datetime.now(UTC)) - age
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO date or time (2024-05-01, 2024-05-01T14:30:00Z) "
            "nor an age (30m, 2h, 7d)"
        ) from None
    if end_of_day and len(value) == 10:
        when = datetime.combine(when.date(), time.max)  # a bare date: the whole day
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def time_bound(_ctx: click.Context, param: click.Parameter, value: str | None,
               ) -> datetime | None:
    """``--since``/``--until`` callback (:func:`parse_time`); a bare ``--until`` date
    means up to the end of that day."""
    return None if value is None else parse_time(value, end_of_day=param.name == "until")


def document_label(data: Mapping[str, Any]) -> str:
    """KIND/NAMESPACE/NAME of a raw document, with ``?`` for what it lacks."""
    meta = data.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    return f"{data.get('kind', '?')}/{meta.get('namespace', 'default')}/{meta.get('name', '?')}"


def show_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def action_counts(rev: Revision) -> dict[Action, int]:
    return {a: sum(c.action is a for c in rev.changes) for a in Action}


def columns(rows: Sequence[Sequence[str]], *, right: int = 0) -> str:
    """Rows as aligned columns, the first ``right`` of them right-aligned; the last
    column is not padded, so no line ends in blanks."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.rjust(w) if i < right else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row[:-1], widths, strict=True))]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def run(cli: click.Group) -> int:
    try:
        # without standalone mode click *returns* the code of a `raise Exit(n)`
        returned = cli.main(standalone_mode=False, prog_name="reconcile")
        if isinstance(returned, int) and not isinstance(returned, bool):
            return returned
    except click.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (SecretError, StoreError) as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return 0


def record_event(store: Store, who: str, message: str, kind: RevisionKind,
                 *, lost: str = "") -> int:
    """An empty revision of ``kind`` naming who did what (a login, a sync suspended):
    the history is where auditors look. Retried while applies land in between."""
    for _ in range(5):  # an apply may land between reading the head and committing
        try:
            return store.commit([], RevisionMeta(actor=who, message=message, kind=kind),
                                base_revision=store.head()).number
        except StaleRevision:
            continue
    raise UserError(f"the store kept moving{lost}; try again")
