"""HL7 v2 parsing for orders and ADT, as pure functions (STANDARDS.md §1).

python-hl7 does the tokenising (separators from MSH-1/MSH-2, escape sequences); this module checks
what it does not — both libraries parse a truncated MSH or wrong separators "successfully" — and
turns ORC/OBR groups, PID, MRG and IPC into ``imaging.facts``. Errors carry the ACK to send and an
HL7 table 0357 code with the location, so the listener can answer precisely."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import hl7
from hl7.containers import Message, Segment

from imaging.facts import (
    CLEAR,
    AiResultFacts,
    DemographicsUpdate,
    HistoricalReportFacts,
    OrderFacts,
    OrderMessage,
    PatientFacts,
    PatientIdentifier,
    PatientMerge,
    Sent,
)

# HL7 table 0357 message error condition codes
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
SEGMENT_SEQUENCE_ERROR = "100"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT_CODE = "201"
UNSUPPORTED_PROCESSING_ID = "202"
UNSUPPORTED_VERSION_ID = "203"
UNKNOWN_KEY_IDENTIFIER = "204"
APPLICATION_INTERNAL_ERROR = "207"

SUPPORTED = {
    ("ORM", "O01"): "order",
    ("OMI", "O23"): "order",
    ("ADT", "A08"): "demographics",
    ("ADT", "A31"): "demographics",  # update person information: same handling as A08
    ("ADT", "A40"): "merge",
    # from a sender onboarded as an AI node (docs/ai.md), or a facility's report history
    # (docs/priors.md): interfaces.hl7.inbound.oru_kind decides by the sender's configuration
    ("ORU", "R01"): "ai_result",
}
ORU_KINDS = ("ai_result", "report_history")
ORDER_CONTROLS = {"NW", "XO", "XX", "SC", "CA", "DC", "OC", "OD", "CR", "DR"}
SEX_CODES = {"F", "M", "O", "U", "A", "N"}

# MSH-18 (table 0211) → Python codec. Empty means 7-bit ASCII by the standard; real senders often
# mean Latin-1 or UTF-8, so an empty MSH-18 is read as UTF-8 and falls back to Latin-1.
CHARSETS = {
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/5": "iso8859-5",
    "8859/7": "iso8859-7",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "UTF-8": "utf-8",
    "ISO IR6": "ascii",
    "ISO IR100": "latin-1",
    "ISO IR192": "utf-8",
    "WINDOWS-1252": "cp1252",
}


class Hl7Error(Exception):
    """A message we must not accept: ``ack`` is AR (rejected: cannot even be read or not ours) or
    AE (read but wrong); ``code`` is from table 0357; ``location`` is "SEG^seq^field"."""

    def __init__(self, ack: str, code: str, text: str, location: str = ""):
        super().__init__(text)
        self.ack, self.code, self.text, self.location = ack, code, text, location


@dataclass(frozen=True)
class Header:
    field_separator: str
    encoding_characters: str
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    sent_at: datetime | None
    message_code: str  # MSH-9.1
    trigger_event: str  # MSH-9.2
    control_id: str  # MSH-10
    processing_id: str  # MSH-11.1
    version: str  # MSH-12.1
    accept_ack_type: str  # MSH-15
    application_ack_type: str  # MSH-16
    charset: str  # MSH-18 as sent

    @property
    def message_type(self) -> str:
        return f"{self.message_code}^{self.trigger_event}"

    @property
    def enhanced_mode(self) -> bool:
        """Original mode when MSH-15 and MSH-16 are both empty; otherwise enhanced (STANDARDS.md §1)."""
        return bool(self.accept_ack_type or self.application_ack_type)


@dataclass(frozen=True)
class ParsedMessage:
    header: Header
    kind: str  # order | demographics | merge | ai_result | report_history
    content: OrderMessage | DemographicsUpdate | PatientMerge | AiResultFacts | HistoricalReportFacts


def normalize(raw: bytes) -> bytes:
    """Segments end with CR; senders also use LF or CRLF, which break both HL7 libraries."""
    return raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").strip(b"\r\x00 ") + b"\r"


def decode(raw: bytes) -> str:
    charset = _declared_charset(raw)
    codec = CHARSETS.get(charset.upper(), "")
    if codec:
        try:
            return raw.decode(codec)
        except UnicodeDecodeError as exc:
            raise Hl7Error("AE", DATA_TYPE_ERROR, f"message is not valid {charset}", "MSH^1^18") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def encode(text: str) -> bytes:
    """The bytes of a message we send, in the character set its own MSH-18 declares (table 0211):
    UTF-8 for our ORU (UNICODE UTF-8), the inbound order's for its application ACK (8859/1 for a
    Latin-1 RIS); UTF-8 when none or an unknown one is named. A character the set lacks becomes
    "?" — the receiver reads the declared set, so mixed bytes would garble every accented name."""
    codec = CHARSETS.get(_declared_charset(text.encode("utf-8")).upper(), "utf-8")
    return text.encode(codec, errors="replace")


def _declared_charset(raw: bytes) -> str:
    """MSH-18 read from the bytes before decoding (the MSH segment itself is ASCII)."""
    if not raw.startswith(b"MSH") or len(raw) < 8:
        return ""
    sep = raw[3:4]
    msh = raw.split(b"\r", 1)[0]
    fields = msh.split(sep)
    # fields[0] = "MSH", fields[1] = encoding characters = MSH-2, so MSH-n = fields[n-1]
    value = fields[17] if len(fields) > 17 else b""
    return value.split(raw[4:5] or b"^")[0].decode("ascii", "replace").strip()


def read_header(text: str) -> Header:
    if not text.startswith("MSH"):
        raise Hl7Error("AR", SEGMENT_SEQUENCE_ERROR, "the message does not start with an MSH segment", "MSH")
    field_sep = text[3:4]
    encoding = text[4:8]
    if not field_sep or field_sep.isalnum() or field_sep in "\r\n ":
        raise Hl7Error("AR", DATA_TYPE_ERROR, "MSH-1 field separator is missing or invalid", "MSH^1^1")
    if (
        len(encoding) != 4
        or len(set(encoding)) != 4
        or field_sep in encoding
        or any(c.isalnum() for c in encoding)
    ):
        raise Hl7Error("AR", DATA_TYPE_ERROR, "MSH-2 encoding characters are invalid", "MSH^1^2")
    msh = text.split("\r", 1)[0].split(field_sep)
    # msh[0]="MSH", msh[1]=MSH-2 … msh[n-1]=MSH-n
    if len(msh) < 12:
        raise Hl7Error(
            "AR", REQUIRED_FIELD_MISSING, "MSH is truncated: MSH-9 to MSH-12 are required", "MSH^1^12"
        )
    component = encoding[0]

    def msh_field(n: int, comp: int = 1) -> str:
        value = msh[n - 1] if len(msh) >= n else ""
        parts = value.split(encoding[1])[0].split(component)  # first repetition
        return parts[comp - 1].strip() if len(parts) >= comp else ""

    header = Header(
        field_separator=field_sep,
        encoding_characters=encoding,
        sending_application=msh_field(3),
        sending_facility=msh_field(4),
        receiving_application=msh_field(5),
        receiving_facility=msh_field(6),
        sent_at=_optional_ts(msh_field(7), "MSH^1^7"),
        message_code=msh_field(9, 1).upper(),
        trigger_event=msh_field(9, 2).upper(),
        control_id=msh[9].strip() if len(msh) > 9 else "",
        processing_id=msh_field(11).upper(),
        version=msh_field(12),
        accept_ack_type=msh_field(15).upper(),
        application_ack_type=msh_field(16).upper(),
        charset=msh_field(18),
    )
    for value, location, name in (
        (header.message_code, "MSH^1^9", "MSH-9 message type"),
        (header.control_id, "MSH^1^10", "MSH-10 message control ID"),
        (header.processing_id, "MSH^1^11", "MSH-11 processing ID"),
        (header.version, "MSH^1^12", "MSH-12 version ID"),
    ):
        if not value:
            raise Hl7Error("AR", REQUIRED_FIELD_MISSING, f"{name} is required", location)
    return header


def check_header(header: Header) -> str:
    """The message kind we handle, or an AR per HL7 v2 §2.13: unsupported type, event, processing
    ID or version are rejected before the content is looked at."""
    if header.processing_id != "P":
        raise Hl7Error(
            "AR", UNSUPPORTED_PROCESSING_ID, f"processing ID {header.processing_id!r}: only P", "MSH^1^11"
        )
    if not _version_supported(header.version):
        raise Hl7Error(
            "AR", UNSUPPORTED_VERSION_ID, f"HL7 version {header.version!r}: 2.3 to 2.8", "MSH^1^12"
        )
    if header.message_code not in {code for code, _ in SUPPORTED}:
        raise Hl7Error(
            "AR", UNSUPPORTED_MESSAGE_TYPE, f"message type {header.message_code} is not accepted", "MSH^1^9"
        )
    kind = SUPPORTED.get((header.message_code, header.trigger_event))
    if kind is None:
        raise Hl7Error(
            "AR", UNSUPPORTED_EVENT_CODE, f"event {header.message_type} is not accepted", "MSH^1^9^2"
        )
    return kind


def _version_supported(version: str) -> bool:
    match = re.fullmatch(r"2\.(\d)(\.\d+)?", version)
    return bool(match) and 3 <= int(match.group(1)) <= 8


def parse(raw: bytes, *, oru_kind: str = "ai_result") -> ParsedMessage:
    """Bytes inside an MLLP frame → a checked message. Raises Hl7Error. ``oru_kind``: what an
    ORU^R01 is from this sender (``ORU_KINDS``), which only the sender's configuration says."""
    text = decode(normalize(raw))
    return parse_text(text, read_header(text), oru_kind=oru_kind)


