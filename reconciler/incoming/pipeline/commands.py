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

Field names become the event's camelCase keys (``SubCategory`` -> ``subCategory``);
``Group`` becomes ``technicianGroup`` to match server defaults and incoming rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass(slots=True)
class Commands:
    operation: str | None = None
    request_id: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # fails the mail (unknown / disabled operation)
    count: int = 0  # how many $..$ commands were found


def applies(command: CompiledCommand, subject: str) -> bool:
    return command.subject_contains in subject.casefold()


def parse_commands(body: str, command: CompiledCommand) -> Commands:
    out = Commands()
    for match in command.pattern.finditer(body):
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
