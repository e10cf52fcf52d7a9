"""plan.render: text, Markdown and JSON show the same plan, redacted."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from reconciler.config.secrets import redact_ref
from reconciler.plan import render
from reconciler.plan.diff import diff
from reconciler.plan.model import GitInfo, Plan

from .kit import desired, live, res

ENC = "enc:v1:gAAAAABrAfQt9WMlUeDSY6613U1fXhMgDz2QAh1PkNlFbvg2DdlLyaDtm9F5FO70bREM3dGi=="
ENC_FP = redact_ref(ENC).removeprefix("enc:v1:***")


def make(prune: bool = False) -> Plan:
    old = res("srv", ns="acme", port=25, password={"secretRef": "env:OLD"})
    new = res("srv", ns="acme", port=587, password={"secretRef": ENC})
    created = res("allow", ns="acme", kind="RecipientFilter", type="allow")
    other = res("legacy", ns="acme")
    d, lv = desired(new, created), live(old, other, revision=7)
    result = diff(d, lv, derived={new.key: {"spec.port"}}, prune=prune)
    return Plan.build(result, d, lv, prune=prune, git=GitInfo("abcdef1234567890", "main", "12"),
                      created_at=datetime(2025, 1, 2, tzinfo=UTC))


def test_summary_line() -> None:
    assert render.summary(make()) == (
        "Plan: 1 to create, 1 to update, 0 to delete (base revision 7).")
    assert render.summary(make(prune=True)) == (
        "Plan: 1 to create, 1 to update, 1 to delete (base revision 7).")


def test_summary_without_changes() -> None:
    a = res("a")
    plan = Plan.build(diff(desired(a), live(a)), desired(a), live(a), prune=False)
    assert render.summary(plan).startswith("No changes.")


def test_text() -> None:
    out = render.text(make())
    assert out.splitlines() == [
        "~ update OutgoingServer acme/srv",
        "    spec.password: {secretRef: env:OLD} → {secretRef: enc:v1:***" + ENC_FP + "}",
        "    spec.port: 25 → 587 (derived)",
        "+ create RecipientFilter acme/allow",
        '    apiVersion: "reconciler.dev/v1"',
        '    spec.type: "allow"',
        "",
        "Not in the configuration (kept, not deleted):",
        "    OutgoingServer acme/legacy",
        "1 live resource not in the configuration is kept; plan with --prune to delete it.",
        "",
        "Plan: 1 to create, 1 to update, 0 to delete (base revision 7).",
    ]


def test_text_delete() -> None:
    out = render.text(make(prune=True))
    assert "- delete OutgoingServer acme/legacy\n    apiVersion: \"reconciler.dev/v1\"\n" in out
    assert "    spec.host: \"legacy\"" in out


def test_text_is_plain_unless_colour_is_asked_for() -> None:
    assert "\x1b[" not in render.text(make())
    coloured = render.text(make(), colour=True)
    assert "\x1b[" in coloured and "+ create RecipientFilter acme/allow" in coloured


def test_markdown() -> None:
    out = render.markdown(make())
    assert out.startswith("<!-- reconcile-plan -->\n")
    assert "**Plan: 1 to create, 1 to update, 0 to delete (base revision 7).**" in out
    assert "| OutgoingServer |  | 1 |  |" in out
    assert "| RecipientFilter | 1 |  |  |" in out
    assert "<details><summary><code>~ OutgoingServer acme/srv</code> (update, 2 fields)" in out
    assert "- spec.port: 25\n+ spec.port: 587  # derived" in out
    assert "OutgoingServer acme/legacy" in out and "--prune" in out
    assert "commit abcdef123456, branch main, PR #12" in out


def test_markdown_stays_under_the_comment_limit() -> None:
    many = [res(f"r{i:05}", host="h" * 200, port=i) for i in range(2000)]
    plan = Plan.build(diff(desired(*many), live()), desired(*many), live(), prune=False)
    out = render.markdown(plan)
    assert len(out) < 65_536
    assert "more resources: too long for one comment" in out
    assert out.count("<details>") < 2000


def test_json() -> None:
    data = json.loads(render.as_json(make()))
    assert data["summary"] == {"create": 1, "update": 1, "delete": 0, "unmanaged": 1,
                               "credentialMoves": 0}
    assert data["baseRevision"] == 7 and data["hasChanges"] is True
    assert data["git"] == {"commit": "abcdef1234567890", "branch": "main", "pullRequest": "12"}
    update = data["changes"][0]
    assert (update["action"], update["kind"], update["namespace"], update["name"]) == (
        "update", "OutgoingServer", "acme", "srv")
    assert {"path": "spec.port", "before": 25, "after": 587, "derived": True} in update["fields"]
    assert data["unmanaged"] == [{"kind": "OutgoingServer", "namespace": "acme",
                                  "name": "legacy"}]


def test_no_format_shows_ciphertext() -> None:
    plan = make()
    for out in (render.text(plan), render.text(plan, colour=True), render.markdown(plan),
                render.as_json(plan)):
        assert ENC not in out
        assert ENC[len("enc:v1:"):][:20] not in out
        assert "enc:v1:***" + ENC_FP in out



def test_defaults_of_new_resources_are_counted_not_listed_unless_asked_for() -> None:
    created = res("new", ns="acme", port=587)
    d, lv = desired(created), live(revision=3)
    result = diff(d, lv, derived={created.key: {"spec.port"}})
    plan = Plan.build(result, d, lv, prune=False)
    note = "(1 default or derived value of new resources not shown; --show-derived lists them)"
    for out in (render.text(plan), render.markdown(plan)):
        assert "spec.port" not in out and note in out
    for out in (render.text(plan, show_derived=True), render.markdown(plan, show_derived=True)):
        assert "spec.port" in out and "not shown" not in out
    assert "spec.port" in render.as_json(plan)  # machines get every value, marked
