"""`reconcile history` (SPEC P4): list, filter, show, as-of, verify, export."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from peers.postgres import RawSql
from plan.kit import copy_examples, edit, example_count, set_secret_env, use_encrypted_secret

from reconciler.policy.validate import validate_path
from reconciler.state import RevisionKind, open_store

from .helpers_history import HR, apply, assert_user_error, live_set, run, run_installed


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return copy_examples(tmp_path)


SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def three(config: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Revision 1 applies the examples, 2 is an out-of-band edit, 3 applies a git change."""
    for name, value in (("GITHUB_SHA", SHA), ("GITHUB_REF", "refs/heads/main"),
                        ("GITHUB_REF_NAME", "main"), ("GITHUB_HEAD_REF", "")):
        monkeypatch.setenv(name, value)
    apply(config, store_url, actor="ci-bot", message="initial import")
    live_set(store_url, "OutgoingServer/acme/o365-hr", "enabled=false", actor="alice",
             reason="HR mailbox migration")
    edit(config / "acme" / "outgoing-servers.yaml", "attachmentLimitMB: 10",
         "attachmentLimitMB: 15")
    apply(config, store_url, actor="bob", message="raise HR attachment limit\nlong text")
    return store_url


def _rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines()[1:]]


def test_bare_history_lists_newest_first(three: str) -> None:
    out = run("history", "--store", three).stdout
    header, *lines = out.splitlines()
    assert header.split()[:4] == ["REV", "TIME", "KIND", "ACTOR"]
    assert [row[0] for row in _rows(out)] == ["3", "2", "1"]
    assert "apply" in lines[0] and "bob" in lines[0] and "+0 ~1 -0" in lines[0]
    assert lines[0].endswith("raise HR attachment limit")  # first line of the message only
    assert "out-of-band" in lines[1] and "alice" in lines[1]
    assert lines[1].endswith("HR mailbox migration")
    assert f"+{example_count()} ~0 -0" in lines[2] and "initial import" in lines[2]
    assert lines[2].split()[6] == SHA[:7]  # after a 3-word time


def test_history_of_one_resource_and_filters(three: str) -> None:
    s = ("--store", three)
    for target in (["OutgoingServer/o365-hr", "-n", "acme"], ["OutgoingServer/acme/o365-hr"]):
        assert [r[0] for r in _rows(run("history", *target, *s).stdout)] == ["3", "2", "1"]
    # Options may come before or after the resource.
    out = run("history", "--actor", "alice", "OutgoingServer/acme/o365-hr", *s).stdout
    assert [r[0] for r in _rows(out)] == ["2"]
    gmail = run("history", "OutgoingServer/acme/gmail-notifications", *s).stdout
    assert [r[0] for r in _rows(gmail)] == ["1"]
    assert [r[0] for r in _rows(run("history", "--namespace", "globex", *s).stdout)] == ["1"]
    assert [r[0] for r in _rows(run("history", "--kind", "out-of-band", *s).stdout)] == ["2"]
    assert [r[0] for r in _rows(run("history", "--limit", "2", *s).stdout)] == ["3", "2"]
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    assert run("history", "--since", tomorrow, *s).stdout.strip() == "no revisions match"
    assert len(_rows(run("history", "--since", yesterday, "--until", tomorrow, *s).stdout)) == 3
    assert run("history", "--until", yesterday, *s).stdout.strip() == "no revisions match"
    data = json.loads(run("history", "--format", "json", "--actor", "bob", *s).stdout)
    assert [(d["revision"], d["kind"], d["actor"]) for d in data] == [(3, "apply", "bob")]


def test_history_bad_inputs_are_one_message(three: str) -> None:
    s = ("--store", three)
    assert_user_error(run("history", "Outgoingserver/x", *s, code=None), "did you mean")
    assert_user_error(run("history", "shwo", "1", *s, code=None), "history show")
    assert_user_error(run("history", "show", "9", *s, code=None), "no revision 9", "1 to 3")
    result = run("history", "--since", "last tuesday", *s, code=2)  # a usage error
    assert "not an ISO date" in result.output and "Traceback" not in result.output
    assert "REV" in run("history", "show", "0", *s, code=2).output  # a usage error: REV >= 1


