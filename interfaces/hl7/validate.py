"""Validate before the ACK what the message itself shows (issue #15): control characters, and values
longer than the database or the standard allows. A message that fails is answered AE with ERR-3
(table 0357, 102 data type error) and the location, and kept raw as rejected — never ACKed AA and
then left to fail while applying, and never cut short (an over-long accession is an error, not a
shorter id that would match the wrong study).

The limits come from the models the facts are written to, so they cannot drift from the columns;
the accession (DICOM SH, 16) and the Study Instance UID (DICOM UI, 64) are the standard's."""

from __future__ import annotations

import re
from collections.abc import Iterator

from imaging.facts import OrderMessage, PatientFacts, PatientIdentifier
from imaging.models import Order, Patient
from interfaces.hl7.parse import DATA_TYPE_ERROR, Header, Hl7Error, ParsedMessage

# C0 controls and DEL. CR separates segments and LF was normalised to CR before this; TAB is
# allowed in text fields by many senders but not in any field we store, so it counts too.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
DICOM_SH, DICOM_UI = 16, 64


def message_check(text: str, header: Header, parsed: ParsedMessage) -> Hl7Error | None:
    """The first problem found, or None."""
    return _control_characters(text, header) or _lengths(parsed)


def _control_characters(text: str, header: Header) -> Hl7Error | None:
    fs = header.field_separator
    seen: dict[str, int] = {}
    for segment in text.split("\r"):
        if not segment:
            continue
        name = segment[:3]
        seen[name] = seen.get(name, 0) + 1
        if not CONTROL.search(segment):
            continue
        fields = segment.split(fs)
        for position, value in enumerate(fields):
            found = CONTROL.search(value)
            if found is None:
                continue
            # MSH-1 is the separator itself: MSH's field numbers are one more than the split's index
            field = position + 1 if name == "MSH" else position
            return Hl7Error(
                "AE",
                DATA_TYPE_ERROR,
                f"control character 0x{ord(found.group()):02X} in {name}-{field}",
                f"{name}^{seen[name]}^{field}",
            )
    return None


# (fact attribute, model field or fixed limit, location "SEG^field") per kind of fact
_PATIENT = (
    ("family_name", Patient._meta.get_field("family_name").max_length, "PID^5"),
    ("given_name", Patient._meta.get_field("given_name").max_length, "PID^5"),
    ("middle_name", Patient._meta.get_field("middle_name").max_length, "PID^5"),
)
_IDENTIFIER = (
    ("mrn", Patient._meta.get_field("mrn").max_length),
    ("assigning_authority", Patient._meta.get_field("assigning_authority").max_length),
)
_ORDER = (
    ("accession_number", DICOM_SH, "OBR^18"),
    ("placer_order_number", Order._meta.get_field("placer_order_number").max_length, "ORC^2"),
    ("filler_order_number", Order._meta.get_field("filler_order_number").max_length, "ORC^3"),
    ("study_instance_uid", DICOM_UI, "ZDS^1"),
    ("procedure_code", Order._meta.get_field("procedure_code").max_length, "OBR^4"),
    ("procedure_text", Order._meta.get_field("procedure_text").max_length, "OBR^4"),
    ("procedure_coding_system", Order._meta.get_field("procedure_coding_system").max_length, "OBR^4"),
    ("ordering_provider_id", Order._meta.get_field("ordering_provider_id").max_length, "ORC^12"),
    ("ordering_provider_name", Order._meta.get_field("ordering_provider_name").max_length, "ORC^12"),
)


def _lengths(parsed: ParsedMessage) -> Hl7Error | None:
    for value, limit, location, what in _values(parsed):
        if isinstance(value, str) and len(value) > limit:  # None / CLEAR: nothing sent to store
            segment, field = location.split("^")[0], location.split("^")[-1]
            return Hl7Error(
                "AE",
                DATA_TYPE_ERROR,
                f"{segment}-{field} {what} is {len(value)} characters, more than the {limit} allowed",
                location,
            )
    return None


def _values(parsed: ParsedMessage) -> Iterator[tuple[str, int, str, str]]:
    content = parsed.content
    patients: list[PatientFacts] = [content.patient] if hasattr(content, "patient") else []
    if hasattr(content, "surviving"):
        patients.append(content.surviving)
        yield from _identifier_values(content.prior, "MRG^1^1")
    for patient in patients:
        for attribute, limit, location in _PATIENT:
            segment, field = location.split("^")
            yield getattr(patient, attribute), limit, f"{segment}^1^{field}", attribute.replace("_", " ")
        yield from _identifier_values((patient.identifier, *patient.other_identifiers), "PID^1^3")
    if isinstance(content, OrderMessage):
        for seq, order in enumerate(content.orders, start=1):
            for attribute, limit, location in _ORDER:
                segment, field = location.split("^")
                where = f"{segment}^{seq}^{field}"
                if attribute == "accession_number":
                    where = f"OBR^{seq}^18"
                yield getattr(order, attribute), limit, where, attribute.replace("_", " ")


def _identifier_values(identifiers: tuple[PatientIdentifier, ...], location: str) -> Iterator:
    for identifier in identifiers:
        for attribute, limit in _IDENTIFIER:
            yield getattr(identifier, attribute), limit, location, attribute.replace("_", " ")


def fallback_accession_check(accession: str, source: str, seq: int) -> Hl7Error | None:
    """The facility's fallback accession (filler or placer number, up to 64) must fit DICOM SH too."""
    if len(accession) <= DICOM_SH:
        return None
    field = 3 if source == "filler" else 2
    return Hl7Error(
        "AE",
        DATA_TYPE_ERROR,
        f"accession from ORC-{field} ({source} order number) is {len(accession)} characters, "
        f"more than the {DICOM_SH} allowed",
        f"ORC^{seq}^{field}",
    )
