"""O2 routing: rules per module, in order, ALL/ANY conditions, fallback to the primary."""

from __future__ import annotations

import pytest
from dispatch.kit import cond, rule, server

from reconciler.runtime.routing import RuleVerdict, Via, route

PRIMARY = server("primary", primary=True)
HR = server("hr")
LAB = server("lab")
SERVERS = [PRIMARY, HR, LAB]


@pytest.mark.parametrize(
    ("condition", "context", "expected"),
    [
        (cond("department", "equals", "HR"), {"department": "HR"}, True),
        (cond("department", "equals", "HR"), {"department": "hr"}, True),
        (cond("department", "equals", "HR"), {"department": "HR Ops"}, False),
        (cond("department", "notEquals", "HR"), {"department": "IT"}, True),
        (cond("department", "notEquals", "HR"), {"department": "Hr"}, False),
        (cond("site", "in", values=["Lab", "Annex"]), {"site": "annex"}, True),
        (cond("site", "in", values=["Lab", "Annex"]), {"site": "Main"}, False),
        (cond("site", "notIn", values=["Lab", "Annex"]), {"site": "Main"}, True),
        (cond("site", "notIn", values=["Lab", "Annex"]), {"site": "LAB"}, False),
        (cond("group", "contains", "pay"), {"group": "HR Payroll"}, True),
        (cond("group", "contains", "pay"), {"group": "HR Benefits"}, False),
        (cond("group", "notContains", "pay"), {"group": "HR Benefits"}, True),
        (cond("group", "notContains", "pay"), {"group": "PAYROLL"}, False),
        (cond("location", "startsWith", "building"), {"location": "Building A"}, True),
        (cond("location", "startsWith", "building"), {"location": "Annex Building"}, False),
        (cond("location", "endsWith", " a"), {"location": "Building A"}, True),
        (cond("location", "endsWith", " a"), {"location": "Building B"}, False),
        (cond("location", "regex", r"^building [ab]$"), {"location": "Building B"}, True),
        (cond("location", "regex", r"^building [ab]$"), {"location": "Building C"}, False),
        # regex searches; anchors are the author's choice
        (cond("location", "regex", r"annex"), {"location": "North Annex 2"}, True),
    ],
)
def test_each_operator(condition: dict, context: dict, expected: bool) -> None:
    decision = route("request", context, [rule("r", 1, "hr", condition)], SERVERS)
    assert (decision.server_name == "hr") is expected
    assert decision.via == (Via.RULE if expected else Via.PRIMARY)


@pytest.mark.parametrize(
    ("condition", "context", "expected"),
    [
        (cond("department", "equals", "HR", case_sensitive=True), {"department": "hr"}, False),
        (cond("department", "equals", "HR", case_sensitive=True), {"department": "HR"}, True),
        (cond("group", "contains", "Pay", case_sensitive=True), {"group": "payroll"}, False),
        (cond("site", "in", values=["Lab"], case_sensitive=True), {"site": "lab"}, False),
        (cond("location", "regex", "^Annex$", case_sensitive=True), {"location": "annex"}, False),
        (cond("location", "regex", "^Annex$", case_sensitive=True), {"location": "Annex"}, True),
    ],
)
def test_case_sensitive_conditions(condition: dict, context: dict, expected: bool) -> None:
    decision = route("request", context, [rule("r", 1, "hr", condition)], SERVERS)
    assert (decision.server_name == "hr") is expected


@pytest.mark.parametrize(
    ("operator", "kwargs", "expected"),
    [
        ("equals", {"value": "HR"}, False),
        ("startsWith", {"value": "H"}, False),
        ("regex", {"value": ".*"}, False),
        ("in", {"values": ["HR"]}, False),
        ("notEquals", {"value": "HR"}, True),
        ("notIn", {"values": ["HR"]}, True),
        ("notContains", {"value": "HR"}, True),
    ],
)
def test_unset_field_fails_positive_and_passes_negative(
    operator: str, kwargs: dict, expected: bool
) -> None:
    decision = route("request", {}, [rule("r", 1, "hr", cond("department", operator, **kwargs))],
                     SERVERS)
    assert (decision.server_name == "hr") is expected
    assert "department is not set" in decision.explain()


def test_all_needs_every_condition() -> None:
    r = rule("hr-payroll", 1, "hr", cond("department", "equals", "HR"),
             cond("group", "equals", "Payroll"), match="all")
    assert route("request", {"department": "HR", "group": "Payroll"}, [r], SERVERS).rule == (
        "hr-payroll")
    decision = route("request", {"department": "HR", "group": "Benefits"}, [r], SERVERS)
    assert decision.via == Via.PRIMARY
    failed = [c for c in decision.trace[0].conditions if not c.matched]
    assert [c.field for c in failed] == ["group"]


