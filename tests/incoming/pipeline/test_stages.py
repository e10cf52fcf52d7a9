"""Every stage and every audit reason, produced from a real message of tests/data/mail/.

One table row per corpus file: the final audit status, the reason code, words the
reason must contain, and what the event must say. Rows that need another
configuration (Cc allowed, email-to-request off, ...) name the setting they change.
"""
# ruff: noqa: RUF001  (the corpus is about non-ASCII text: dashes, CJK and Cyrillic are the point)

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from reconciler.incoming.pipeline.attachments import AttachmentProblem
from reconciler.incoming.pipeline.context import PipelineContext
from reconciler.incoming.pipeline.run import process
from reconciler.incoming.pipeline.stages import STAGES
from reconciler.incoming.pipeline.verdict import Code
from reconciler.incoming.pipeline.verdict import Code as OutcomeCode
from reconciler.state.base import AuditStatus

from .kit import MAIL, SENT, context, mail, server_spec, settings_spec

IGN, OK, FAIL = AuditStatus.RECEIVED_IGNORED, AuditStatus.PROCESSED, AuditStatus.PROCESSED_FAILED
BOUNCED = AuditStatus.BOUNCED
STAGE_NAMES = tuple(name for name, _ in STAGES)


@dataclass(frozen=True)
class Case:
    file: str
    status: AuditStatus
    code: str
    words: tuple[str, ...] = ()
    event: dict[str, Any] = field(default_factory=dict)  # TicketEvent.to_dict() subset
    stripped: tuple[tuple[str, str], ...] = ()  # (attachment, problem)
    config: dict[str, Any] = field(default_factory=dict)  # context(**config)
    id: str = ""


DEFAULT_FIELDS = {"technicianGroup": "Service Desk", "category": "General"}