def parse_text(text: str, header: Header, *, oru_kind: str = "ai_result") -> ParsedMessage:
    """The content of a message whose header was already read (the listener reads it first)."""
    kind = check_header(header)
    if kind == "ai_result":
        kind = oru_kind
    return content_read(kind, header, split_message(text, header) or hl7_message(text))


def content_read(kind: str, header: Header, message: AnyMessage) -> ParsedMessage:
    if kind == "ai_result":
        from interfaces.hl7.ai_oru import ai_oru_read  # reads with this module's helpers

        return ParsedMessage(header=header, kind=kind, content=ai_oru_read(message, header))
    if kind == "report_history":
        from interfaces.hl7.history_oru import history_oru_read

        return ParsedMessage(header=header, kind=kind, content=history_oru_read(message, header))
    reader = {"order": _order_message, "demographics": _demographics, "merge": _merge}[kind]
    return ParsedMessage(header=header, kind=kind, content=reader(message, header))


def hl7_message(text: str) -> Message:
    try:
        return hl7.parse(text)
    except Exception as exc:  # python-hl7 rejects few things; anything it does is unreadable
        raise Hl7Error("AR", SEGMENT_SEQUENCE_ERROR, f"cannot be parsed: {exc}", "") from exc


class SplitSegment(list):
    """A segment as its fields (``[0]`` is the segment ID), split lazily below the field level.

    The listener reads every frame's content before it ACKs (an AE must name the missing field),
    and python-hl7's full tree costs ~0.5 ms a message — half the budget at 1,000 messages/s.
    ``get`` on these follows python-hl7's ``extract_field`` rules exactly (first child when the
    tree is deeper than the path, "" when it is shallower); ``split_message`` hands over only
    messages where the two cannot differ (tests/interfaces/test_hl7_parse.py compares them)."""

    __slots__ = ("component", "repetition", "subcomponent")


