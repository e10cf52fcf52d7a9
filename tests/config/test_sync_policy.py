"""SyncPolicy (SPEC X5): safe defaults, positioned errors, one policy per kind."""

from __future__ import annotations

from pathlib import Path

from reconciler.config.models.sync_policy import SelfHeal, SyncMode, SyncPolicySpec

from .helpers import validate_files

HEAD = "apiVersion: reconciler.dev/v1\nkind: SyncPolicy\nmetadata: {name: %s, namespace: ns}\n"


def test_defaults_report_but_never_apply() -> None:
    spec = SyncPolicySpec()
    assert (spec.mode, spec.self_heal, spec.prune, spec.verify.enabled) == (
        SyncMode.PLAN, SelfHeal.WARN, False, True)


def test_bad_windows_are_positioned_errors(tmp_path: Path) -> None:
    result = validate_files(tmp_path, {"sync.yaml": HEAD % "p" + """\
spec:
  mode: sometimes
  windows:
    - {kind: deny, schedule: "0 25 * * *", duration: 1h, timeZone: Mars/Olympus}
    - {kind: allow, schedule: "0 1 * * *", duration: soon}
"""})
    found = {(d.line, d.path): d.message for d in result.diagnostics.errors}
    assert "'off', 'plan' or 'apply'" in found[(5, "spec.mode")]
    assert "five-field cron" in found[(7, "spec.windows.0.schedule")]
    assert "IANA time zone" in found[(7, "spec.windows.0.timeZone")]
    assert "is not a duration" in found[(8, "spec.windows.1.duration")]


def test_one_policy_per_kind_of_a_namespace(tmp_path: Path) -> None:
    result = validate_files(tmp_path, {
        "a.yaml": HEAD % "a" + "spec: {kinds: [OutgoingServer]}\n",
        "b.yaml": HEAD % "b" + "spec: {kinds: [OutgoingServer, Nope]}\n"})
    messages = [d.message for d in result.diagnostics.errors]
    assert any("unknown kind 'Nope'" in m for m in messages)
    assert any("already covered by SyncPolicy 'a'" in m for m in messages)
