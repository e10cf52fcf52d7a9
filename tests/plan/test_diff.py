"""plan.diff: which resources change and exactly which fields."""

from __future__ import annotations

import pytest

from reconciler.config.desired import ResourceKey
from reconciler.config.secrets import redact_ref
from reconciler.plan import diff as diff_module
from reconciler.plan.diff import diff
from reconciler.state import Action, FieldChange

from .kit import desired, live, res


def test_unchanged_resources_produce_no_change() -> None:
    a = res("a", port=25)
    assert diff(desired(a), live(a)).changes == ()


def test_update_lists_exact_field_paths() -> None:
    before = res("a", labels={"env": "prod"}, port=25, hosts=["x", "y"], auth={"type": "none"},
                 old="gone")
    after = res("a", labels={"env": "dev", "team": "desk"}, port=587, hosts=["x", "z", "w"],
                auth={"type": "basic", "username": "u"})
    (change,) = diff(desired(after), live(before)).changes
    assert change.action is Action.UPDATE
    assert change.before == before and change.after == after
    assert change.fields == (
        FieldChange("metadata.labels.env", "prod", "dev"),
        FieldChange("metadata.labels.team", None, "desk"),
        FieldChange("spec.auth.type", "none", "basic"),
        FieldChange("spec.auth.username", None, "u"),
        FieldChange("spec.hosts.1", "y", "z"),
        FieldChange("spec.hosts.2", None, "w"),
        FieldChange("spec.old", "gone", None),
        FieldChange("spec.port", 25, 587),
    )


def test_api_version_change_is_shown() -> None:
    before = res("a", api="reconciler.dev/v0", port=25)
    after = res("a", port=25)
    (change,) = diff(desired(after), live(before)).changes
    assert change.fields == (FieldChange("apiVersion", "reconciler.dev/v0", "reconciler.dev/v1"),)


def test_added_mapping_is_listed_leaf_by_leaf() -> None:
    before = res("a", port=25)
    after = res("a", port=25, auth={"type": "oauth2", "scope": ["s1", "s2"]})
    (change,) = diff(desired(after), live(before)).changes
    assert [f.path for f in change.fields] == [
        "spec.auth.scope.0", "spec.auth.scope.1", "spec.auth.type"]


def test_create_lists_every_field_after_only() -> None:
    new = res("a", labels={"env": "prod"}, port=587, domains=["a.example"], emails=[])
    (change,) = diff(desired(new), live()).changes
    assert change.action is Action.CREATE and change.before is None
    assert change.fields == (
        FieldChange("apiVersion", None, "reconciler.dev/v1"),
        FieldChange("metadata.labels.env", None, "prod"),
        FieldChange("spec.domains.0", None, "a.example"),
        FieldChange("spec.emails", None, []),
        FieldChange("spec.port", None, 587),
    )


def test_list_indices_sort_numerically() -> None:
    new = res("a", items=list(range(12)))
    (change,) = diff(desired(new), live()).changes
    paths = [f.path for f in change.fields if f.path.startswith("spec.items")]
    assert paths == [f"spec.items.{i}" for i in range(12)]


def test_live_only_resources_are_unmanaged_without_prune() -> None:
    kept, extra = res("kept"), res("extra", ns="other")
    result = diff(desired(kept), live(kept, extra))
    assert result.changes == ()
    assert result.unmanaged == (extra.key,)


def test_prune_deletes_with_before_fields_only() -> None:
    kept, extra = res("kept"), res("extra", port=25)
    result = diff(desired(kept), live(kept, extra), prune=True)
    assert result.unmanaged == ()
    (change,) = result.changes
    assert change.action is Action.DELETE and change.after is None and change.before == extra
    assert change.fields == (
        FieldChange("apiVersion", "reconciler.dev/v1", None),
        FieldChange("spec.port", 25, None),
    )


def test_changes_are_ordered_by_kind_namespace_name() -> None:
    items = [res("b", kind="RecipientFilter"), res("a", ns="zeta"), res("b", ns="alpha"),
             res("a", ns="alpha")]
    keys = [c.key for c in diff(desired(*items), live()).changes]
    assert keys == [
        ResourceKey("OutgoingServer", "alpha", "a"),
        ResourceKey("OutgoingServer", "alpha", "b"),
        ResourceKey("OutgoingServer", "zeta", "a"),
        ResourceKey("RecipientFilter", "default", "b"),
    ]


def test_derived_values_are_marked() -> None:
    before = res("a", port=25, security="none")
    after = res("a", port=587, security="starttls", auth={"scope": ["x", "y"]})
    derived = {after.key: {"spec.port", "spec.auth.scope"}}
    (change,) = diff(desired(after), live(before), derived=derived).changes
    marks = {f.path: f.derived for f in change.fields}
    assert marks == {"spec.port": True, "spec.security": False, "spec.auth.scope.0": True,
                     "spec.auth.scope.1": True}


def test_derived_marks_only_the_resource_they_belong_to() -> None:
    a, b = res("a", port=25), res("b", port=25)
    (ca, cb) = diff(desired(a, b), live(), derived={a.key: {"spec.port"}}).changes
    assert next(f for f in ca.fields if f.path == "spec.port").derived
    assert not next(f for f in cb.fields if f.path == "spec.port").derived


def test_deepdiff_runs_only_for_resources_whose_digest_differs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    real = diff_module._tree

    def counting(old: dict[str, object], new: dict[str, object]) -> object:
        calls.append(old)
        return real(old, new)

    monkeypatch.setattr(diff_module, "_tree", counting)
    same = [res(f"r{i}", port=25) for i in range(50)]
    changed_before, changed_after = res("x", port=25), res("x", port=587)
    result = diff(desired(*same, changed_after), live(*same, changed_before))
    assert len(result.changes) == 1
    assert len(calls) == 1


ENC_A = "enc:v1:gAAAAABrAfQt9WMlUeDSY6613U1fXhMgDz2QAh1PkNlFbvg2DdlLyaDtm9F5FO70bREM3dGi=="
ENC_B = "enc:v1:gAAAAABrAfQtDIFFERENTciphertextXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX=="


def test_secret_reference_changes_show_redacted_references() -> None:
    before = res("a", auth={"password": {"secretRef": ENC_A}, "user": "u"})
    after = res("a", auth={"password": {"secretRef": ENC_B}, "user": "u"})
    (change,) = diff(desired(after), live(before)).changes
    assert change.fields == (FieldChange(
        "spec.auth.password",
        {"secretRef": redact_ref(ENC_A)},
        {"secretRef": redact_ref(ENC_B)},
    ),)
    assert ENC_A not in repr(change.fields) and ENC_B not in repr(change.fields)
    # The resource bodies themselves keep the reference: apply must store it as written.
    assert change.after is not None and change.after.spec["auth"]["password"]["secretRef"] == ENC_B


def test_env_reference_rename_is_one_field() -> None:
    before = res("a", password={"secretRef": "env:OLD"})
    after = res("a", password={"secretRef": "env:NEW"})
    (change,) = diff(desired(after), live(before)).changes
    assert change.fields == (
        FieldChange("spec.password", {"secretRef": "env:OLD"}, {"secretRef": "env:NEW"}),)


def test_created_secret_reference_is_one_redacted_field() -> None:
    new = res("a", password={"secretRef": ENC_A})
    (change,) = diff(desired(new), live()).changes
    assert FieldChange("spec.password", None, {"secretRef": redact_ref(ENC_A)}) in change.fields
    assert ENC_A not in repr(change.fields)
