from __future__ import annotations

import pytest

from reconciler.incoming.pipeline.attachments import (
    AttachmentProblem,
    Rejected,
    check,
    name_problem,
    type_problem,
)
from reconciler.incoming.pipeline.context import AttachmentPolicy
from reconciler.incoming.pipeline.parse import RawAttachment

POLICY = AttachmentPolicy(limit_bytes=1000, blocked=frozenset({"exe"}), allowed=frozenset())


@pytest.mark.parametrize(("name", "bad"), [
    ("report.pdf", False), ("Résumé final.pdf", False), ("a b (1).docx", False),
    ("../x.pdf", True), ("dir\\x.pdf", True), ("x\x00.pdf", True), ("con.txt", True),
    ("x.pdf.", True), (" x.pdf", True), ("a" * 256, True), ("é" * 128 + ".t", True),
    ('what?.pdf', True),
])
def test_names(name: str, bad: bool) -> None:
    assert (name_problem(name) is not None) == bad


@pytest.mark.parametrize(("name", "declared", "data", "bad"), [
    ("a.pdf", "application/pdf", b"%PDF-1.7", False),
    ("a.pdf", "application/octet-stream", b"%PDF-1.7", False),
    ("a.pdf", "application/pdf", b"MZ\x90\x00", True),
    ("a.txt", "image/png", b"\x89PNG\r\n\x1a\n", True),
    ("a.txt", "image/png", b"plain text", True),
    ("a.docx", "application/msword", b"PK\x03\x04", False),
    ("a.jpg", "image/jpg", b"\xff\xd8\xff\xe0", False),
    ("noext", "image/png", b"\x89PNG\r\n\x1a\n", False),
    ("a.csv", "text/x-csv", b"a,b\n", False),
])
def test_content_vs_name(name: str, declared: str, data: bytes, bad: bool) -> None:
    assert (type_problem(name, declared, data) is not None) == bad


def test_allow_list_and_default_name() -> None:
    policy = AttachmentPolicy(1000, frozenset(), frozenset({"pdf"}))
    rejected = check(RawAttachment("a.txt", "text/plain", b"x", False, None), policy, 1)
    assert isinstance(rejected, Rejected) and rejected.problem == AttachmentProblem.EXTENSION
    kept = check(RawAttachment(None, "application/pdf", b"%PDF-1", False, None), policy, 3)
    assert not isinstance(kept, Rejected)
    assert kept.name == "attachment-3.pdf"


def test_size_limit_is_inclusive() -> None:
    at_limit = check(RawAttachment("a.bin", "application/octet-stream", b"x" * 1000, False,
                                   None), POLICY, 1)
    over = check(RawAttachment("a.bin", "application/octet-stream", b"x" * 1001, False, None),
                 POLICY, 1)
    assert not isinstance(at_limit, Rejected)
    assert isinstance(over, Rejected) and over.problem == AttachmentProblem.SIZE
