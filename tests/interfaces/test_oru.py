"""ORU^R01 v2.5.1 as both HL7 libraries read it: OBR-25/OBX-11 status, one TX row per line, the
order's numbers echoed, the signer in OBR-32, and text with HL7 delimiters surviving the trip."""

from __future__ import annotations

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from interfaces.hl7.oru import (
    AddendumNote,
    AiVerdictLine,
    ResultStatus,
    control_id_new,
    escape,
    oru_build,
    text_lines,
)
from tests.interfaces.oru_data import FINDINGS, SIGNED_AT, stroke_report


def obx_rows(message: hl7.Message) -> list[tuple[str, str, str, str]]:
    """(OBX-3.1, OBX-4, OBX-5 unescaped, OBX-11) per row."""
    return [
        (str(obx[3][0][0]), str(obx[4]), message.unescape(str(obx[5])), str(obx[11]))
        for obx in message.segments("OBX")
    ]


def test_python_hl7_reads_a_final_report():
    # given a signed stroke head CT
    report = stroke_report()
    # when it is built and parsed by python-hl7
    message = hl7.parse(oru_build(report))
    # then the header says ORU^R01 v2.5.1 in UTF-8, original acknowledgement mode
    msh = message.segment("MSH")
    assert str(msh[9]) == "ORU^R01^ORU_R01" and str(msh[12]) == "2.5.1" and str(msh[18]) == "UNICODE UTF-8"
    assert str(msh[10]) == report.control_id and str(msh[15]) == str(msh[16]) == ""
    assert (str(msh[5]), str(msh[6])) == ("EPIC_RAD", "LAKESHORE")
    # the order's numbers are echoed where the EMR matches them
    orc, obr = message.segment("ORC"), message.segment("OBR")
    assert (str(orc[1]), str(orc[2]), str(orc[3])) == ("RE", "PL-20250301-7", "FL-889")
    assert (str(obr[2]), str(obr[3]), str(obr[18])) == ("PL-20250301-7", "FL-889", "ACC-STROKE-1")
    assert str(obr[4]) == "70450^CT HEAD WO CONTRAST^C4"
    # final, in the facility's zone (09:29:30 UTC is 03:29:30 CST)
    assert str(obr[25]) == "F" and str(obr[22]) == "20250301032930-0600"
    # the signing radiologist by NPI
    assert str(obr[32]) == "1234567893&Neuro&Nadia&&&Dr&MD&&NPI"
    assert str(message.segment("PID")[3]) == "MRN-4711^^^LAKESHORE^MR"
    assert str(message.segment("PV1")[19]) == "V-55501"
    # one TX row per line; every row final and flagged critical
    rows = obx_rows(message)
    assert {r[3] for r in rows} == {"F"}
    assert {str(obx[2]) for obx in message.segments("OBX")} == {"TX"}
    assert {str(obx[8]) for obx in message.segments("OBX")} == {"AA"}
    assert [r[1] for r in rows] == ["1"] * 2 + ["2"] * 2 + ["3"] * 5 + ["4"] * 3
    assert [int(str(obx[1])) for obx in message.segments("OBX")] == list(range(1, 13))


def test_sections_carry_loinc_codes_and_their_text_line_by_line():
    message = hl7.parse(oru_build(stroke_report()))
    by_code: dict[str, list[str]] = {}
    for code, _, text, _ in obx_rows(message):
        by_code.setdefault(code, []).append(text)
    assert by_code["55752-0"] == ["CLINICAL HISTORY:", "Code stroke: left facial droop, onset 08:40."]
    assert by_code["55111-9"] == ["TECHNIQUE:", "Axial CT of the head without contrast."]
    assert by_code["18782-3"] == ["FINDINGS:", *FINDINGS.split("\n")]
    assert by_code["19005-8"] == ["IMPRESSION:", "1. No hemorrhage.", "2. Early left MCA infarct, ASPECTS 9."]