AnySegment = Segment | SplitSegment
AnyMessage = Message | list[SplitSegment]


def split_message(text: str, header: Header) -> list[SplitSegment] | None:
    """The segments split on the MSH-declared separators, or None when the message needs
    python-hl7: an escape sequence outside MSH (it must be unescaped), or a second header segment
    (python-hl7 splits those specially)."""
    segments = text.strip().split("\r")  # python-hl7 strips the message the same way
    body = "\r".join(segments[1:])
    component, repetition, escape, subcomponent = header.encoding_characters
    if escape in body or any(s.startswith(("MSH", "BHS", "FHS")) for s in segments[1:]):
        return None
    message = []
    for text_segment in segments:
        segment = SplitSegment(text_segment.split(header.field_separator))
        segment.repetition, segment.component, segment.subcomponent = repetition, component, subcomponent
        message.append(segment)
    return message


# --- field access --------------------------------------------------------------------------------


def get(segment: AnySegment, field_num: int, rep: int = 1, comp: int = 1, sub: int = 1) -> str:
    """A leaf value, unescaped; "" when absent (python-hl7 raises on some absent paths)."""
    if isinstance(segment, SplitSegment):
        return _split_get(segment, field_num, rep, comp, sub)
    try:
        return str(segment.extract_field(1, field_num, rep, comp, sub)).strip()
    except (IndexError, KeyError, TypeError):
        return ""


