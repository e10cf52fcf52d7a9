"""The shipped defaults: found through importlib.resources, valid, clean."""

from __future__ import annotations

import os
from importlib import resources as importlib_resources
from pathlib import Path

import pytest

from reconciler.config.diagnostics import Diagnostics, Severity
from reconciler.policy import engine
from reconciler.policy.engine import SHIPPED_PREFIX, parse_policies, shipped_documents

REPO = Path(__file__).resolve().parents[2]


def test_defaults_folder_is_a_link_to_the_top_level_policies() -> None:
    link = REPO / "reconciler" / "policy" / "defaults"
    assert link.is_symlink()
    assert os.readlink(link) == "../../policies"
    assert link.resolve() == (REPO / "policies").resolve()


def test_shipped_documents_load_through_importlib_resources() -> None:
    folder = importlib_resources.files("reconciler.policy") / "defaults"
    names = sorted(e.name for e in folder.iterdir() if e.name.endswith(".yaml"))
    diagnostics = Diagnostics()
    documents = shipped_documents(diagnostics)
    assert not diagnostics.items
    assert sorted(d.file for d in documents) == [SHIPPED_PREFIX + n for n in names]
    assert "README.md" not in {d.file for d in documents}


def test_shipped_policies_are_valid_and_enabled() -> None:
    diagnostics = Diagnostics()
    policies = parse_policies(shipped_documents(diagnostics), diagnostics)
    assert not diagnostics.items
    assert {
        "tls-required",
        "no-basic-auth-microsoft365",
        "reply-to-required",
        "attachment-limit-max-25mb",
        "ews-exchange-online-retiring",
        "graph-outgoing-throughput",
    } <= set(policies.policies)
    for policy in policies.policies.values():
        assert policy.shipped and policy.model.spec.enabled
        # The compiled subset keeps validation fast; no shipped policy may leave it.
        assert policy.condition.fast and (policy.when is None or policy.when.fast)
        assert policy.model.spec.hint, policy.name
        assert policy.document.file == f"{SHIPPED_PREFIX}{policy.name}.yaml"


def test_missing_defaults_are_reported_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "DEFAULTS_FOLDER", "no-such-folder")
    diagnostics = Diagnostics()
    assert shipped_documents(diagnostics) == []
    (warning,) = diagnostics.items
    assert warning.severity is Severity.WARNING and warning.code == "policy-defaults-missing"


def test_readme_documents_every_shipped_policy() -> None:
    readme = (REPO / "policies" / "README.md").read_text(encoding="utf-8")
    for path in (REPO / "policies").glob("*.yaml"):
        assert f"`{path.stem}`" in readme, path.stem
