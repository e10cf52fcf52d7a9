"""Helpers for the policy tests: resources and policies from YAML text."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from datetime import date

from reconciler.config.diagnostics import Diagnostic, Diagnostics, Severity
from reconciler.config.loaded import LoadedResource
from reconciler.config.loader import Document, load_text
from reconciler.config.models import KINDS
from reconciler.policy.engine import PolicySet, evaluate, parse_policies, shipped_documents

TODAY = date(2026, 6, 1)


def documents(text: str, file: str = "config.yaml") -> list[Document]:
    diagnostics = Diagnostics()
    docs = load_text(textwrap.dedent(text).lstrip("\n"), file, diagnostics)
    assert not diagnostics.items, [d.message for d in diagnostics]
    return docs


def resources(text: str, file: str = "servers.yaml") -> list[LoadedResource]:
    """Validated resources; the models are the real ones from KINDS."""
    return [
        LoadedResource(KINDS[doc.data["kind"]].model_validate(doc.data), doc)
        for doc in documents(text, file)
    ]


def policy_set(
    text: str = "", *, file: str = "policies.yaml", shipped: bool = True
) -> tuple[PolicySet, Diagnostics]:
    diagnostics = Diagnostics()
    docs: list[Document] = shipped_documents(diagnostics) if shipped else []
    if text:
        docs += documents(text, file)
    return parse_policies(docs, diagnostics), diagnostics


def findings(
    resources_text: str,
    policies_text: str = "",
    *,
    shipped: bool = True,
    today: date = TODAY,
) -> list[Diagnostic]:
    policies, diagnostics = policy_set(policies_text, shipped=shipped)
    assert not diagnostics.items, [f"{d.location} {d.message}" for d in diagnostics]
    return evaluate(policies, resources(resources_text), today=today)


def codes(items: Sequence[Diagnostic], severity: Severity | None = None) -> list[str]:
    return sorted(d.code for d in items if severity is None or d.severity is severity)


def outgoing(spec: str, *, name: str = "mail", metadata: str = "") -> str:
    """An OutgoingServer document; ``spec`` lines are indented under ``spec:``."""
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    return (
        "apiVersion: reconciler.dev/v1\nkind: OutgoingServer\n"
        f"metadata: {{name: {name}{', ' + metadata if metadata else ''}}}\n"
        f"spec:\n{body}\n"
    )


def incoming(spec: str, *, name: str = "inbox", metadata: str = "") -> str:
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    return (
        "apiVersion: reconciler.dev/v1\nkind: IncomingServer\n"
        f"metadata: {{name: {name}{', ' + metadata if metadata else ''}}}\n"
        f"spec:\n{body}\n"
    )