def test_missing_sqlite_store_is_an_error_not_a_new_store(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "state.db"
    assert_user_error(run("history", "--store", missing, code=None), "no state store", str(missing))
    assert not missing.parent.exists()


def test_empty_store_says_so(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    open_store(db).close()
    assert run("history", "--store", db).stdout.strip() == "no revisions yet"


def test_show_one_revision_with_field_diff_and_meta(three: str) -> None:
    out = run("history", "show", "2", "--store", three).stdout
    assert out.startswith("revision 2  (out-of-band)")
    assert "actor:      alice" in out and "message:    HR mailbox migration" in out
    assert "~ update OutgoingServer/acme/o365-hr" in out
    assert "    spec.enabled: true → false" in out
    with open_store(three) as store:
        rev = store.revision(2)
    assert f"hash:       {rev.hash}" in out and f"prev hash:  {rev.prev_hash}" in out
    assert run("history", "--store", three, "show", "2").stdout == out  # either position
    applied = run("history", "show", "3", "--store", three).stdout
    assert "    spec.attachmentLimitMB: 10.0 → 15.0" in applied
    assert "    spec.enabled: false → true" in applied  # the apply reverted the edit
    assert f"commit:     {SHA}" in applied and "branch:     main" in applied
    assert "desired:" in applied
    data = json.loads(run("history", "show", "3", "--format", "json", "--store", three).stdout)
    assert data["revision"] == 3 and data["prevHash"] == rev.hash
    assert data["changes"][0]["after"]["spec"]["attachmentLimitMB"] == 15.0


def test_as_of_round_trips_through_validate(config: Path, store_url: str, tmp_path: Path) -> None:
    original = validate_path(config).desired
    apply(config, store_url)
    edit(config / "acme" / "outgoing-servers.yaml", "senderName: Acme HR Desk",
         "senderName: Acme People Desk")
    apply(config, store_url)
    changed = validate_path(config).desired
    assert original is not None and changed is not None
    for rev, want in ((1, original), (2, changed)):
        out = run("history", "as-of", str(rev), "--store", store_url).stdout
        docs = [d for d in yaml.safe_load_all(out) if d is not None]
        assert len(docs) == len(want)
        stream = tmp_path / f"as-of-{rev}.yaml"
        stream.write_text(out)
        run("validate", stream)  # exit 0
        rebuilt = validate_path(stream).desired
        assert rebuilt is not None and rebuilt.digest == want.digest
        folder = tmp_path / f"tree-{rev}"
        run("history", "as-of", str(rev), "--out", folder, "--store", store_url)
        assert (folder / "acme" / "outgoingserver.yaml").is_file()
        from_tree = validate_path(folder).desired
        assert from_tree is not None and from_tree.digest == want.digest
    # Revision 0 is the empty store; a non-empty --out folder is refused.
    assert "0 resources" in run("history", "as-of", "0", "--store", store_url).stdout
    assert_user_error(run("history", "as-of", "1", "--out", tmp_path / "tree-1",
                          "--store", store_url, code=None), "not empty")
    assert_user_error(run("history", "as-of", "7", "--store", store_url, code=None),
                      "no revision 7")


def test_verify_ok(three: str) -> None:
    result = run("history", "verify", "--store", three)
    assert "history OK: 3 revisions verified" in result.stdout
    data = json.loads(run("history", "verify", "--format", "json", "--store", three).stdout)
    assert data == {"ok": True, "checked": 3, "firstBroken": None, "reason": ""}


@pytest.mark.parametrize("statements, broken", [
    (["UPDATE revisions SET actor = 'mallory' WHERE number = 2"], 2),
    (["UPDATE revisions SET message = 'nothing to see' WHERE number = 1"], 1),
    (["DELETE FROM resource_versions WHERE revision = 3",
      "DELETE FROM revisions WHERE number = 3"], 3),
], ids=["actor", "message", "deleted"])
def test_verify_detects_a_row_edited_with_raw_sql(
    three: str, raw_sql: RawSql, statements: list[str], broken: int
) -> None:
    for statement in statements:
        raw_sql(statement)
    result = run("history", "verify", "--store", three, code=1)
    assert f"history BROKEN at revision {broken}" in result.output
    assert "restore the store from a backup" in result.output
    assert "who edited the database" in result.output
    assert "Traceback" not in result.output
    export = json.loads(run("history", "export", "--store", three).stdout)
    assert export["verification"]["ok"] is False
    assert export["verification"]["firstBroken"] == broken


def test_verify_exit_code_through_the_installed_command(three: str, raw_sql: RawSql) -> None:
    assert run_installed("history", "verify", "--store", three).returncode == 0
    raw_sql("UPDATE revisions SET actor = 'mallory' WHERE number = 1")
    proc = run_installed("history", "verify", "--store", three)
    assert proc.returncode == 1 and "revision 1" in proc.stderr


def test_export_json_for_auditors(three: str, tmp_path: Path) -> None:
    data = json.loads(run("history", "export", "--format", "json", "--store", three).stdout)
    revs = data["revisions"]
    assert [r["revision"] for r in revs] == [1, 2, 3]  # oldest first
    assert data["head"] == 3 and data["verification"]["ok"] is True
    for prev, rev in itertools.pairwise(revs):
        assert rev["prevHash"] == prev["hash"]
    assert revs[1]["kind"] == RevisionKind.OUT_OF_BAND.value
    assert revs[1]["actor"] == "alice" and revs[1]["message"] == "HR mailbox migration"
    assert revs[1]["changes"][0]["fields"] == [
        {"path": "spec.enabled", "before": True, "after": False, "derived": False}]
    assert revs[0]["gitCommit"] and len(revs[0]["changes"]) == example_count()
    out = tmp_path / "audit" / "history.json"
    out.parent.mkdir()
    result = run("history", "export", "--out", out, "--with-bodies", "--store", three)
    assert result.stdout == "" and f"wrote 3 revisions to {out}" in result.output
    bodies = json.loads(out.read_text())["revisions"][1]["changes"][0]
    assert bodies["before"]["spec"]["enabled"] is True
    assert bodies["after"]["spec"]["enabled"] is False


def test_secret_values_never_reach_output_history_export_or_db(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = set_secret_env(monkeypatch)
    ref = use_encrypted_secret(config)
    ciphertext = ref.removeprefix("enc:v1:")
    db = tmp_path / "state" / "state.db"
    db.parent.mkdir()  # apply creates a store only in a folder that exists
    s = ("--store", db)
    outputs = [
        run("validate", config).output,
        apply(config, db).output,
        # Someone pastes the real value where a reference belongs: refused, not echoed.
        live_set(str(db), "OutgoingServer/acme/gmail-notifications",
                 f"auth.clientSecret={values[0]}", code=1).output,
        live_set(str(db), "OutgoingServer/acme/o365-hr", f"spec.auth.clientSecret={values[1]}",
                 code=1).output,
        live_set(str(db), "OutgoingServer/acme/o365-hr",
                 "auth.clientSecret={secretRef: env:ROTATED_SECRET}").output,
        run("live", "get", str(HR), *s).output,
        run("history", *s).output,
        run("history", "show", "1", *s).output,
        run("history", "show", "2", "--format", "json", *s).output,
        run("history", "export", "--with-bodies", *s).output,
        run("history", "as-of", "1", "--redact", *s).output,
        run("drift", config, *s, code=2).output,
        run("drift", config, "--format", "json", *s, code=2).output,
        run("plan", config, *s, code=2).output,
        run("history", "verify", *s).output,
    ]
    assert "enc:v1:***" in outputs[9]
    for out in outputs:
        assert ciphertext not in out and ciphertext[:24] not in out, out
        for value in values:
            assert value not in out, out
    stored = b"".join(p.read_bytes() for p in db.parent.iterdir())
    for value in values:
        assert value.encode() not in stored
    # The unredacted as-of carries the ciphertext (what git holds), never the value.
    full = run("history", "as-of", "1", *s).output
    assert ref in full and all(v not in full for v in values)
