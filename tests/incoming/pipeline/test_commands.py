from __future__ import annotations

import re

from reconciler.incoming.pipeline.commands import applies, parse_commands
from reconciler.incoming.pipeline.context import CompiledCommand, command_pattern


def command(delimiter: str = "$", allowed: tuple[str, ...] = (),
            operations: tuple[str, ...] = ("AddRequest", "EditRequest")) -> CompiledCommand:
    return CompiledCommand("cmd", "[desk-cmd]", command_pattern(delimiter), frozenset(operations),
                           frozenset(a.casefold() for a in allowed), True)


def test_last_value_wins_and_names_are_case_insensitive() -> None:
    parsed = parse_commands("$priority=Low$ then $PRIORITY=High$ and $SubCategory=Laptops$",
                            command())
    assert parsed.fields == {"priority": "High", "subCategory": "Laptops"}
    assert parsed.count == 3 and parsed.error is None


def test_operation_enabled_disabled_unknown() -> None:
    assert parse_commands("$Operation=addrequest$", command()).operation == "AddRequest"
    closed = parse_commands("$Operation=CloseRequest$", command())
    assert closed.error == "email command operation CloseRequest is not enabled for this mailbox"
    unknown = parse_commands("$Operation=Explode$", command())
    assert unknown.error is not None and unknown.error.startswith(
        "unknown email command operation 'Explode'")
    # the last operation wins, so a corrected second line clears the first mistake
    assert parse_commands("$Operation=Explode$ $Operation=EditRequest$", command()).error is None


def test_request_id_and_allowed_fields() -> None:
    parsed = parse_commands("$RequestID=##0042$ $Priority=High$ $Status=Closed$ $Colour=red$",
                            command(allowed=("Priority", "Colour")))
    assert parsed.request_id == "42"
    assert parsed.fields == {"priority": "High", "colour": "red"}
    assert parsed.notes == ["field 'Status' is not in allowedFields; ignored"]


def test_value_cannot_swallow_lines_or_other_commands() -> None:
    parsed = parse_commands("$Priority=High\n$Urgency=Low$", command())
    assert parsed.fields == {"urgency": "Low"}
    two_char = parse_commands("@@Priority=High@@ $Priority=Low$", command("@@"))
    assert two_char.fields == {"priority": "High"}


def test_group_lines_up_with_technician_group() -> None:
    assert parse_commands("$Group=Network$", command()).fields == {"technicianGroup": "Network"}


def test_subject_marker_is_case_insensitive() -> None:
    assert applies(command(), "Re: [DESK-CMD] please")
    assert not applies(command(), "desk-cmd without brackets")


def test_pattern_is_compiled_once_per_command() -> None:
    assert isinstance(command().pattern, re.Pattern)


def test_resource_answers_pass_unchecked_when_none_are_declared() -> None:
    parsed = parse_commands("@@res_301.qstn_select_302=hp@@ @@res_301.qstn_select_302=compaq, "
                            "dell@@\n@@broken.q=no end\n", command())
    assert parsed.resources == {"res_301": {"qstn_select_302": ["compaq", "dell"]}}
    assert parsed.count == 0 and parsed.notes == []


def test_resource_answers_are_not_commands_under_an_at_delimiter() -> None:
    parsed = parse_commands("@@Priority=High@@ @@res_1.q_2=yes@@", command("@@"))
    assert parsed.fields == {"priority": "High"} and parsed.notes == []
    assert parsed.resources == {"res_1": {"q_2": ["yes"]}}
