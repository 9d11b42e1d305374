"""ORU^R01 v2.5.1 for a radiology report (STANDARDS.md §2; IHE RAD-128 "Send Imaging Result").

A pure function from a frozen snapshot to ER7 text: no ORM, no clock, no I/O, so the reports app
builds the snapshot inside its signing transaction and the outbox stores the exact text it sends.

    MSH  ORU^R01^ORU_R01, v2.5.1, original acknowledgement mode (IHE RAD), MSH-18 UNICODE UTF-8
    PID  PID-3 MRN^^^authority^MR, PID-5 name, PID-7 birth date, PID-8 sex
    PV1  only when a visit number is known (PV1-19)
    ORC  RE (observations to follow), ORC-2/3 placer/filler echoed, ORC-5 CM, ORC-12 ordering provider
    OBR  OBR-2/3 placer/filler, OBR-4 procedure, OBR-7 exam time, OBR-16 ordering provider,
         OBR-18 accession (IHE placer field 1), OBR-22 result time, OBR-24 RAD, OBR-25 P/F/C,
         OBR-32 signing radiologist (NDL: NPI&family&given&&&prefix&degree&&NPI)
    OBX  one TX row per line of text; OBX-3 the section's LOINC code, OBX-4 the section number,
         OBX-8 AA on every row of a critical result, OBX-11 the same P/F/C as OBR-25
    NTE  where the facility asks (``Facility.oru_addenda_as_nte``), the addenda after the report's
         OBX rows (its OBSERVATION group): one NTE per line, NTE-2 L (filler), NTE-4 RE (remark);
         otherwise an addendum is an OBX section (LOINC 55107-7) like the others
    OBX  where the facility asks (``Facility.ai_verdict_in_oru``), one CWE row per AI finding: OBX-3
         the finding's code, OBX-4 AI<n>, OBX-5 the reader's verdict (table 99RRAIV), OBX-18 the
         algorithm (docs/ai.md)

Details and examples: docs/delivery.md."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

VERSION = "2.5.1"
CHARSET = "UNICODE UTF-8"  # MSH-18, table 0211
MESSAGE_TYPE = "ORU^R01^ORU_R01"
SENDING_APPLICATION = "READROOM"
SENDING_FACILITY = "READROOM"
FIELD, COMPONENT, REPETITION, ESCAPE, SUBCOMPONENT = "|", "^", "~", "\\", "&"
ENCODING_CHARACTERS = COMPONENT + REPETITION + ESCAPE + SUBCOMPONENT
SEGMENT_END = "\r"
CONTROL_ID_MAX = 20  # MSH-10 is ST(20) in v2.5.1


class ResultStatus(StrEnum):
    """OBR-25 (table 0123) and OBX-11 (table 0085) share these three codes for a report."""

    PRELIMINARY = "P"  # a wet read that a final read must follow
    FINAL = "F"  # signed
    CORRECTED = "C"  # re-sent after an addendum, under the same placer/filler/accession


@dataclass(frozen=True)
class Section:
    """OBX-3 for one report section: a LOINC code (coding system LN) and its display name."""

    code: str
    name: str


# LOINC codes of the sections of a diagnostic imaging report (the DI-RAD / RSNA report sections, the
# same codes FHIR and CDA imaging reports use). A title that matches none is sent as findings with
# its own title as OBX-3.2, so nothing is dropped and the receiver still shows the heading.
FINDINGS = Section("18782-3", "Radiology Study observation (narrative)")
IMPRESSION = Section("19005-8", "Radiology Imaging study [Impression] (narrative)")
SECTIONS_BY_KEYWORD: tuple[tuple[str, Section], ...] = (
    ("addend", Section("55107-7", "Addendum")),
    ("impression", IMPRESSION),
    ("conclusion", IMPRESSION),
    ("finding", FINDINGS),
    ("comparison", Section("18834-2", "Radiology Comparison study (narrative)")),
    ("technique", Section("55111-9", "Current imaging procedure descriptions")),
    ("procedure", Section("55111-9", "Current imaging procedure descriptions")),
    ("history", Section("55752-0", "Clinical information")),
    ("indication", Section("55752-0", "Clinical information")),
    ("clinical", Section("55752-0", "Clinical information")),
    ("recommend", Section("18783-1", "Radiology Study recommendation (narrative)")),
)


@dataclass(frozen=True)
class Provider:
    """A person as XCN (OBR-16) or CNN inside NDL (OBR-32)."""

    id: str  # NPI for our radiologists; the sender's own id for an ordering provider
    family_name: str
    given_name: str = ""
    middle_name: str = ""
    suffix: str = ""  # e.g. "JR"
    prefix: str = ""  # e.g. "Dr"
    degree: str = ""  # e.g. "MD"
    id_authority: str = ""  # assigning authority of ``id``, e.g. "NPI"


@dataclass(frozen=True)
class PatientIdentity:
    mrn: str
    assigning_authority: str
    family_name: str
    given_name: str = ""
    middle_name: str = ""
    birth_date: date | None = None
    sex: str = "U"  # table 0001


@dataclass(frozen=True)
class OrderReference:
    """What the EMR needs to match the result to its order: echoed exactly as it sent them."""

    placer_number: str  # ORC-2 / OBR-2
    filler_number: str  # ORC-3 / OBR-3
    accession_number: str  # OBR-18
    procedure_code: str  # OBR-4.1
    procedure_text: str = ""  # OBR-4.2
    procedure_coding_system: str = ""  # OBR-4.3, e.g. C4 (CPT-4)
    ordering_provider: Provider | None = None  # ORC-12 / OBR-16
    placer_namespace: str = ""  # ORC-2.2 as the EMR sent it (EI: number^namespace)
    filler_namespace: str = ""  # ORC-3.2


# The reader's verdict on an AI finding, OBX-5 of its CWE row: a local table (no HL7/LOINC table has
# agree / disagree / not assessable for a reader's judgement of a machine's finding).
AI_VERDICT_TABLE = "99RRAIV"
AI_VERDICT_CODES = {
    "agree": ("AGREE", "Reader agrees with the AI finding"),
    "disagree": ("DISAGREE", "Reader disagrees with the AI finding"),
    "not_assessable": ("NA", "Reader could not assess the AI finding"),
}


@dataclass(frozen=True)
class AiVerdictLine:
    """One AI finding and the reader's verdict on it, sent only where the facility asks."""

    finding_code: str
    finding_scheme: str  # SCT, RADLEX, …
    finding_meaning: str
    present: bool  # what the AI said
    verdict: str  # a key of AI_VERDICT_CODES
    algorithm: str  # manufacturer model version