def test_delimiters_in_text_are_escaped_and_round_trip():
    # given findings with | ^ & ~ \ in them
    text = oru_build(stroke_report())
    # then no raw delimiter breaks the structure: every OBX still has its status in OBX-11
    assert "\\F\\ no mass effect \\S\\ midline shift 0 mm \\T\\ ventricles normal \\R\\ stable" in text
    assert "C:\\E\\PACS\\E\\series" in text
    message = hl7.parse(text)
    assert all(len(obx) == 15 for obx in message.segments("OBX"))
    # and python-hl7 gives back exactly what the radiologist wrote, non-ASCII included
    lines = [r[2] for r in obx_rows(message) if r[0] == "18782-3"][1:]
    assert "\n".join(lines) == FINDINGS


def test_hl7apy_strict_parses_and_validates():
    # given the same message
    text = oru_build(stroke_report())
    # when hl7apy parses it strictly with its v2.5.1 ORU_R01 structure
    message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    # then it validates and shows the same content in its groups
    assert message.validate()
    result = message.oru_r01_patient_result
    order = result.oru_r01_order_observation
    assert order.obr.obr_25.value == "F"
    assert (order.orc.orc_2.value, order.orc.orc_3.value) == ("PL-20250301-7", "FL-889")
    assert order.obr.obr_18.value == "ACC-STROKE-1"
    observations = order.oru_r01_observation
    assert len(observations) == 12
    assert {o.obx.obx_11.value for o in observations} == {"F"}
    assert observations[0].obx.obx_3.obx_3_1.value == "55752-0"
    assert result.oru_r01_patient.pid.pid_3.to_er7() == "MRN-4711^^^LAKESHORE^MR"
    # hl7apy keeps escape sequences as they are on the wire
    findings = [o.obx.obx_5.to_er7() for o in observations if o.obx.obx_3.obx_3_1.value == "18782-3"]
    assert any("\\F\\" in line and "\\T\\" in line for line in findings)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(ResultStatus.PRELIMINARY, "P"), (ResultStatus.FINAL, "F"), (ResultStatus.CORRECTED, "C")],
)
def test_result_status_goes_to_obr_25_and_every_obx_11(status, expected):
    message = hl7.parse(oru_build(stroke_report(status=status)))
    assert str(message.segment("OBR")[25]) == expected
    assert {r[3] for r in obx_rows(message)} == {expected}


def test_addendum_is_a_correction_with_its_own_section():
    # given the final report with an addendum appended, re-sent as a correction
    original = stroke_report()
    addended = stroke_report(
        status=ResultStatus.CORRECTED,
        control_id="RR0000000000000002",
        sections=(*original.sections, ("Addendum", "CTA confirms left M2 occlusion.")),
    )
    message = hl7.parse(oru_build(addended))
    # then it carries the same order numbers, status C and the addendum rows (LOINC 55107-7) last
    assert str(message.segment("OBR")[25]) == "C" and str(message.segment("OBR")[18]) == "ACC-STROKE-1"
    assert obx_rows(message)[-2:] == [
        ("55107-7", "5", "ADDENDUM:", "C"),
        ("55107-7", "5", "CTA confirms left M2 occlusion.", "C"),
    ]


ADDENDA = (
    AddendumNote(
        1, "CTA confirms left M2 occlusion.\nCalled to Dr Kildare | 09:50.", "Nadia Neuro", SIGNED_AT
    ),
    AddendumNote(2, "Perfusion: core 12 mL ^ penumbra 80 mL.", "Omar Other", SIGNED_AT),
)
VERDICT = AiVerdictLine("230690007", "SCT", "Stroke", True, "agree", "Acme StrokeAI 2.1")


def nte_rows(message: hl7.Message) -> list[tuple[str, str, str, str]]:
    """(NTE-1, NTE-2, NTE-3 unescaped, NTE-4.1) per NTE."""
    return [
        (str(nte[1]), str(nte[2]), message.unescape(str(nte[3])), str(nte[4][0][0]))
        for nte in message.segments("NTE")
    ]