def _split_get(segment: SplitSegment, field_num: int, rep: int, comp: int, sub: int) -> str:
    if field_num >= len(segment):
        return ""
    value = segment[field_num]
    rs, cs, ss = segment.repetition, segment.component, segment.subcomponent
    if rs not in value and cs not in value and ss not in value:
        # no separator below the field (most fields): what the splits below would give, without them
        return value.strip() if rep == comp == sub == 1 else ""
    for separator, index in (
        (rs, rep),
        (cs, comp),
        (ss, sub),
    ):
        parts = value.split(separator)
        if index > len(parts):
            return ""
        value = parts[index - 1]
    return value.strip()


def repetitions(segment: AnySegment, field_num: int) -> int:
    if field_num >= len(segment):
        return 0
    if isinstance(segment, SplitSegment):
        value = segment[field_num]
        structured = any(c in value for c in (segment.repetition, segment.component, segment.subcomponent))
        return len(value.split(segment.repetition)) if structured else (1 if value else 0)
    field = segment(field_num)
    return (
        len(field) if field and isinstance(field[0], hl7.containers.Repetition) else (1 if str(field) else 0)
    )


def raw_field(segment: AnySegment | None, field_num: int) -> str:
    """The whole field as sent (every repetition and component), "" when absent."""
    if segment is None or field_num >= len(segment):
        return ""
    return str(segment[field_num]).strip()


NULL = '""'  # HL7 v2's explicit null: "delete the stored value"


def field_present(segment: AnySegment | None, field_num: int) -> bool:
    """Valued at all: a field of only separators (``^^``) is as empty as an absent one."""
    value = raw_field(segment, field_num)
    return bool(value.translate(str.maketrans("", "", "^~&")).strip())


def sent(value: str) -> Sent[str]:
    """One value as the update rule reads it: "" → None (leave alone), ``""`` → CLEAR, else itself."""
    if value == NULL:
        return CLEAR
    return value or None


def sent_component(segment: AnySegment | None, field_num: int, comp: int, rep: int = 1) -> Sent[str]:
    """A component: ``""`` in the whole field clears every component of it."""
    if segment is None:
        return None
    if raw_field(segment, field_num) == NULL:
        return CLEAR
    return sent(get(segment, field_num, rep, comp))


def _component(segment: AnySegment | None, field_num: int, comp: int) -> str:
    """A component as text for ``first_sent``: ``""`` when the whole field is the null."""
    if segment is None:
        return ""
    return NULL if raw_field(segment, field_num) == NULL else get(segment, field_num, 1, comp)


def first_sent(*values: str) -> Sent[str]:
    """Several fields that carry the same fact (e.g. IPC-2, then OBR-19): the first value; when
    none has one, CLEAR if one of them was ``""``; else None (not sent)."""
    value = next((v for v in values if v and v != NULL), "")
    if value:
        return value
    return CLEAR if NULL in values else None


def _segments(message: AnyMessage, name: str) -> list[AnySegment]:
    return [segment for segment in message if str(segment[0]) == name]


def _loc(segment_name: str, field_num: int, seq: int = 1) -> str:
    return f"{segment_name}^{seq}^{field_num}"


# --- timestamps ----------------------------------------------------------------------------------

_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d{1,4})?([+-]\d{4})?$")


def parse_ts(value: str, location: str) -> datetime:
    """HL7 DTM/TS: YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]. Without an offset the result is
    naive — local time at the facility, localised by the service that knows the facility."""
    match = _TS.match(value.split("^")[0].strip())
    if not match:
        raise Hl7Error("AE", DATA_TYPE_ERROR, f"{value!r} is not an HL7 date/time", location)
    year, month, day, hour, minute, second, offset = match.groups()
    try:
        stamp = datetime(
            int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0)
        )
    except ValueError as exc:
        raise Hl7Error("AE", DATA_TYPE_ERROR, f"{value!r} is not a valid date/time", location) from exc
    if offset:
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
        stamp = stamp.replace(tzinfo=timezone(sign * delta))
    return stamp


