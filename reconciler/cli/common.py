"""Shared CLI plumbing: user-facing errors become one message and exit 1."""

from __future__ import annotations

import click

from reconciler.config.secrets import SecretError


class UserError(click.ClickException):
    """A problem the user can fix; shown without a traceback."""

    exit_code = 1

    def format_message(self) -> str:
        return self.message


def _user_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [SecretError]
    try:
        from reconciler.state.base import StoreError

        errors.append(StoreError)
    except ImportError:  # pragma: no cover - the state package is always shipped
        pass
    return tuple(errors)


def run(cli: click.Group) -> int:
    try:
        # without standalone mode click *returns* the code of a `raise Exit(n)`
        returned = cli.main(standalone_mode=False, prog_name="reconcile")
        if isinstance(returned, int) and not isinstance(returned, bool):
            return returned
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except _user_errors() as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return 0