@dataclass(frozen=True)
class AddendumNote:
    """One signed addendum, sent as NTE comments where the facility asks (``oru_addenda_as_nte``)."""

    sequence: int  # 1, 2, … in signing order
    text: str
    author: str  # display name of the signer, e.g. "Nadia Neuro MD"
    signed_at: datetime


# NTE-2 (table 0105): the comment comes from the filler, the reading service. NTE-4 (table 0364,
# CWE): a remark, the closest code for an addendum to a result.
NTE_SOURCE_FILLER = "L"
NTE_TYPE_REMARK = ("RE", "Remark", "HL70364")


@dataclass(frozen=True)
class ReportMessage:
    """Everything one ORU^R01 says. Times must be timezone-aware; they are written in ``timezone``
    (the facility's zone) with their UTC offset."""

    control_id: str  # MSH-10; unique per facility (see ``control_id_new``)
    sent_at: datetime  # MSH-7
    receiving_application: str  # MSH-5: the facility's EMR / interface engine
    receiving_facility: str  # MSH-6
    patient: PatientIdentity
    order: OrderReference
    status: ResultStatus
    observed_at: datetime | None  # OBR-7: exam time
    resulted_at: datetime  # OBR-22: when this status was reached (signature time)
    interpreter: Provider  # OBR-32: the signing (or preliminary) radiologist
    sections: tuple[tuple[str, str], ...]  # (title, text) in report order
    critical: bool = False
    visit_number: str = ""  # PV1-19; PV1 is sent only when known
    patient_class: str = ""  # PV1-2, table 0004 (E, I, O…); "U" when unknown
    timezone: str = "UTC"
    sending_application: str = SENDING_APPLICATION  # MSH-3
    sending_facility: str = SENDING_FACILITY  # MSH-4
    processing_id: str = "P"  # MSH-11: P production, T training, D debugging
    ai_verdicts: tuple[AiVerdictLine, ...] = ()  # empty unless the facility sends verdicts
    addenda: tuple[AddendumNote, ...] = ()  # as NTE after the report's OBX rows; empty unless asked


def control_id_new() -> str:
    """A fresh MSH-10: 20 characters, unique without coordination between workers."""
    return ("RR" + uuid.uuid4().hex.upper())[:CONTROL_ID_MAX]


