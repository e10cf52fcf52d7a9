"""process(): no mail makes it raise; unexpected errors become PROCESSED_FAILED for a person."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from reconciler.incoming.pipeline.run import process
from reconciler.incoming.pipeline.verdict import Code
from reconciler.state.base import AuditStatus

from .kit import MAIL, context, mail

FINAL = {AuditStatus.RECEIVED_IGNORED, AuditStatus.PROCESSED, AuditStatus.PROCESSED_FAILED}


def test_damaged_copies_of_every_corpus_mail_still_get_a_verdict() -> None:
    ctx = context()
    for path in sorted(MAIL.glob("*.eml")):
        raw = path.read_bytes()
        variants = [raw[: len(raw) * k // 7] for k in range(1, 7)]
        variants += [raw.replace(b"\r\n", b"\n"), raw.replace(b":", b"", 3),
                     raw.replace(b"=", b"\xff"), raw[::-1][:400], b"", b"\r\n\r\n"]
        for variant in variants:
            result = process(variant, ctx)
            assert result.status in FINAL, path.name
            assert result.audit[0].status == AuditStatus.RECEIVED
            assert result.audit[-1].status == result.status
            assert result.audit[-1].details["code"] != Code.UNEXPECTED, (
                path.name, result.reason)


def test_an_error_inside_a_stage_becomes_processed_failed_for_the_error_folder() -> None:
    def broken_lookup(ids: Sequence[str]) -> tuple[str, str] | None:
        raise RuntimeError("store went away")

    ctx = replace(context(), thread_lookup=broken_lookup)
    result = process(mail("03-reply-threaded-references.eml"), ctx)
    assert result.status == AuditStatus.PROCESSED_FAILED
    assert result.reason == ("unexpected error in stage threading: RuntimeError: "
                             "store went away")
    assert result.move_to_error_folder and result.event is None
    assert result.audit[-1].details == {"code": Code.UNEXPECTED, "stage": "threading"}


def test_unreadable_mail_goes_to_the_error_folder_but_a_policy_refusal_does_not() -> None:
    assert process(mail("48-unreadable.eml"), context()).move_to_error_folder
    assert process(mail("49-no-from.eml"), context()).move_to_error_folder
    guest = process(mail("38-guest-sender.eml"), context())
    assert guest.status == AuditStatus.PROCESSED_FAILED and not guest.move_to_error_folder


def test_audit_entries_carry_sender_message_id_and_subject() -> None:
    result = process(mail("02-reply-subject-id.eml"), context())
    received, processed = result.audit
    assert received.status == AuditStatus.RECEIVED
    assert received.reason == "fetched by support"
    assert received.details == {"subject": "RE: [##RE-123##] Laptop keeps restarting"}
    assert {a.recipient for a in result.audit} == {"bob@acme.example"}
    assert {a.message_id for a in result.audit} == {"reply-0002@mail.acme.example"}
    assert processed.details["kind"] == "reply"


def test_stripped_attachments_are_audited_before_the_final_entry() -> None:
    result = process(mail("14-attachment-exe.eml"), context())
    statuses = [a.status for a in result.audit]
    assert statuses == [AuditStatus.RECEIVED, AuditStatus.ATTACHMENT_PROCESSED_FAILED,
                        AuditStatus.PROCESSED]
    entry = result.audit[1]
    assert entry.reason == "attachment setup.exe removed: files ending in .exe are not accepted"
    assert entry.details["content_type"] == "application/x-msdownload"
    assert result.audit[2].details["stripped_attachments"] == 1