def _optional_ts(value: str, location: str) -> datetime | None:
    return parse_ts(value, location) if value else None


def _optional_date(value: str, location: str) -> date | None:
    return parse_ts(value, location).date() if value else None


# --- patients ------------------------------------------------------------------------------------


def _identifiers(segment: AnySegment, field_num: int) -> list[PatientIdentifier]:
    found = []
    for rep in range(1, max(repetitions(segment, field_num), 1) + 1):
        mrn = get(segment, field_num, rep, 1)
        if mrn:
            found.append(
                (
                    get(segment, field_num, rep, 5).upper(),
                    PatientIdentifier(mrn, get(segment, field_num, rep, 4)),
                )
            )
    # The medical record number (CX-5 = MR) identifies the patient; else the first identifier.
    found.sort(key=lambda item: item[0] != "MR")
    return [identifier for _, identifier in found]


def _patient(message: AnyMessage) -> PatientFacts:
    pids = _segments(message, "PID")
    if not pids:
        raise Hl7Error("AE", REQUIRED_FIELD_MISSING, "PID segment is required", "PID")
    pid = pids[0]
    identifiers = _identifiers(pid, 3)
    if not identifiers:
        raise Hl7Error(
            "AE", REQUIRED_FIELD_MISSING, "PID-3 patient identifier (MRN) is required", _loc("PID", 3)
        )
    sex = sent(get(pid, 8).upper())
    if isinstance(sex, str):
        sex = sex[:1] if sex[:1] in SEX_CODES else "U"
    birth = sent(get(pid, 7))
    return PatientFacts(
        identifier=identifiers[0],
        other_identifiers=tuple(identifiers[1:]),
        family_name=sent_component(pid, 5, 1),
        given_name=sent_component(pid, 5, 2),
        middle_name=sent_component(pid, 5, 3),
        birth_date=_optional_date(birth, _loc("PID", 7)) if isinstance(birth, str) else birth,
        sex=sex,
    )


def _demographics(message: AnyMessage, header: Header) -> DemographicsUpdate:
    return DemographicsUpdate(patient=_patient(message))


def _merge(message: AnyMessage, header: Header) -> PatientMerge:
    prior: list[PatientIdentifier] = []
    for mrg in _segments(message, "MRG"):
        prior += _identifiers(mrg, 1)
    if not prior:
        raise Hl7Error(
            "AE", REQUIRED_FIELD_MISSING, "MRG-1 prior patient identifier is required", _loc("MRG", 1)
        )
    return PatientMerge(surviving=_patient(message), prior=tuple(prior))


# --- orders --------------------------------------------------------------------------------------


def _order_groups(message: AnyMessage) -> Iterator[list[AnySegment]]:
    """Segments from one ORC up to the next: one order per ORC/OBR group (Z-segments kept)."""
    group: list[AnySegment] = []
    for segment in message:
        if str(segment[0]) == "ORC":
            if group:
                yield group
            group = [segment]
        elif group:
            group.append(segment)
    if group:
        yield group


def _order_message(message: AnyMessage, header: Header) -> OrderMessage:
    patient = _patient(message)
    pv1s = _segments(message, "PV1")
    visit = _visit(pv1s[0] if pv1s else None)
    groups = list(_order_groups(message))
    if not groups:
        raise Hl7Error("AE", REQUIRED_FIELD_MISSING, "an ORC segment is required", "ORC")
    orders = tuple(_order(group, seq, visit, header) for seq, group in enumerate(groups, start=1))
    return OrderMessage(patient=patient, orders=orders, sent_at=header.sent_at)


def _visit(pv1: AnySegment | None) -> dict[str, Sent[str]]:
    """PV1-2 patient class, PV1-3 assigned location (kept as sent), PV1-19 visit number (CX)."""
    if pv1 is None:
        return {}
    patient_class = sent(get(pv1, 2).upper())
    return {
        "patient_class": patient_class,
        "patient_location": sent(raw_field(pv1, 3)[:200]),
        "visit_number": sent_component(pv1, 19, 1),
        "visit_number_authority": sent_component(pv1, 19, 4),
    }


def _first(group: list[AnySegment], name: str) -> AnySegment | None:
    return next((s for s in group if str(s[0]) == name), None)


