"""`reconcile secret`: keys and values for secret references (SPEC C5).

Nothing here ever prints a secret: ``encrypt`` shows only the ciphertext
reference, ``check`` only says whether each reference resolves and why not.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from pydantic import ValidationError

from reconciler.cli.common import UserError, document_label, finish
from reconciler.config.diagnostics import Diagnostics, Severity
from reconciler.config.loader import load_tree, locate
from reconciler.config.sealing import new_key
from reconciler.config.secrets import (
    ENV_KEY,
    ENV_KEY_FILE,
    SecretError,
    SecretRef,
    encrypt,
    iter_refs,
    redact_ref,
    resolve,
)

_KEY_HELP = f"""\
Keep this key out of git. Whoever encrypts values and the daemon that sends mail need it:
  CI:      store it as the secret {ENV_KEY} (e.g. GitHub: Settings > Secrets and variables >
           Actions) and pass it to the job as that environment variable
  daemon:  put it in a file only the daemon's user can read and set {ENV_KEY_FILE}=/path/to/key
           (`reconcile secret keygen --out /path/to/key` creates such a file, mode 0600)
Then encrypt each value with `reconcile secret encrypt`. To rotate, create a new key,
re-encrypt every value with it, commit, and replace the key in CI and on the daemon host."""


@click.group("secret")
def command() -> None:
    """Create the encryption key, encrypt values, check that references resolve."""


@command.command("keygen")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the key to this new file (mode 0600) instead of printing it.")
def keygen(out: Path | None) -> None:
    """Create a new key for encrypted-in-git values (enc:v1:...).

    The key is printed on stdout and stored nowhere, unless --out is given.
    """
    key = new_key()
    if out is None:
        click.echo(key)
        click.echo(_KEY_HELP, err=True)
        return
    try:
        # O_EXCL: overwriting a key would make every value encrypted with it unreadable.
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UserError(f"{out} already exists; refusing to overwrite a key "
                        "(values encrypted with it could no longer be decrypted)") from None
    except OSError as exc:
        raise UserError(f"cannot create {out}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        os.fchmod(handle.fileno(), 0o600)  # the umask may have been looser than intended
        handle.write(key + "\n")
    click.echo(f"key written to {out} (mode 0600); use it with {ENV_KEY_FILE}={out}")
    click.echo(_KEY_HELP, err=True)


@command.command("encrypt")
def encrypt_command() -> None:
    """Encrypt a value read from stdin (or typed at a hidden prompt).

    The value is never taken as an argument, so it cannot end up in shell
    history. Prints {secretRef: enc:v1:...} to paste into the YAML; the key
    comes from RECONCILE_SECRET_KEY or RECONCILE_SECRET_KEY_FILE.
    """
    if sys.stdin.isatty():
        value: str = click.prompt("Secret value", hide_input=True, confirmation_prompt=True,
                                  err=True)
    else:
        # Piped values usually end with the newline of `echo`; `file:` references
        # strip it the same way.
        value = sys.stdin.read().rstrip("\r\n")
    if not value:
        raise UserError("nothing to encrypt: the value is empty")
    try:
        reference = encrypt(value)
    except SecretError as exc:  # no key, or not a valid one
        raise UserError(str(exc)) from None
    click.echo(f"{{secretRef: {reference}}}")


def _problem(ref: str) -> str | None:
    """Why ``ref`` cannot be resolved here, or None; the value itself is dropped at once."""
    try:
        SecretRef.model_validate({"secretRef": ref})
    except ValidationError as exc:
        return "; ".join(e["msg"] for e in exc.errors(include_url=False))
    try:
        empty = not resolve(ref)
    except SecretError as exc:
        return str(exc)
    return "resolves to an empty value" if empty else None


@command.command("check")
@click.argument("path", type=click.Path(path_type=Path), default=Path("."))
@click.option("-v", "--verbose", is_flag=True, help="Also list the references that resolve.")
def check(path: Path, verbose: bool) -> None:
    """Resolve every secret reference below PATH with this environment.

    Reports each reference that cannot be resolved (missing variable, unreadable
    file, missing or wrong key) with its field, never a value. Run it where the
    daemon runs, or in CI with the same variables. Exit 1 if any fails.
    """
    diags = Diagnostics()
    documents = load_tree(path, diags)
    unreadable = [d for d in diags.items if d.severity is Severity.ERROR
                  and d.code != "duplicate-key"]
    for d in unreadable:
        click.echo(f"{d.location}  error: {d.message}", err=True)
    total = failed = 0
    for doc in documents:
        data = doc.data
        if not isinstance(data, dict):
            continue
        label = document_label(data)
        for field_path, ref in iter_refs(data):
            total += 1
            problem = _problem(ref)
            shown = redact_ref(ref)
            line, col = locate(data, field_path)
            where = f"{doc.file}:{line}:{col}  {label}  {'.'.join(map(str, field_path))}"
            if problem is None:
                if verbose:
                    click.echo(f"{where}  ok: {shown}")
                continue
            failed += 1
            # Refusals of the place (SPEC S2) already start with the reference.
            click.echo(f"{where}  error: " + (problem if problem.startswith(shown)
                                              else f"{shown}: {problem}"))
    click.echo(f"{total} secret reference(s): {total - failed} resolved, {failed} cannot be "
               "resolved" + (f"; {len(unreadable)} file error(s)" if unreadable else ""))
    finish(1 if failed or unreadable else 0)
