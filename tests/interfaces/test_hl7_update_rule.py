"""HL7 v2 update semantics (v2.5.1 Ch. 2.5.3): an empty field leaves the stored value alone, ``""``
clears it, a value replaces it — for every field the reader or the ORU uses, from the bytes of a
message through the parser to the stored row, decided by the one function ``hl7_update``."""

from __future__ import annotations

from datetime import date, datetime

import hypothesis.strategies as st
from hypothesis import given, settings

from imaging.facts import CLEAR, hl7_update
from imaging.models import Order, Patient
from imaging.services import _order_sent, _patient_sent, fields_updated
from interfaces.hl7.parse import parse
from tests import hl7_data

# a value HL7 can carry in a component (no separators, not the null itself)
text = (
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -.", min_size=1, max_size=20)
    .map(str.strip)
    .filter(bool)
)
state = st.sampled_from(["empty", "null", "value"])


@given(stored=st.one_of(st.none(), text), sent=st.one_of(st.none(), st.just(CLEAR), text))
def test_the_rule_itself(stored, sent):
    result = hl7_update(stored, sent, cleared="gone")
    if sent is None:
        assert result == stored
    elif sent is CLEAR:
        assert result == "gone"
    else:
        assert result == sent


class FakeFacility:
    """_order_sent localises naive times with the facility's zone; UTC keeps the test exact."""

    from datetime import UTC as zone


# (model attribute, segment, field, component or None for the whole field, what a value becomes)
PATIENT_SPECS = [
    ("family_name", "PID", 5, 1, lambda v: v),
    ("given_name", "PID", 5, 2, lambda v: v),
    ("middle_name", "PID", 5, 3, lambda v: v),
]
ORDER_SPECS = [
    ("procedure_text", "OBR", 4, 2, lambda v: v),
    ("procedure_coding_system", "OBR", 4, 3, lambda v: v),
    ("clinical_information", "OBR", 13, None, lambda v: v),
    ("requested_procedure_id", "OBR", 19, None, lambda v: v),
    ("scheduled_procedure_step_id", "OBR", 20, None, lambda v: v),
    ("modality", "OBR", 24, None, lambda v: v),
    ("priority_code", "OBR", 5, None, lambda v: v.upper()),
    ("reasons_for_study", "OBR", 31, 2, lambda v: [{"code": "", "text": v, "system": ""}]),
    ("ordering_provider_name", "ORC", 12, 2, lambda v: v),  # XCN-2 family name
    ("patient_class", "PV1", 2, None, lambda v: v.upper()),
    ("patient_location", "PV1", 3, None, lambda v: v),
    ("visit_number", "PV1", 19, 1, lambda v: v),
    ("visit_number_authority", "PV1", 19, 4, lambda v: v),
]


def _message(fields: dict[tuple[str, int], str]) -> bytes:
    """A minimal ORM^O01 XO with the given (segment, field) values; everything else empty."""
    base = {
        ("PID", 1): "1",
        ("PID", 3): "MRN7^^^LAKESHORE^MR",
        ("PV1", 1): "1",
        ("ORC", 1): "XO",
        ("ORC", 2): "P7^EPIC",
        ("OBR", 1): "1",
        ("OBR", 4): "70450",
        ("OBR", 18): "A7",
    }
    base.update(fields)
    segments = [hl7_data.msh("ORM^O01", version="2.5.1")]
    for name in ("PID", "PV1", "ORC", "OBR"):
        segments.append(hl7_data.segment(name, {n: v for (s, n), v in base.items() if s == name}))
    return ("\r".join(segments) + "\r").encode()


def _set(fields: dict[tuple[str, int], str], seg: str, num: int, comp: int | None, raw: str) -> None:
    """Put one component (or the whole field) into the message being built."""
    if comp is None:
        fields[(seg, num)] = raw
        return
    parts = fields.get((seg, num), "").split("^")
    parts += [""] * (comp - len(parts))
    parts[comp - 1] = raw
    fields[(seg, num)] = "^".join(parts)  # "\"\"^^" is a component null, "\"\"" the whole field


SPECS = [(spec, Patient) for spec in PATIENT_SPECS] + [(spec, Order) for spec in ORDER_SPECS]
RAW = {"empty": "", "null": '""'}
one_field = st.tuples(state, text, text)


@settings(max_examples=100, deadline=None)
@given(
    cases=st.fixed_dictionaries({spec[0]: one_field for spec, _ in SPECS}),
    birth=state,
    sex=state,
    scheduled=state,
)
def test_every_field_keeps_clears_or_changes_as_sent(cases, birth, sex, scheduled):
    # given stored values for every field the reader or the ORU uses, and a message (ORC XO) in
    # which each field is empty, "" or a new value
    order = Order(scheduled_at=datetime(2026, 1, 1, 8, 0, tzinfo=FakeFacility.zone))
    patient = Patient(family_name="OLD", sex="F", birth_date=date(1950, 1, 1))
    fields: dict[tuple[str, int], str] = {("OBR", 4): "70450"}
    for (attr, seg, num, comp, convert), model in SPECS:
        how, stored, new = cases[attr]
        setattr(patient if model is Patient else order, attr, convert(stored))
        _set(fields, seg, num, comp, RAW.get(how, new))
    fields[("PID", 7)] = {**RAW, "value": "19800304"}[birth]
    fields[("PID", 8)] = {**RAW, "value": "M"}[sex]
    fields[("OBR", 27)] = {**RAW, "value": "^^^20261201101500"}[scheduled]
    # when it is parsed and applied
    parsed = parse(_message(fields)).content
    fields_updated(order, _order_sent(parsed.orders[0], FakeFacility))
    fields_updated(patient, _patient_sent(parsed.patient))
    # then each field is kept, cleared or replaced exactly as it was sent
    for (attr, _seg, _num, _comp, convert), model in SPECS:
        how, stored, new = cases[attr]
        cleared = [] if attr == "reasons_for_study" else ""
        if attr == "priority_code" and how == "empty" and scheduled == "null":
            how = "null"  # OBR-27 "" deletes the whole timing/quantity, its priority (27.6) too
        expected = {"empty": convert(stored), "null": cleared, "value": convert(new)}[how]
        assert getattr(patient if model is Patient else order, attr) == expected, (attr, how)
    assert patient.birth_date == {"empty": date(1950, 1, 1), "null": None, "value": date(1980, 3, 4)}[birth]
    assert patient.sex == {"empty": "F", "null": "U", "value": "M"}[sex]
    assert (
        order.scheduled_at
        == {
            "empty": datetime(2026, 1, 1, 8, 0, tzinfo=FakeFacility.zone),
            "null": None,
            "value": datetime(2026, 12, 1, 10, 15, tzinfo=FakeFacility.zone),
        }[scheduled]
    )


