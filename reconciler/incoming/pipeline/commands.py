"""Email commands (SPEC I4): ``$Field=Value$`` lines in the body of a command mail.

Read only when the subject contains the configured text and (unless
``authorizedSendersOnly`` is off) the directory lets the sender send commands:

- ``$Operation=AddRequest|EditRequest|CloseRequest|PickupRequest$``; an unknown
  or not enabled operation fails the mail: acting on a guess would change the
  wrong ticket.
- ``$RequestID=123$`` names the ticket and wins over an ID in the subject.
- Field assignments, names case-insensitive, the last value winning. A field
  that is not a ticket field (or not in ``allowedFields`` when set) is dropped
  with a note, as the seeds' desks ignore fields the application lacks.

- Resource answers ``@@resource.question=answer@@`` (answers separated by commas),
  the last one for a key winning. When the EmailCommand declares its resources
  (the seeds' rules): an unknown resource or question is dropped; a select, radio
  or string question with more than one answer is dropped; an answer that is not
  one of the question's options is dropped, and a check question keeps its valid
  answers (dropped when none is valid). Each drop is a note on the event.

Field names become the event's camelCase keys (``SubCategory`` -> ``subCategory``);
``Group`` becomes ``technicianGroup`` to match server defaults and incoming rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.config.models.email_command import QuestionType, ResourceQuestion
from reconciler.incoming.pipeline.context import CompiledCommand

OPERATIONS = ("AddRequest", "EditRequest", "CloseRequest", "PickupRequest")
KNOWN_FIELDS = (
    "Level", "Mode", "Priority", "Urgency", "Impact", "ImpactDetails", "Category",
    "SubCategory", "Item", "Group", "Technician", "TechnicianEmail", "Requester",
    "RequesterEmail", "RequestTemplate", "RequestType", "Status", "Site", "Asset", "Resolution",
)
_KNOWN = {f.casefold(): f for f in KNOWN_FIELDS}
_OPERATIONS = {o.casefold(): o for o in OPERATIONS}
_RENAMED = {"Group": "technicianGroup"}
# @@resource.question=answer@@: api keys are word characters (res_301.qstn_select_302)
_RESOURCE = re.compile(r"@@[ \t]*(?P<resource>[\w-]{1,100})\.(?P<question>[\w-]{1,100})[ \t]*="
                       r"(?P<value>(?:(?!@@)[^\r\n])*)@@")
Answers = dict[str, dict[str, list[str]]]  # resource -> question -> answers


@dataclass(slots=True)
class Commands:
    operation: str | None = None
    request_id: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # fails the mail (unknown / disabled operation)
    count: int = 0  # how many $..$ commands were found
    resources: Answers = field(default_factory=dict)


def applies(command: CompiledCommand, subject: str) -> bool:
    return command.subject_contains in subject.casefold()


def parse_commands(body: str, command: CompiledCommand) -> Commands:
    out = Commands()
    out.resources = resource_answers(body, command.resources, out.notes)
    for match in command.pattern.finditer(body):
        if _RESOURCE.fullmatch(match[0]):
            continue  # a resource answer, which an @@ delimiter also encloses
        out.count += 1
        name, value = " ".join(match["name"].split()), match["value"].strip()
        key = name.casefold().replace(" ", "")
        if key == "operation":
            op = _OPERATIONS.get(value.casefold())
            if op is None:
                out.error = (f"unknown email command operation {value!r}; known operations: "
                             + ", ".join(OPERATIONS))
            elif op not in command.operations:
                out.error = f"email command operation {op} is not enabled for this mailbox"
            else:
                out.operation, out.error = op, None  # the last operation given wins
            continue
        if key in ("requestid", "request_id"):
            digits = value.lstrip("#").strip()
            if digits.isdigit():
                out.request_id = digits.lstrip("0") or "0"
            else:
                out.notes.append(f"RequestID {value!r} is not a number; ignored")
            continue
        known = _KNOWN.get(key)
        if command.allowed_fields and key not in command.allowed_fields:
            out.notes.append(f"field {name!r} is not in allowedFields; ignored")
            continue
        if not command.allowed_fields and known is None:
            out.notes.append(f"field {name!r} is not a ticket field; ignored")
            continue
        canonical = _RENAMED.get(known or name, known or name)
        out.fields[canonical[:1].lower() + canonical[1:]] = value
    return out


def resource_answers(body: str, declared: Mapping[str, Mapping[str, ResourceQuestion]],
                     notes: list[str]) -> Answers:
    """The ``@@resource.question=answer@@`` answers of ``body`` under the seeds' rules
    (checked only against ``declared`` resources; none declared: passed on as given)."""
    given: dict[tuple[str, str], list[str]] = {}
    for match in _RESOURCE.finditer(body):
        key = (match["resource"], match["question"])
        given.pop(key, None)  # the last occurrence of a key is the one kept, in its place
        given[key] = [a for a in (p.strip() for p in match["value"].split(",")) if a]
    out: Answers = {}
    for (resource, question), answers in given.items():
        where = f"resource answer {resource}.{question}"
        if declared:
            asked = declared.get(resource, {}).get(question)
            if asked is None:
                notes.append(f"{where} is not a question of the template's resources; ignored")
                continue
            answers = _checked(asked, answers, where, notes)
        if answers:
            out.setdefault(resource, {})[question] = answers
    return out


def _checked(asked: ResourceQuestion, answers: list[str], where: str,
             notes: list[str]) -> list[str]:
    if not answers:
        notes.append(f"{where} has no answer; ignored")
        return []
    if asked.type != QuestionType.CHECK and len(answers) > 1:
        notes.append(f"{where} is a {asked.type} question and takes one answer, not "
                     f"{len(answers)}; the question is removed")
        return []
    if not asked.options or asked.type == QuestionType.STRING:
        return answers
    names = {o.casefold(): o for o in asked.options}
    valid = [names[a.casefold()] for a in answers if a.casefold() in names]
    for wrong in (a for a in answers if a.casefold() not in names):
        notes.append(f"{where}: {wrong!r} is not one of its options ("
                     + ", ".join(asked.options) + "); answer removed")
    if not valid:
        notes.append(f"{where} has no valid answer; the question is removed")
    return valid
