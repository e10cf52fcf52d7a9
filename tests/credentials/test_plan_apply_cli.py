"""SPEC S2 through `reconcile plan` and `reconcile apply` on the example config: a host
change that keeps a server's credentials is a credential move in every plan format and
in saved plans, and apply writes nothing until it is approved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from plan.kit import copy_examples, edit

from reconciler.cli.main import cli
from reconciler.state import open_store

CLIENT = "oauth:microsoft/acme.onmicrosoft.com/3f2a9c1e-0b7d-4e55-9a61-5d2c8e7f1a01"
NEW = "smtp.attacker.example:587"
OLD = "smtp.office365.com:587"
APPROVE = "--approve-credential-move"


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def moved(tmp_path: Path, store_url: str) -> Path:
    """The examples applied, then o365-hr pointed at another host in the folder."""
    config = copy_examples(tmp_path)
    first = run("apply", config, "--store", store_url, "--yes")
    assert first.exit_code == 0, first.output
    edit(config / "acme" / "outgoing-servers.yaml", "host: smtp.office365.com",
         "host: smtp.attacker.example")
    return config


def test_plan_names_the_credential_and_both_endpoints_in_every_format(
        moved: Path, store_url: str) -> None:
    text = run("plan", moved, "--store", store_url)
    assert text.exit_code == 2
    assert (f"! OutgoingServer acme/o365-hr: {CLIENT} -> {NEW} (bound to "
            f"https://login.microsoftonline.com:443/acme.onmicrosoft.com/oauth2/v2.0/token, "
            f"{OLD})") in text.output
    assert f"approve with: {APPROVE} OutgoingServer/acme/o365-hr" in text.output
    assert "1 credential move to approve" in text.output

    md = run("plan", moved, "--store", store_url, "--format", "markdown").output
    assert "> **1 credential move**" in md
    assert f"<code>{NEW}</code>" in md and f"<code>{CLIENT}</code>" in md and OLD in md

    data = json.loads(run("plan", moved, "--store", store_url, "--format", "json").output)
    assert data["summary"]["credentialMoves"] == 1
    [move] = data["credentialMoves"]
    assert move == {"kind": "OutgoingServer", "namespace": "acme", "name": "o365-hr",
                    "credential": CLIENT, "endpoint": NEW,
                    "boundTo": [
                        "https://login.microsoftonline.com:443/acme.onmicrosoft.com/oauth2/"
                        "v2.0/token", OLD],
                    "approval": "OutgoingServer/acme/o365-hr"}


def test_a_saved_plan_is_refused_without_approval_and_applied_with_it(
        moved: Path, store_url: str, tmp_path: Path) -> None:
    saved = tmp_path / "plan.json"
    assert run("plan", moved, "--store", store_url, "--out", saved).exit_code == 2
    assert json.loads(saved.read_text())["credentialMoves"][0]["endpoint"] == NEW

    refused = run("apply", saved, "--store", store_url)
    assert refused.exit_code == 1
    assert f"{CLIENT} -> {NEW}" in refused.output and "Nothing was applied" in refused.output
    assert f"{APPROVE} OutgoingServer/acme/o365-hr" in refused.output
    assert "Traceback" not in refused.output
    wrong = run("apply", saved, "--store", store_url, APPROVE, "OutgoingServer/acme/dev-relay")
    assert wrong.exit_code == 1 and "Nothing was applied" in wrong.output
    with open_store(store_url) as store:
        assert store.head() == 1
        assert (CLIENT, NEW) not in store.credential_bindings()

    done = run("apply", saved, "--store", store_url, APPROVE, "all", "--actor", "lee")
    assert done.exit_code == 0, done.output
    with open_store(store_url) as store:
        assert (CLIENT, NEW) in store.credential_bindings()
        assert (CLIENT, OLD) not in store.credential_bindings()
        [move] = store.revision(2).meta.credential_moves
        assert (move.credential, move.endpoint, move.approval, move.approved_by) == (
            CLIENT, NEW, "all", "lee")
    shown = run("history", "show", "2", "--store", store_url).output
    assert f"{CLIENT} -> {NEW} (bound to" in shown and "approval all by lee" in shown


def test_a_malformed_approval_is_one_clear_error(moved: Path, store_url: str) -> None:
    result = run("apply", moved, "--store", store_url, "--yes", APPROVE, "o365-hr")
    assert result.exit_code == 1
    assert f"{APPROVE} 'o365-hr' names no resource" in result.output
    assert "KIND/NAMESPACE/NAME" in result.output and "Traceback" not in result.output
    with open_store(store_url) as store:
        assert store.head() == 1


def test_the_first_apply_into_a_new_store_binds_as_bootstrap(tmp_path: Path,
                                                             store_url: str) -> None:
    config = copy_examples(tmp_path)
    result = run("apply", config, "--store", store_url, "--yes")
    assert result.exit_code == 0, result.output
    assert "the first apply into a new store binds them without approval" in result.output
    with open_store(store_url) as store:
        moves = store.revision(1).meta.credential_moves
        assert moves and {m.approval for m in moves} == {"bootstrap"}
        assert (CLIENT, OLD) in store.credential_bindings()