# Every message that updates a patient reads its PID through the same parser and rule: the bare PID
# of a cancel must not erase what the NW said (the sex that became U), nor an A31 the middle name.
PATIENT_MESSAGES = {
    "ADT^A08": (hl7_data.msh("ADT^A08^ADT_A01", version="2.5.1"), "EVN|A08", None),
    "ADT^A31": (hl7_data.msh("ADT^A31^ADT_A05", version="2.5.1"), "EVN|A31", None),
    "ORM CA": (hl7_data.msh("ORM^O01", version="2.5.1"), None, "ORC|CA|P7^EPIC\rOBR|1|P7^EPIC||70450"),
    "ORM SC": (hl7_data.msh("ORM^O01", version="2.5.1"), None, "ORC|SC|P7^EPIC\rOBR|1|P7^EPIC||70450"),
    "OMI XO": (
        hl7_data.msh("OMI^O23^OMI_O23", version="2.5.1"),
        None,
        "ORC|XO|P7^EPIC\rTQ1|1\rOBR|1|P7^EPIC||70450\rIPC|A7|RP7|1.2.3.7|SPS7|CT",
    ),
}


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(sorted(PATIENT_MESSAGES)),
    cases=st.fixed_dictionaries({spec[0]: one_field for spec in PATIENT_SPECS}),
    birth=state,
    sex=state,
)
def test_every_message_that_updates_a_patient_keeps_clears_or_changes_its_pid_as_sent(
    kind, cases, birth, sex
):
    # given a stored patient, and an A08, an A31, a CA, an SC or an OMI whose PID fields are each
    # empty, "" or a new value
    patient = Patient(family_name="OLD", sex="F", birth_date=date(1950, 1, 1))
    fields: dict[tuple[str, int], str] = {("PID", 1): "1", ("PID", 3): "MRN7^^^LAKESHORE^MR"}
    for attr, seg, num, comp, convert in PATIENT_SPECS:
        how, stored, new = cases[attr]
        setattr(patient, attr, convert(stored))
        _set(fields, seg, num, comp, RAW.get(how, new))
    fields[("PID", 7)] = {**RAW, "value": "19800304"}[birth]
    fields[("PID", 8)] = {**RAW, "value": "M"}[sex]
    msh, evn, rest = PATIENT_MESSAGES[kind]
    pid = hl7_data.segment("PID", {n: v for (_s, n), v in fields.items()})
    text = "\r".join(part for part in (msh, evn, pid, "PV1|1", rest) if part) + "\r"
    # when it is parsed and applied
    fields_updated(patient, _patient_sent(parse(text.encode()).content.patient))
    # then each field is kept, cleared or replaced exactly as it was sent
    for attr, _seg, _num, _comp, convert in PATIENT_SPECS:
        how, stored, new = cases[attr]
        assert getattr(patient, attr) == {"empty": convert(stored), "null": "", "value": convert(new)}[how], (
            kind,
            attr,
            how,
        )
    assert patient.birth_date == {"empty": date(1950, 1, 1), "null": None, "value": date(1980, 3, 4)}[birth]
    assert patient.sex == {"empty": "F", "null": "U", "value": "M"}[sex], kind


def test_copies_to_is_one_list_kept_replaced_or_cleared():
    # given an order whose results also go to two doctors (OBR-28, XCN repeating)
    order = Order(copies_to=[{"id": "111", "family": "HOUSE"}, {"id": "222", "family": "WILSON"}])
    # when an XO leaves OBR-28 empty, then both stay
    fields_updated(order, _order_sent(parse(_message({})).content.orders[0], FakeFacility))
    assert [c["family"] for c in order.copies_to] == ["HOUSE", "WILSON"]
    # when one names a single doctor, by every component, then the list is that one
    sent = parse(_message({("OBR", 28): "333^CAMERON^ALLISON^^^DR^MD^^NPI"})).content.orders[0]
    fields_updated(order, _order_sent(sent, FakeFacility))
    assert order.copies_to == [
        {
            "id": "333",
            "family": "CAMERON",
            "given": "ALLISON",
            "prefix": "DR",
            "degree": "MD",
            "authority": "NPI",
        }
    ]
    # when one sends "", then nobody gets copies any more
    fields_updated(order, _order_sent(parse(_message({("OBR", 28): '""'})).content.orders[0], FakeFacility))
    assert order.copies_to == []