def test_addenda_as_nte_follow_the_report_rows_and_validate_strictly():
    # given an addended report for a facility that wants addenda as NTE, with an AI verdict row too
    report = stroke_report(status=ResultStatus.CORRECTED, addenda=ADDENDA, ai_verdicts=(VERDICT,))
    text = oru_build(report)
    # then no addendum OBX is sent: the OBX rows are the report's own and the verdict
    message = hl7.parse(text)
    assert "55107-7" not in {r[0] for r in obx_rows(message)}
    # and each addendum is a heading naming its signer and time (facility zone), then a line per NTE
    assert nte_rows(message) == [
        ("1", "L", "ADDENDUM 1 (Nadia Neuro, 2025-03-01 03:29 CST):", "RE"),
        ("2", "L", "CTA confirms left M2 occlusion.", "RE"),
        ("3", "L", "Called to Dr Kildare | 09:50.", "RE"),
        ("4", "L", "ADDENDUM 2 (Omar Other, 2025-03-01 03:29 CST):", "RE"),
        ("5", "L", "Perfusion: core 12 mL ^ penumbra 80 mL.", "RE"),
    ]
    # and they come right after the report's last text OBX, before the AI verdict's row
    names = [str(s[0]) for s in message]
    assert names[-7:] == ["OBX", "NTE", "NTE", "NTE", "NTE", "NTE", "OBX"]
    # and hl7apy's strict v2.5.1 ORU_R01 puts them in the last report observation's group
    strict = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert strict.validate()
    observations = strict.oru_r01_patient_result.oru_r01_order_observation.oru_r01_observation
    assert [len(o.nte) for o in observations][-2:] == [5, 0]
    assert observations[-1].obx.obx_2.value == "CWE" and observations[-2].obx.obx_2.value == "TX"
    assert [o.obx.obx_1.value for o in observations] == [str(n) for n in range(1, len(observations) + 1)]
    assert observations[-2].nte[2].nte_3.to_er7() == "Called to Dr Kildare \\F\\ 09:50."


def test_without_addenda_there_is_no_nte():
    assert "\rNTE|" not in oru_build(stroke_report(status=ResultStatus.CORRECTED))


def test_without_a_visit_there_is_no_pv1_and_no_critical_flag_when_not_critical():
    message = hl7.parse(oru_build(stroke_report(visit_number="", critical=False)))
    assert [str(s[0]) for s in message][:3] == ["MSH", "PID", "ORC"]
    assert {str(obx[8]) for obx in message.segments("OBX")} == {""}


def test_frame_bytes_and_stray_controls_never_reach_the_wire():
    # given text pasted with MLLP's own frame characters and a form feed in it
    text = oru_build(stroke_report(sections=(("Findings", "a\x0bb\x1cc\x0cd\te"),)))
    # then the message cannot break its MLLP frame or its segments
    assert "\x0b" not in text and "\x1c" not in text and "\x0c" not in text
    assert "a b c d\te" in text


def test_line_handling():
    assert text_lines("\r\n\nfirst  \r\nsecond\rthird\n\nfifth\n\n") == [
        "first",
        "second",
        "third",
        "",
        "fifth",
    ]
    assert escape("a|b^c&d~e\\f") == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"


def test_an_unknown_section_title_is_kept_as_its_own_heading():
    message = hl7.parse(oru_build(stroke_report(sections=(("BI-RADS assessment", "Category 1."),))))
    (first, second) = message.segments("OBX")
    assert str(first[3]) == "18782-3^BI-RADS assessment^LN"
    assert message.unescape(str(second[5])) == "Category 1."


def test_control_ids_fit_msh_10_and_do_not_repeat():
    ids = {control_id_new() for _ in range(1000)}
    assert len(ids) == 1000 and {len(i) for i in ids} == {20}