def oru_build(report: ReportMessage) -> str:
    """ER7 text of the ORU^R01, segments ending in CR (MLLP framing is the client's job)."""
    zone = ZoneInfo(report.timezone)
    segments = [_msh(report, zone), _pid(report)]
    if report.visit_number:
        segments.append(_pv1(report))
    segments += [_orc(report), _obr(report, zone), *_obx_text_rows(report, zone)]
    # The NTEs follow the report's last text OBX, so they belong to its OBSERVATION group (a note on
    # the report), not to an AI verdict's row; with no text row they are the OBR's notes.
    segments += [*_nte_rows(report, zone), *_obx_ai_rows(report, zone)]
    return SEGMENT_END.join(segments) + SEGMENT_END


def section_for(title: str) -> Section:
    lowered = title.lower()
    for keyword, section in SECTIONS_BY_KEYWORD:
        if keyword in lowered:
            return section
    return Section(FINDINGS.code, title.strip() or FINDINGS.name)


# --- escaping ------------------------------------------------------------------------------------

# C0 controls other than TAB would corrupt the stream: 0x0B and 0x1C are MLLP's frame bytes and CR
# ends a segment. Line breaks are handled before escaping (one OBX per line); the rest become spaces.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def escape(value: str) -> str:
    """HL7 v2.5.1 §2.7.4 escape sequences for text inside a field: the escape character first, then
    each delimiter (| → \\F\\, ^ → \\S\\, & → \\T\\, ~ → \\R\\, \\ → \\E\\)."""
    out = value.replace(ESCAPE, f"{ESCAPE}E{ESCAPE}")
    for char, code in ((FIELD, "F"), (COMPONENT, "S"), (SUBCOMPONENT, "T"), (REPETITION, "R")):
        out = out.replace(char, f"{ESCAPE}{code}{ESCAPE}")
    return _CONTROLS.sub(" ", out.replace("\r", " ").replace("\n", " "))


def text_lines(text: str) -> list[str]:
    """A section's text as lines: CRLF/CR/LF all break, trailing spaces and blank lines at either end
    are dropped, blank lines inside (paragraphs) are kept."""
    lines = [line.rstrip() for line in re.split(r"\r\n|\r|\n", text)]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


# --- segments ------------------------------------------------------------------------------------


def _segment(name: str, *fields: str) -> str:
    return FIELD.join([name, *fields]).rstrip(FIELD)


def _components(*values: str, separator: str = COMPONENT) -> str:
    return separator.join(escape(v) for v in values).rstrip(separator)


def _ts(value: datetime | None, zone: ZoneInfo) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        raise ValueError("ORU times must be timezone-aware")
    return value.astimezone(zone).strftime("%Y%m%d%H%M%S%z")


def _msh(r: ReportMessage, zone: ZoneInfo) -> str:
    # MSH-1 is the field separator itself, so MSH-2 is the first joined value.
    return _segment(
        "MSH",
        ENCODING_CHARACTERS,
        escape(r.sending_application),
        escape(r.sending_facility),
        escape(r.receiving_application),
        escape(r.receiving_facility),
        _ts(r.sent_at, zone),
        "",
        MESSAGE_TYPE,
        escape(r.control_id),
        r.processing_id,
        VERSION,
        "",
        "",
        "",  # MSH-15/16 empty: original acknowledgement mode, as IHE RAD asks
        "",
        "",
        CHARSET,
    )


def _pid(r: ReportMessage) -> str:
    p = r.patient
    return _segment(
        "PID",
        "1",
        "",
        _components(p.mrn, "", "", p.assigning_authority, "MR"),
        "",
        _components(p.family_name, p.given_name, p.middle_name),
        "",
        p.birth_date.strftime("%Y%m%d") if p.birth_date else "",
        escape(p.sex or "U"),
    )


def _pv1(r: ReportMessage) -> str:
    fields = [""] * 19
    fields[0], fields[1], fields[18] = "1", escape(r.patient_class or "U"), escape(r.visit_number)
    return _segment("PV1", *fields)


def _xcn(provider: Provider | None) -> str:
    if provider is None:
        return ""
    return _components(
        provider.id,
        provider.family_name,
        provider.given_name,
        provider.middle_name,
        provider.suffix,
        provider.prefix,
        provider.degree,
        "",
        provider.id_authority,
    )


def _order_numbers(o: OrderReference) -> tuple[str, str]:
    """ORC-2/3 and OBR-2/3 as EI with the namespace the EMR sent (``PL-1^RIS_ACME``): an EMR
    matches its order by number *and* namespace."""
    return (
        _components(o.placer_number, o.placer_namespace) if o.placer_number else "",
        _components(o.filler_number, o.filler_namespace) if o.filler_number else "",
    )