def _order(group: list[AnySegment], seq: int, visit: dict, header: Header) -> OrderFacts:
    orc, obr = group[0], _first(group, "OBR")
    ipc, tq1, zds = _first(group, "IPC"), _first(group, "TQ1"), _first(group, "ZDS")
    control = get(orc, 1).upper()
    if not control:
        raise Hl7Error("AE", REQUIRED_FIELD_MISSING, "ORC-1 order control is required", _loc("ORC", 1, seq))
    if control not in ORDER_CONTROLS:
        raise Hl7Error(
            "AE",
            TABLE_VALUE_NOT_FOUND,
            f"ORC-1 order control {control!r} is not supported",
            _loc("ORC", 1, seq),
        )
    if obr is None and control not in {"CA", "DC", "OC", "OD", "CR", "DR"}:
        raise Hl7Error(
            "AE", REQUIRED_FIELD_MISSING, "OBR segment is required for a new or changed order", f"OBR^{seq}"
        )
    placer_field = orc if get(orc, 2) else obr
    filler_field = orc if get(orc, 3) else obr
    placer = get(placer_field, 2) if placer_field is not None else ""
    filler = get(filler_field, 3) if filler_field is not None else ""
    # Precedence (STANDARDS.md §1): IPC-1 → OBR-18; the facility's fallback (filler/placer
    # number) is applied by the service, which knows the facility.
    accession = (get(ipc, 1) if ipc else "") or (get(obr, 18) if obr else "")
    if accession == NULL:
        accession = ""
    if obr is not None and not get(obr, 4):
        raise Hl7Error(
            "AE", REQUIRED_FIELD_MISSING, "OBR-4 universal service ID is required", _loc("OBR", 4, seq)
        )
    if not (accession or placer or filler):
        raise Hl7Error(
            "AE",
            REQUIRED_FIELD_MISSING,
            "no accession number (IPC-1 / OBR-18) nor order number",
            _loc("OBR", 18, seq),
        )
    provider_segment, provider_field = (orc, 12) if field_present(orc, 12) else (obr, 16)
    provider = (
        raw_field(provider_segment, provider_field) if field_present(provider_segment, provider_field) else ""
    )
    provider_cleared = CLEAR if provider == NULL else None
    ordered_at = sent(get(orc, 9))
    return OrderFacts(
        control=control,
        # never cut short here: validate.py refuses what is longer than the columns (AE 102)
        accession_number=accession,
        placer_order_number=placer,
        filler_order_number=filler,
        placer_order_issuer=sent_component(placer_field, 2, 2) if placer else None,
        filler_order_issuer=sent_component(filler_field, 3, 2) if filler else None,
        accession_issuer=sent_component(ipc, 1, 2) if ipc else None,
        requested_procedure_id=first_sent(get(ipc, 2) if ipc else "", get(obr, 19) if obr else ""),
        scheduled_procedure_step_id=first_sent(get(ipc, 4) if ipc else "", get(obr, 20) if obr else ""),
        study_instance_uid=first_sent(get(ipc, 3) if ipc else "", get(zds, 1) if zds else ""),
        modality=first_sent(get(ipc, 5) if ipc else "", get(obr, 24) if obr else ""),
        procedure_code=sent_component(obr, 4, 1),
        procedure_text=sent_component(obr, 4, 2),
        procedure_coding_system=sent_component(obr, 4, 3),
        priority_code=_priority(orc, obr, tq1),
        reasons=_reasons(obr),
        clinical_information=sent(raw_field(obr, 13)) if obr is not None else None,
        # the XCN is one value: sent whole, it replaces the provider with every component
        ordering_provider_id=provider_cleared
        or (get(provider_segment, provider_field) if provider else None),
        ordering_provider_name=provider_cleared
        or (_person_name(provider_segment, provider_field) if provider else None),
        ordering_provider_xcn=provider_cleared
        or (_xcn_parts(provider_segment, provider_field) if provider else None),
        copies_to=_copies_to(obr),
        order_status=get(orc, 5).upper(),
        ordered_at=parse_ts(ordered_at, _loc("ORC", 9, seq)) if isinstance(ordered_at, str) else ordered_at,
        scheduled_at=_scheduled(orc, obr, tq1, seq),
        notes=_notes(group),
        **visit,
    )


