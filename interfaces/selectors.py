from __future__ import annotations

from facilities.models import Facility
from interfaces.simulator import SimulatedFacility


def simulated_facilities(*, code: str | None = None) -> list[SimulatedFacility]:
    """Active facilities that can be simulated: an HL7 sender and a DICOM calling AE registered."""
    facilities = Facility.objects.filter(active=True).prefetch_related("hl7_senders", "dicom_senders")
    if code is not None:
        facilities = facilities.filter(code=code)
    found = []
    for facility in facilities:
        senders, modalities = list(facility.hl7_senders.all()), list(facility.dicom_senders.all())
        if senders and modalities:
            sender = (senders[0].sending_application, senders[0].sending_facility)
            found.append(SimulatedFacility(facility.code, sender, modalities[0].ae_title, facility.timezone))
    return found


# --- the message browser (operations) ----------------------------------------------------------------

MESSAGE_FILTERS = ("direction", "facility", "type", "accession", "mrn", "control_id", "ack", "since", "until")


def _field_value(value: str) -> str:
    """A regular expression matching ``value`` as a whole HL7 field or component, not inside one
    (accession ACC-1 must not find ACC-12)."""
    import re

    return r"(^|[|^\r])" + re.escape(value) + r"([|^\r&~]|$)"


def _raw_text():
    """The stored bytes as text to search in (PostgreSQL: ``encode(raw, 'escape')`` never fails on
    a byte that is not UTF-8; SQLite compares the blob as text)."""
    from django.db import connection
    from django.db.models import F, Func, TextField, Value
    from django.db.models.functions import Cast

    if connection.vendor == "postgresql":
        return Func(F("raw"), Value("escape"), function="encode", output_field=TextField())
    return Cast("raw", TextField())


def messages_browse(filters: dict[str, str]):
    """Inbound or outbound HL7 messages, newest first, narrowed by ``filters`` (``MESSAGE_FILTERS``;
    ``since``/``until`` are aware datetimes or None). Accession and MRN are searched in the message
    text itself: neither table has a column for them, and a message that failed to apply is exactly
    the one an analyst looks for."""
    from django.db.models import F

    from interfaces.models import InboundMessage, OutboundMessage

    inbound = filters.get("direction", "in") != "out"
    if inbound:
        rows = InboundMessage.objects.select_related("facility").annotate(text=_raw_text()).defer("raw")
        time_field, type_field = "received_at", "message_type"
    else:
        rows = OutboundMessage.objects.select_related("facility").annotate(text=F("payload")).defer("payload")
        time_field, type_field = "created_at", "kind"
    if filters.get("facility"):
        rows = rows.filter(facility__code=filters["facility"])
    if filters.get("type"):
        rows = rows.filter(**{f"{type_field}__istartswith": filters["type"]})
    if filters.get("control_id"):
        rows = rows.filter(control_id=filters["control_id"])
    if filters.get("ack"):
        rows = rows.filter(ack_code=filters["ack"].upper())
    for name in ("accession", "mrn"):
        if filters.get(name):
            rows = rows.filter(text__regex=_field_value(filters[name]))
    if filters.get("since"):
        rows = rows.filter(**{f"{time_field}__gte": filters["since"]})
    if filters.get("until"):
        rows = rows.filter(**{f"{time_field}__lt": filters["until"]})
    return rows.order_by(f"-{time_field}", "-id")


def segments_of(text: str) -> list[tuple[str, list[str]]]:
    """ER7 text as (segment id, its fields) per segment, for reading segment by segment."""
    if not text:
        return []
    separator = text[3] if text.startswith("MSH") and len(text) > 3 else "|"
    lines = [line for line in text.replace("\n", "\r").split("\r") if line.strip()]
    return [(line[:3], line.split(separator)[1:]) for line in lines]
