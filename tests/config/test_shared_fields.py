"""Models given the same fields share one set of their names, and never leak
an assignment from one model to another through it."""

from __future__ import annotations

from typing import Any

from reconciler.config.derive import defaulted_paths
from reconciler.config.models.outgoing_server import OutgoingServer


def _server(name: str, **spec: Any) -> OutgoingServer:
    return OutgoingServer.model_validate({
        "apiVersion": "reconciler.dev/v1", "kind": "OutgoingServer",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {"email": f"{name}@team.example", "protocol": "smtp",
                 "host": f"{name}.team.example", **spec}})


def test_the_same_written_fields_share_one_set() -> None:
    one, two = _server("one"), _server("two")
    assert one.spec.model_fields_set is two.spec.model_fields_set
    assert one.metadata.model_fields_set is two.metadata.model_fields_set
    assert _server("three", port=25).spec.model_fields_set != one.spec.model_fields_set


def test_an_assignment_marks_only_the_model_assigned_to() -> None:
    one, two = _server("one"), _server("two")
    before = set(defaulted_paths(two.spec, ("spec",)))
    assert "spec.port" in before
    one.spec.port = 2525
    assert "port" in one.spec.model_fields_set
    assert "port" not in two.spec.model_fields_set
    assert set(defaulted_paths(two.spec, ("spec",))) == before
    assert "spec.port" not in set(defaulted_paths(one.spec, ("spec",)))
    assert two.spec.model_dump(exclude_unset=True) == _server("two").spec.model_dump(
        exclude_unset=True)


def test_a_copy_with_changes_leaves_the_original_alone() -> None:
    one, two = _server("one"), _server("two")
    copied = one.spec.model_copy(update={"port": 2525})
    assert "port" in copied.model_fields_set
    assert "port" not in one.spec.model_fields_set
    assert "port" not in two.spec.model_fields_set
    del copied.port  # a delete on a shared set is just as private
    assert "port" not in two.spec.model_fields_set