def _reasons(obr: AnySegment | None) -> Sent[tuple[dict, ...]]:
    """OBR-31 reason for study, every repetition (CWE: code ^ text ^ coding system)."""
    if not field_present(obr, 31):
        return None
    if raw_field(obr, 31) == NULL:
        return CLEAR
    found = []
    for rep in range(1, repetitions(obr, 31) + 1):
        code, text, system = (_value(get(obr, 31, rep, c)) for c in (1, 2, 3))
        if code or text:
            found.append({"code": code[:64], "text": text[:500], "system": system[:32]})
    return tuple(found) or CLEAR  # valued, but only with nulls


def _copies_to(obr: AnySegment | None) -> Sent[tuple[dict, ...]]:
    """OBR-28 result copies to (XCN, repeating), each by component as sent."""
    if not field_present(obr, 28):
        return None
    if raw_field(obr, 28) == NULL:
        return CLEAR
    found = []
    for rep in range(1, repetitions(obr, 28) + 1):
        parts = dict(_xcn_parts(obr, 28, rep))
        if parts:
            found.append(parts)
    return tuple(found) or CLEAR  # valued, but only with nulls


def _notes(group: list[AnySegment]) -> Sent[tuple[str, ...]]:
    """NTE-3 of the order group's NTE segments (repetitions joined by line). No NTE leaves the stored
    notes alone; NTE segments replace them; an NTE whose comment is ``""`` clears them."""
    ntes = [s for s in group if str(s[0]) == "NTE"]
    if not ntes:
        return None
    texts = [raw_field(s, 3) for s in ntes]
    if all(t == NULL for t in texts):
        return CLEAR
    notes = tuple(
        "\n".join(get(s, 3, rep) for rep in range(1, repetitions(s, 3) + 1) if get(s, 3, rep))
        for s in ntes
        if raw_field(s, 3) not in ("", NULL)
    )
    return notes or None


def _priority(orc: AnySegment, obr: AnySegment | None, tq1: AnySegment | None) -> Sent[str]:
    """TQ1-9 → ORC-7.6 / OBR-27.6 → OBR-5 (STANDARDS.md §1)."""
    candidates = [_component(tq1, 9, 1), _component(orc, 7, 6)]
    if obr is not None:
        candidates += [_component(obr, 27, 6), _component(obr, 5, 1)]
    value = first_sent(*candidates)
    return value.upper() if isinstance(value, str) else value


def _scheduled(orc: AnySegment, obr: AnySegment | None, tq1: AnySegment | None, seq: int) -> Sent[datetime]:
    candidates = (
        (_component(tq1, 7, 1), _loc("TQ1", 7, seq)),
        (_component(orc, 7, 4), _loc("ORC", 7, seq)),
        (_component(obr, 27, 4), _loc("OBR", 27, seq)),
    )
    for value, location in candidates:
        if value and value != NULL:
            return parse_ts(value, location)
    return first_sent(*(value for value, _ in candidates))


# XCN components kept for the ORU's echo: ID, family name, given, middle, suffix, prefix, degree,
# (8: source table), assigning authority (its first subcomponent, e.g. NPI)
XCN_PARTS = (
    (1, "id"),
    (2, "family"),
    (3, "given"),
    (4, "middle"),
    (5, "suffix"),
    (6, "prefix"),
    (7, "degree"),
)


def _xcn_parts(segment: AnySegment | None, field_num: int, rep: int = 1) -> tuple[tuple[str, str], ...]:
    if segment is None:
        return ()
    parts = [(name, _value(get(segment, field_num, rep, c))) for c, name in XCN_PARTS]
    parts.append(("authority", _value(get(segment, field_num, rep, 9, 1))))
    return tuple((name, value[:64]) for name, value in parts if value)


def _value(component: str) -> str:
    """A component inside a value sent whole (an XCN): its ``""`` is simply empty."""
    return "" if component == NULL else component


def _person_name(segment: AnySegment | None, field_num: int) -> str:
    """XCN: ID^family^given^middle^suffix^prefix → "prefix given middle family suffix"."""
    if segment is None:
        return ""
    parts = [_value(get(segment, field_num, 1, c)) for c in (6, 3, 4, 2, 5)]
    return " ".join(p for p in parts if p)[:200]