CASES = [
    Case("01-new-request-plain.eml", OK, Code.CREATED, ("new ticket",), {
        "kind": "create", "ticket": None, "subject": "Printer on 3rd floor is jammed",
        "requester": {"email": "jane@acme.example", "name": "Jane Doe"},
        "to": [{"email": "support@acme.example", "name": "IT Support"}],
        "fields": DEFAULT_FIELDS, "mailbox": "support@acme.example",
        "messageId": "CAF=plain-0001@mail.acme.example", "sentAt": "2025-03-04T08:15:02Z"}),
    Case("02-reply-subject-id.eml", OK, Code.REPLIED, ("reply to request 123",), {
        "kind": "reply",
        "ticket": {"module": "request", "number": "123", "source": "subject"}}),
    Case("03-reply-threaded-references.eml", OK, Code.REPLIED, ("request 555",), {
        "kind": "reply", "ticket": {"module": "request", "number": "555", "source": "thread"},
        "inReplyTo": "notif-555@desk.acme.example",
        "references": ["notif-554@desk.acme.example", "notif-555@desk.acme.example"]}),
    Case("04-outlook-auto-reply.eml", IGN, Code.AUTO_REPLY, ("Auto-Submitted: auto-replied",)),
    Case("05-out-of-office-precedence.eml", IGN, Code.AUTO_REPLY, ("Precedence: auto_reply",)),
    Case("06-delivery-status-notification.eml", IGN, Code.DELIVERY_REPORT, ("bounce",)),
    # Bounces of notifications the desk sent (kit.SENT); test_bounce.py checks each entry.
    Case("59-dsn-postfix-unknown-user.eml", BOUNCED, Code.BOUNCED,
         ("nobody@bounce.test (5.1.1)",), config={"sent": True}),
    Case("60-dsn-exchange-ndr.eml", BOUNCED, Code.BOUNCED, ("ghost@contoso.example (5.1.10)",),
         config={"sent": True}),
    Case("61-dsn-gmail-two-recipients.eml", BOUNCED, Code.BOUNCED,
         ("nosuchuser@gmail.example (5.1.1)", "full@gmail.example (4.2.2)"),
         config={"sent": True}),
    Case("62-bounce-qmail-plain-text.eml", BOUNCED, Code.BOUNCED,
         ("olduser@old.example (5.1.1)",), config={"sent": True}),
    Case("59-dsn-postfix-unknown-user.eml", IGN, Code.DELIVERY_REPORT,
         ("names no message the desk sent",), id="bounce-of-unknown-message"),
    Case("07-forward-inline-ignored.eml", FAIL, Code.FORWARDED_IGNORED,
         ("billing@ignored.example", "acme-ignore")),
    Case("08-forward-rfc822-ignored.eml", FAIL, Code.FORWARDED_IGNORED,
         ("winner@ignored.example",)),
    Case("09-forward-outlook-legit.eml", OK, Code.CREATED, (), {"kind": "create"}),
    Case("10-alternative-text-html.eml", OK, Code.CREATED, (), {
        "textBody": "Please create an account for Max Müller, starting 1 April.\n"}),
    Case("11-html-only.eml", OK, Code.CREATED, (), {
        "textBody": "My monitor flickers & goes dark.\n\n- Model: Dell U2720Q\n\n- Desk 4.12"
                    "\n\nThanks a lot"}),
    Case("12-related-inline-image.eml", OK, Code.CREATED, (), {"attachments": [{
        "name": "screenshot.png", "contentType": "image/png", "size": 66, "inline": True,
        "contentId": "shot-1@acme.example",
        "sha256": "62d7693d527ce6e5cf4a4f54478b889fe3e01a144d09a0a0482ca512d4225b3a"}]}),
    Case("13-attachments-pdf-docx.eml", OK, Code.CREATED),
    Case("14-attachment-exe.eml", OK, Code.CREATED, (), {"attachments": []},
         (("setup.exe", AttachmentProblem.EXTENSION),)),
    Case("15-attachment-empty.eml", OK, Code.CREATED, (), {},
         (("empty.log", AttachmentProblem.EMPTY),)),
    Case("16-attachment-type-mismatch.eml", OK, Code.CREATED, (), {},
         (("Alter.txt", AttachmentProblem.CONTENT_TYPE),)),
    Case("17-attachment-long-name.eml", OK, Code.CREATED, (), {},
         (("quarterly-report-" + "x" * 290 + ".pdf", AttachmentProblem.NAME),)),
    Case("18-attachment-path-traversal.eml", OK, Code.CREATED, (), {},
         (("../../etc/passwd", AttachmentProblem.NAME),)),
    Case("19-attachment-rfc2231-name.eml", OK, Code.CREATED, (),
         {"attachments": [{"name": "Résumé final.pdf", "contentType": "application/pdf",
                           "inline": False, "contentId": None}]}),
    Case("20-attachment-too-large.eml", OK, Code.CREATED, (), {},
         (("contract-scan.pdf", AttachmentProblem.SIZE),)),
    Case("21-attachment-truncated-base64.eml", OK, Code.CREATED, (), {},
         (("cut.pdf", AttachmentProblem.DAMAGED),)),
    Case("22-iso-8859-1-qp.eml", OK, Code.CREATED, (), {
        "subject": "Kaffeemaschine defekt – bitte prüfen",
        "from": {"email": "juergen@acme.example", "name": "Jürgen Müller"},
        "textBody": "Grüße aus Köln: die Kaffeemaschine im 2. Stock ist kaputt. Déjà vu!\n"}),
    Case("23-windows-1252-8bit.eml", OK, Code.CREATED, (), {
        "subject": "“Quotes” in the budget € sheet",
        "textBody": "The “Total” column shows 1.200 € – should be 1.250 €.\n"}),
    Case("24-shift-jis-base64.eml", OK, Code.CREATED, (), {
        "subject": "プリンター故障", "from": {"email": "taro@acme.example", "name": "山田 太郎"},
        "textBody": "プリンターが動きません。至急確認してください。\n"}),
    Case("25-gb2312.eml", OK, Code.CREATED, (), {
        "subject": "投影仪故障", "textBody": "您好，会议室的投影仪无法连接笔记本电脑。\n"}),
    Case("26-koi8-r-qp.eml", OK, Code.CREATED, (), {
        "subject": "Принтер не работает",
        "from": {"email": "ivan@acme.example", "name": "Иван Петров"},
        "textBody": "Здравствуйте! Не работает принтер в кабинете 214.\n"}),
    Case("27-broken-no-boundary.eml", OK, Code.CREATED),
    Case("28-bad-charset-name.eml", OK, Code.CREATED, (), {
        "textBody": "The keyboard in the café corner is missing two keys.\n",
        "notes": ["unknown charset 'x-foobar-9'; read as UTF-8"]}),
    Case("29-no-message-id.eml", OK, Code.CREATED),
    Case("30-duplicate-message-id.eml", IGN, Code.DUPLICATE, ("processed before",),
         config={"seen": ("01-new-request-plain.eml",)}),
    Case("31-email-command.eml", OK, Code.COMMAND, ("EditRequest on request 77",), {
        "kind": "command", "operation": "EditRequest",
        "ticket": {"module": "request", "number": "77", "source": "command"},
        "fields": {"technicianGroup": "Network", "category": "General", "priority": "High"},
        "fieldSources": {"technicianGroup": "command", "category": "defaults",
                         "priority": "command"},
        "notes": ["field 'Flavour' is not a ticket field; ignored"]}),
    Case("70-email-command-resources.eml", OK, Code.CREATED, (), {
        "kind": "create", "operation": "AddRequest", "resources": {"res_301": {
            "qstn_select_302": ["compaq"], "qstn_check_304": ["Mouse", "Keyboard"],
            "qstn_string_306": ["Needs a docking station"]}},
        "notes": [
            "resource answer res_301.qstn_radio_303 is a radio question and takes one "
            "answer, not 2; the question is removed",
            "resource answer res_301.qstn_check_304: 'Tablet' is not one of its options "
            "(Mouse, Keyboard, Monitor); answer removed",
            "resource answer res_301.qstn_check_305: 'Fax' is not one of its options "
            "(Mouse); answer removed",
            "resource answer res_301.qstn_check_305 has no valid answer; the question is "
            "removed",
            "resource answer res_999.qstn_1 is not a question of the template's resources; "
            "ignored"]}),
    Case("32-email-command-bad-operation.eml", FAIL, Code.COMMAND_FAILED,
         ("DeleteEverything",)),
    Case("33-email-command-no-ticket.eml", FAIL, Code.COMMAND_NO_TICKET,
         ("CloseRequest needs a request ID",)),
    Case("34-spam.eml", IGN, Code.SPAM, ("spam filter prizes",)),
    Case("35-own-address.eml", IGN, Code.OWN_MAIL, ("notifications@acme.example",)),
    Case("36-cc-only.eml", IGN, Code.CC_DISABLED, ("only in Cc",)),
    Case("36-cc-only.eml", OK, Code.CREATED, (), {"mailbox": "support@acme.example"},
         config={"settings": {"createFromCc": True}}, id="cc-allowed"),
    Case("37-bcc-only.eml", IGN, Code.BCC_DISABLED, ("neither To nor Cc",)),
    Case("37-bcc-only.eml", OK, Code.CREATED, (), {"kind": "create"},
         config={"settings": {"createFromBcc": True}}, id="bcc-allowed"),
    Case("38-guest-sender.eml", FAIL, Code.GUEST, ("sam@guest.example", "guest tickets")),
    Case("38-guest-sender.eml", OK, Code.CREATED, (), {"kind": "create"},
         config={"settings": {"guestTickets": True}}, id="guests-allowed"),
    Case("39-long-subject.eml", OK, Code.CREATED),
    Case("40-8bit-headers.eml", OK, Code.CREATED, (), {
        "subject": "Contraseña caducada – no puedo entrar",
        "from": {"email": "jose@acme.example", "name": "José Núñez"}}),
    Case("41-self-reference.eml", IGN, Code.SELF_REFERENCE, ("mail loop",)),
    Case("42-sender-ignored.eml", IGN, Code.SENDER_IGNORED,
         ("news@ignored.example", "ignored.example", "acme-ignore")),
    Case("43-reply-to-ignored.eml", IGN, Code.REPLY_TO_IGNORED, ("noreply@ignored.example",)),
    Case("43-reply-to-ignored.eml", OK, Code.CREATED, (),
         {"requester": {"email": "bob@acme.example", "name": "Bob Stone"}},
         config={"settings": {"useReplyTo": False}}, id="reply-to-unused"),
    Case("44-archived-user.eml", IGN, Code.SENDER_INACTIVE, ("archived",)),
    Case("45-rule-ignore.eml", IGN, Code.RULE_IGNORE, ("rule newsletters",)),
    Case("46-rule-set-fields.eml", OK, Code.CREATED, (), {
        "fields": {"technicianGroup": "Tier 2", "category": "General", "priority": "High"},
        "fieldSources": {"technicianGroup": "rule:board", "category": "defaults",
                         "priority": "rule:board"}}),
    Case("47-other-prefix.eml", FAIL, Code.OTHER_PREFIX, ("##XY-42##",)),
    Case("48-unreadable.eml", FAIL, Code.UNREADABLE, ("could not be read",)),
    Case("49-no-from.eml", FAIL, Code.NO_SENDER, ("no usable From",)),
    Case("50-reply-bare-request-id.eml", OK, Code.REPLIED, ("request 456",), {
        "ticket": {"module": "request", "number": "456", "source": "subject"}}),
    Case("51-reply-to-requester.eml", OK, Code.CREATED, (), {
        "requester": {"email": "bob@acme.example", "name": "Bob Stone"},
        "from": {"email": "frontdesk@acme.example", "name": "Front Desk"}}),
    Case("52-attachment-disguised-exe.eml", OK, Code.CREATED, (), {},
         (("invoice.pdf", AttachmentProblem.CONTENT_TYPE),)),
    # Real-world shapes mail clients show correctly (issue 14 item 8).
    Case("53-attachment-8bit-utf8-name.eml", OK, Code.CREATED, (), {"attachments": [
        {"name": "Rechnung März – Bildschirme.pdf", "contentType": "application/pdf"}]}),
    Case("54-body-wrong-charset.eml", OK, Code.CREATED, (), {
        "subject": "打印机卡纸", "notes": ["text is not gb2312; read as UTF-8"],
        "textBody": "您好，\n\n三楼的打印机又卡纸了，显示“错误 E-21”。\n请尽快派人处理，谢谢！"
                    "\n\n王芳\n"}),
    Case("55-inline-named-text-parts.eml", OK, Code.CREATED, (), {
        "textBody": "The VPN drops every ten minutes since this morning.\n\n"
                    "It reconnects by itself after a minute.",
        "attachments": [{"name": "part1.txt", "inline": True},
                        {"name": "part2.txt", "inline": True}]}),
    Case("56-report-without-from-address.eml", IGN, Code.DELIVERY_REPORT, ("bounce",)),
    Case("57-attachment-bmp-riscos.eml", OK, Code.CREATED, (), {"attachments": [
        {"name": "error.bmp", "contentType": "application/riscos", "size": 70}]}),
    Case("58-gb2312-header-gbk-word.eml", OK, Code.CREATED, (), {
        "subject": "朱镕基同志的打印机", "from": {"email": "lirong@acme.example", "name": "李镕"},
        "textBody": "打印机坏了，请帮忙。"}),
    # Settings that stop new tickets but let replies through.
    Case("01-new-request-plain.eml", FAIL, Code.EMAIL_TO_REQUEST_OFF, ("email-to-request",),
         config={"settings": {"emailToRequest": False}}, id="email-to-request-off"),
    Case("02-reply-subject-id.eml", OK, Code.REPLIED, (), {"kind": "reply"},
         config={"settings": {"emailToRequest": False}}, id="email-to-request-off-reply"),
    Case("01-new-request-plain.eml", FAIL, Code.CREATION_DISABLED, ("jane@acme.example",),
         config={"server": {"creation": {"disableNewRequests": True,
                                         "allowedDomains": ["board.acme.example"]}}},
         id="creation-disabled"),
    Case("46-rule-set-fields.eml", OK, Code.CREATED, (), {"kind": "create"},
         config={"server": {"creation": {"disableNewRequests": True,
                                         "allowedDomains": ["board.acme.example"]}}},
         id="creation-disabled-allowed-domain"),
    Case("03-reply-threaded-references.eml", OK, Code.REPLIED, (), {"kind": "reply"},
         config={"server": {"creation": {"disableNewRequests": True}}},
         id="creation-disabled-reply"),
    # MailSettings.incomingAttachments: an allow list of extensions, an emptied block list.
    Case("13-attachments-pdf-docx.eml", OK, Code.CREATED, (),
         {"attachments": [{"name": "form-a.pdf"}]},
         (("form-b.docx", AttachmentProblem.EXTENSION),),
         config={"settings": {"incomingAttachments": {"allowedExtensions": ["pdf"]}}},
         id="allowed-extensions"),
    Case("14-attachment-exe.eml", OK, Code.CREATED, (),
         {"attachments": [{"name": "setup.exe", "contentType": "application/x-msdownload"}]},
         config={"settings": {"incomingAttachments": {"blockedExtensions": []}}},
         id="exe-unblocked"),
    # An allow list instead of an ignore list.
    Case("38-guest-sender.eml", IGN, Code.SENDER_NOT_ALLOWED,
         ("sam@guest.example", "not on allow list acme-only"),
         config={"server": {"recipientFilter": "acme-only"}}, id="allow-list-sender"),
    Case("51-reply-to-requester.eml", OK, Code.CREATED, (),
         config={"server": {"recipientFilter": "acme-only"}}, id="allow-list-reply-to-ok"),
    Case("43-reply-to-ignored.eml", IGN, Code.REPLY_TO_NOT_ALLOWED,
         ("Reply-To noreply@ignored.example",),
         config={"server": {"recipientFilter": "acme-only"}}, id="allow-list-reply-to"),
]