def _orc(r: ReportMessage) -> str:
    fields = [""] * 12
    fields[0] = "RE"  # table 0119: observations to follow
    fields[1], fields[2] = _order_numbers(r.order)
    fields[4] = "CM"  # table 0038: order completed
    fields[11] = _xcn(r.order.ordering_provider)
    return _segment("ORC", *fields)


def _obr(r: ReportMessage, zone: ZoneInfo) -> str:
    o, signer = r.order, r.interpreter
    fields = [""] * 32
    fields[0] = "1"
    fields[1], fields[2] = _order_numbers(o)
    fields[3] = _components(o.procedure_code, o.procedure_text, o.procedure_coding_system)
    fields[6] = _ts(r.observed_at, zone)  # OBR-7
    fields[15] = _xcn(o.ordering_provider)  # OBR-16
    fields[17] = escape(o.accession_number)  # OBR-18: IHE placer field 1 = accession
    fields[21] = _ts(r.resulted_at, zone)  # OBR-22
    fields[23] = "RAD"  # OBR-24, table 0074
    fields[24] = r.status.value  # OBR-25
    # OBR-32 NDL; its first component is a CNN whose parts are subcomponents (&).
    fields[31] = _components(
        signer.id,
        signer.family_name,
        signer.given_name,
        "",
        "",
        signer.prefix,
        signer.degree,
        "",
        signer.id_authority,
        separator=SUBCOMPONENT,
    )
    return _segment("OBR", *fields)


def _section_lines(r: ReportMessage) -> Iterator[tuple[Section, str, str]]:
    for number, (title, text) in enumerate(r.sections, start=1):
        section = section_for(title)
        lines = [f"{title.strip().upper()}:", *text_lines(text)] if title.strip() else text_lines(text)
        for line in lines:
            yield section, str(number), line


def _obx_text_rows(r: ReportMessage, zone: ZoneInfo) -> Iterator[str]:
    for set_id, (section, sub_id, line) in enumerate(_section_lines(r), start=1):
        yield _obx(r, zone, set_id, section, sub_id, line)


def _obx_ai_rows(r: ReportMessage, zone: ZoneInfo) -> Iterator[str]:
    # OBX-1 keeps counting after the text rows: one message, one sequence of observations
    first = sum(1 for _ in _section_lines(r)) + 1
    for number, verdict in enumerate(r.ai_verdicts, start=1):
        yield _obx_ai_verdict(r, zone, first + number - 1, number, verdict)


def _nte_rows(r: ReportMessage, zone: ZoneInfo) -> Iterator[str]:
    """One NTE per line: a heading naming the addendum, its signer and time, then its text."""
    set_id = 0
    for note in r.addenda:
        signed = note.signed_at.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
        for line in [f"ADDENDUM {note.sequence} ({note.author}, {signed}):", *text_lines(note.text)]:
            set_id += 1
            yield _segment("NTE", str(set_id), NTE_SOURCE_FILLER, escape(line), _components(*NTE_TYPE_REMARK))


def _obx_ai_verdict(r: ReportMessage, zone: ZoneInfo, set_id: int, number: int, v: AiVerdictLine) -> str:
    code, text = AI_VERDICT_CODES[v.verdict]
    fields = [""] * 18
    fields[0] = str(set_id)
    fields[1] = "CWE"
    meaning = f"{v.finding_meaning} {'positive' if v.present else 'negative'} (AI)"
    fields[2] = _components(escape(v.finding_code), escape(meaning), escape(v.finding_scheme))
    fields[3] = f"AI{number}"
    fields[4] = _components(code, text, AI_VERDICT_TABLE)
    fields[10] = r.status.value
    fields[13] = _ts(r.resulted_at, zone)
    fields[17] = escape(v.algorithm)  # OBX-18 equipment instance identifier: the algorithm
    return _segment("OBX", *fields)


def _obx(r: ReportMessage, zone: ZoneInfo, set_id: int, section: Section, sub_id: str, line: str) -> str:
    fields = [""] * 14
    fields[0] = str(set_id)
    fields[1] = "TX"
    fields[2] = _components(section.code, section.name, "LN")
    fields[3] = sub_id  # OBX-4: the rows of one section share it, so a receiver can regroup them
    fields[4] = escape(line)
    fields[7] = "AA" if r.critical else ""  # OBX-8, table 0078: critically abnormal
    fields[10] = r.status.value  # OBX-11
    fields[13] = _ts(r.resulted_at, zone)  # OBX-14
    return _segment("OBX", *fields)