def test_any_needs_one_condition() -> None:
    r = rule("hr-any", 1, "hr", cond("department", "equals", "HR"),
             cond("group", "in", values=["HR Operations", "Payroll"]), match="any")
    assert route("request", {"department": "IT", "group": "payroll"}, [r], SERVERS).rule == "hr-any"
    assert route("request", {"department": "IT", "group": "Desk"}, [r], SERVERS).via == Via.PRIMARY


def test_rule_without_conditions_catches_its_module() -> None:
    assert route("change", {}, [rule("all-changes", 1, "lab", module="change")],
                 SERVERS).server_name == "lab"


def test_rules_are_tried_in_ascending_order_first_match_wins() -> None:
    rules = [
        rule("late", 20, "lab", cond("department", "equals", "HR")),
        rule("early", 10, "hr", cond("department", "equals", "HR")),
    ]
    decision = route("request", {"department": "HR"}, rules, SERVERS)
    assert decision.rule == "early"
    assert [t.rule for t in decision.trace] == ["early"]  # stops at the first match


def test_equal_order_is_broken_by_name() -> None:
    rules = [rule("zeta", 5, "lab"), rule("alpha", 5, "hr")]
    assert route("request", {}, rules, SERVERS).rule == "alpha"


def test_only_rules_of_the_module_are_considered() -> None:
    rules = [rule("changes", 1, "lab", module="change")]
    decision = route("request", {}, rules, SERVERS)
    assert decision.via == Via.PRIMARY
    assert decision.trace == ()
    assert "no enabled rules for module request" in decision.reason


def test_disabled_rule_is_skipped_and_explained() -> None:
    rules = [rule("off", 1, "lab", enabled=False), rule("on", 2, "hr")]
    decision = route("request", {}, rules, SERVERS)
    assert decision.rule == "on"
    assert decision.trace[0].verdict == RuleVerdict.RULE_DISABLED


def test_rule_pointing_at_disabled_server_falls_through() -> None:
    servers = [PRIMARY, server("hr", enabled=False), LAB]
    rules = [rule("to-hr", 1, "hr"), rule("to-lab", 2, "lab")]
    decision = route("request", {}, rules, servers)
    assert decision.server_name == "lab"
    assert decision.trace[0].verdict == RuleVerdict.SERVER_DISABLED
    assert "to-hr" in decision.explain() and "server disabled" in decision.explain()


def test_rule_pointing_at_missing_server_falls_through_to_primary() -> None:
    decision = route("request", {}, [rule("ghost", 1, "nowhere")], SERVERS)
    assert decision.via == Via.PRIMARY
    assert decision.trace[0].verdict == RuleVerdict.SERVER_MISSING


def test_no_match_uses_enabled_primary() -> None:
    decision = route("request", {"department": "IT"},
                     [rule("hr", 1, "hr", cond("department", "equals", "HR"))], SERVERS)
    assert decision.server_name == "primary"
    assert decision.via == Via.PRIMARY
    assert decision.reason == "server primary (primary; no rule matched)"


def test_disabled_primary_is_not_a_fallback() -> None:
    servers = [server("primary", primary=True, enabled=False), HR]
    decision = route("request", {}, [], servers)
    assert decision.server is None
    assert decision.via == Via.NONE
    assert "no enabled primary" in decision.reason


def test_context_field_names_match_case_insensitively_when_unambiguous() -> None:
    r = rule("hr", 1, "hr", cond("department", "equals", "HR"))
    assert route("request", {"Department": "HR"}, [r], SERVERS).rule == "hr"
    ambiguous = {"Department": "HR", "DEPARTMENT": "IT"}
    assert route("request", ambiguous, [r], SERVERS).via == Via.PRIMARY


def test_explanation_names_rules_conditions_and_choice() -> None:
    rules = [
        rule("hr-requests", 10, "hr", cond("department", "equals", "HR"),
             cond("technicianGroup", "in", values=["Payroll"]), match="any"),
        rule("lab", 20, "lab", cond("site", "equals", "Lab")),
    ]
    text = route("request", {"department": "IT", "site": "Lab"}, rules, SERVERS).explain()
    assert text.splitlines() == [
        "module request, context: department=IT, site=Lab",
        "  rule hr-requests (order 10, match any) -> hr: not matched",
        "    [FAIL] department equals 'HR': does not hold for department='IT'",
        "    [FAIL] technicianGroup in ['Payroll']: technicianGroup is not set",
        "  rule lab (order 20, match all) -> lab: matched",
        "    [ok  ] site equals 'Lab': holds for site='Lab'",
        "=> server lab (rule lab)",
    ]