def build(config: dict[str, Any]) -> PipelineContext:
    seen = {process(mail(f), context()).message_id for f in config.get("seen", ())}
    return context(server=server_spec(**config.get("server", {})),
                   settings=settings_spec(**config.get("settings", {})),
                   seen=seen, sent=SENT if config.get("sent") else None)


@pytest.mark.parametrize("case", CASES, ids=[c.id or c.file.split("-")[0] + "-" + c.code
                                             for c in CASES])
def test_corpus_mail(case: Case) -> None:
    result = process(mail(case.file), build(case.config))
    final = result.audit[-1]
    assert (result.status, final.details["code"]) == (case.status, case.code), result.reason
    for word in case.words:
        assert word in result.reason
    if case.status == BOUNCED:
        return  # one entry per recipient on the notification: test_bounce.py
    assert final.status == result.status and final.reason == result.reason
    assert result.audit[0].status == AuditStatus.RECEIVED
    assert all(a.server == "support" and a.namespace == "acme" for a in result.audit)
    stripped = [(a.details["attachment"], a.details["code"]) for a in result.audit
                if a.status == AuditStatus.ATTACHMENT_PROCESSED_FAILED]
    assert stripped == [(name, str(problem)) for name, problem in case.stripped]
    if case.status != OK:
        assert result.event is None
        return
    assert result.event is not None
    got = result.event.to_dict()
    for key, expected in case.event.items():
        if key == "attachments":
            assert len(got[key]) == len(expected)
            for have, want in zip(got[key], expected, strict=True):
                assert {k: have[k] for k in want} == want
        else:
            assert got[key] == expected, key


def test_every_reason_has_a_corpus_case() -> None:
    codes = {v for k, v in vars(OutcomeCode).items() if k.isupper()}
    tested = {c.code for c in CASES} | {Code.UNEXPECTED}  # unexpected: test_run.py
    assert codes - tested == set()
    problems = {str(p) for p in AttachmentProblem}
    assert problems - {str(p) for c in CASES for _, p in c.stripped} == set()


def test_every_corpus_file_is_in_the_table_and_the_readme() -> None:
    files = {p.name for p in MAIL.glob("*.eml")}
    assert files == {c.file for c in CASES}
    readme = (MAIL / "README.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in readme for name in files)


def test_stripped_attachment_asks_for_a_notice_to_sender_and_error_recipients() -> None:
    result = process(mail("14-attachment-exe.eml"), context())
    (notice,) = result.notices
    assert notice.sender == "jane@acme.example"
    assert [str(a) for a in notice.audience] == ["sender", "error-recipients"]
    assert notice.items == ("setup.exe: files ending in .exe are not accepted",)
    assert "Installer for the plotter" in notice.subject
    assert process(mail("13-attachments-pdf-docx.eml"), context()).notices == ()


def test_kept_attachment_bytes_are_handed_over_by_sha256() -> None:
    result = process(mail("13-attachments-pdf-docx.eml"), context())
    assert result.event is not None
    pdf, docx = result.event.attachments
    assert result.attachment_data[pdf.sha256].startswith(b"%PDF-1.4")
    assert result.attachment_data[docx.sha256].startswith(b"PK\x03\x04")
    assert {a.size for a in result.event.attachments} == {
        len(result.attachment_data[pdf.sha256]), len(result.attachment_data[docx.sha256])}


def test_stages_run_in_the_documented_order() -> None:
    assert STAGE_NAMES[0] == "parse" and STAGE_NAMES[-1] == "attachments"
    result = process(mail("34-spam.eml"), context())
    assert result.stage == "spam-filter"
    assert result.audit[-1].details["stage"] == "spam-filter"


def test_long_subject_kept_whole_in_event_and_cut_in_audit() -> None:
    result = process(mail("39-long-subject.eml"), context())
    assert result.event is not None
    assert result.event.subject.startswith("Very long subject word0 word1")
    assert result.event.subject.endswith("word399")
    assert len(result.audit[0].details["subject"]) == 200


def test_mail_without_message_id_gets_a_stable_derived_one() -> None:
    first = process(mail("29-no-message-id.eml"), context())
    again = process(mail("29-no-message-id.eml"), context(seen={first.message_id}))
    assert first.message_id.endswith("@no-message-id.invalid")
    assert again.audit[-1].details["code"] == Code.DUPLICATE


def test_without_a_directory_no_one_is_a_guest_and_commands_are_not_read() -> None:
    ctx = context(directory=None)
    assert process(mail("38-guest-sender.eml"), ctx).status == OK
    result = process(mail("31-email-command.eml"), ctx)
    assert result.event is not None and result.event.kind == "create"
    assert "email commands not read: jane@acme.example is not authorised" in \
        result.event.notes[0]


def test_stage_names_are_unique() -> None:
    assert len(set(STAGE_NAMES)) == len(STAGE_NAMES)


def test_rules_can_test_any_header_and_case_insensitive_field_names() -> None:
    from reconciler.config.models.incoming_server import IncomingServer

    from .kit import resource, resources

    found = [*resources(), resource("IncomingEmailRule", "via-mx", {
        "order": 1, "stopProcessing": False, "conditions": [
            {"field": "header:received", "operator": "contains", "value": "by imap.acme.example"},
            {"field": "Subject", "operator": "contains", "value": "printer"}],
        "setFields": {"site": "HQ", "technicianGroup": "Floor support"}})]
    server = next(r for r in found if isinstance(r, IncomingServer))
    result = process(mail("01-new-request-plain.eml"),
                     PipelineContext.from_resources(server, found))
    assert result.event is not None
    assert dict(result.event.fields) == {
        "technicianGroup": "Floor support", "category": "General", "site": "HQ"}
    assert result.event.field_sources["site"] == "rule:via-mx"
