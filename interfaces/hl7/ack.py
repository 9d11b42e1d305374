"""HL7 acknowledgements (STANDARDS.md §1 "Acknowledgement").

Original mode (MSH-15 and MSH-16 empty): AA / AE / AR. Enhanced mode: an accept acknowledgement
CA / CE / CR, sent or not according to MSH-15 (AL always, NE never, ER only on error, SU only on
success; empty → always). The application acknowledgement (AA / AE) follows MSH-16 the same way and
is sent after the message was applied, through the outbox (docs/orders.md "Application ACKs").

The ACK echoes the sender's separators, version and character set; MSA-2 is the inbound MSH-10;
an error adds ERR with a table 0357 code — ERR-3/ERR-4 from v2.5 on, ERR-1 before."""

from __future__ import annotations

import functools
import itertools
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.utils import timezone

from interfaces.hl7.parse import CHARSETS, Header

ENHANCED = {"AA": "CA", "AE": "CE", "AR": "CR"}
RECEIVER_APPLICATION = "READROOM"
RECEIVER_FACILITY = "READROOM"
_sequence = itertools.count(1)

ERROR_TEXT = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}

DEFAULT_HEADER = Header(
    field_separator="|",
    encoding_characters="^~\\&",
    sending_application="",
    sending_facility="",
    receiving_application="",
    receiving_facility="",
    sent_at=None,
    message_code="",
    trigger_event="",
    control_id="",
    processing_id="P",
    version="2.5.1",
    accept_ack_type="",
    application_ack_type="",
    charset="",
)


def ack_code_for(header: Header | None, original_code: str) -> str | None:
    """The MSA-1 code to send, or None when MSH-15 says no acknowledgement is wanted."""
    if header is None or not header.enhanced_mode:
        return original_code
    code = ENHANCED[original_code]
    wanted = {
        "": True,
        "AL": True,
        "NE": False,
        "ER": code != "CA",
        "SU": code == "CA",
    }.get(header.accept_ack_type, True)
    return code if wanted else None


def application_ack_wanted(header: Header, code: str) -> bool:
    """Whether MSH-16 asks for an application acknowledgement with MSA-1 ``code`` (AA/AE/AR).
    Original mode has none (the one ACK already said AA/AE/AR); enhanced mode per table 0155:
    AL always, NE never, ER only AE/AR, SU only AA. Empty MSH-16 beside a valued MSH-15 counts as
    AL, as an empty MSH-15 does for the accept ACK."""
    if not header.enhanced_mode:
        return False
    return {"": True, "AL": True, "NE": False, "ER": code != "AA", "SU": code == "AA"}.get(
        header.application_ack_type, True
    )


def ack_control_id(now: datetime | None = None) -> str:
    return _control_id(_stamps(now)[0])


def _control_id(stamp: str) -> str:
    # MSH-10 of what we send: our prefix, the second, and a per-process sequence
    return f"RR{stamp}{next(_sequence) % 1_000_000:06d}"


_stamp_cache: tuple[int, object, tuple[str, str]] | None = None


def _stamps(now: datetime | None) -> tuple[str, str]:
    """The local time as MSH-7 (``%Y%m%d%H%M%S``, then with ``%z``). Without ``now``, computed once
    a second (the listener builds an ACK per frame: localtime and strftime were a tenth of it)."""
    global _stamp_cache
    if now is not None:
        local = timezone.localtime(now)
        return local.strftime("%Y%m%d%H%M%S"), local.strftime("%Y%m%d%H%M%S%z")
    second, tz = int(time.time()), timezone.get_current_timezone()
    cached = _stamp_cache
    if cached is not None and cached[0] == second and cached[1] is tz:
        return cached[2]
    local = timezone.localtime(datetime.fromtimestamp(second, tz=UTC), tz)
    stamps = (local.strftime("%Y%m%d%H%M%S"), local.strftime("%Y%m%d%H%M%S%z"))
    _stamp_cache = (second, tz, stamps)
    return stamps


@functools.lru_cache(maxsize=512)
def _msh_parts(
    fs: str,
    enc: str,
    responder: tuple[str, str],
    sending: tuple[str, str],
    message_type: str,
    processing_id: str,
    version: str,
    ack_types: tuple[str, str],
    charset: str,
) -> tuple[str, str, str]:
    """The ACK's MSH around its two per-message fields (MSH-7 time, MSH-10 control id): the same for
    every ACK to one sender, so built once (``build_ack``)."""
    head = fs.join(
        [
            "MSH",
            enc,
            _escape(responder[0], fs, enc),
            _escape(responder[1], fs, enc),
            _escape(sending[0], fs, enc),
            _escape(sending[1], fs, enc),
            "",
        ]
    )
    middle = fs.join(["", "", message_type, ""])
    tail = fs.join(["", processing_id, version, "", "", ack_types[0], ack_types[1], "", charset])
    return head, middle, tail


def build_ack(
    header: Header | None,
    code: str,
    *,
    error_code: str = "",
    error_text: str = "",
    error_location: str = "",
    now: datetime | None = None,
    responder: tuple[str, str] = (RECEIVER_APPLICATION, RECEIVER_FACILITY),
    control_id: str = "",
    ack_types: tuple[str, str] = ("", ""),
) -> bytes:
    """Bytes of an ACK message (without MLLP framing). ``responder`` is MSH-3/MSH-4 of the ACK: we,
    unless something else answers (the demo's EMR simulator answers as the message's MSH-5/MSH-6).
    ``ack_types`` is the ACK's own MSH-15/MSH-16 (an application ACK asks for an accept ACK).

    MSH: MSH-3/4 the responder, MSH-5/6 the message's MSH-3/4, MSH-7 now, MSH-9 ``ack_message_type``,
    MSH-10 a new control id, MSH-11/12 the message's (P and 2.5.1 when absent), MSH-15/16
    ``ack_types``, MSH-18 the message's character set; trailing empty fields dropped."""
    h = header or DEFAULT_HEADER
    fs, enc = h.field_separator, h.encoding_characters
    short, stamp = _stamps(now)
    control_id = control_id or _control_id(short)
    head, middle, tail = _msh_parts(
        fs,
        enc,
        responder,
        (h.sending_application, h.sending_facility),
        ack_message_type(h),
        h.processing_id or "P",
        h.version or "2.5.1",
        ack_types,
        h.charset,
    )
    msh = f"{head}{stamp}{middle}{control_id}{tail}".rstrip(fs)
    msa = fs.join(["MSA", code, _escape(h.control_id, fs, enc), _escape(error_text[:80], fs, enc)]).rstrip(fs)
    segments = [msh, msa]
    if error_code:
        segments.append(_err(h, error_code, error_text, error_location))
    text = "\r".join(segments) + "\r"
    return text.encode(CHARSETS.get(h.charset.upper(), "utf-8"), errors="replace")


def _err(h: Header, error_code: str, error_text: str, location: str) -> str:
    fs, enc = h.field_separator, h.encoding_characters
    comp, sub = enc[0], enc[3]
    description = _escape(ERROR_TEXT.get(error_code, error_text), fs, enc)
    location_field = comp.join(location.split("^")) if location else ""
    if _is_v25_or_later(h.version):
        # ERR-2 error location (ERL), ERR-3 HL7 error code (CWE, table 0357), ERR-4 severity,
        # ERR-8 user message
        code = comp.join([error_code, description, "HL70357"])
        return fs.join(["ERR", "", location_field, code, "E", "", "", "", _escape(error_text, fs, enc)])
    # v2.3/2.4 ERR-1 (ELD): segment ID^sequence^field position^code (CE, sub-components)
    parts = [*location.split("^"), "", "", ""][:3]
    code = sub.join([error_code, description, "HL70357"])
    return fs.join(["ERR", comp.join([*parts, code])])


def ack_message_type(h: Header) -> str:
    """MSH-9 of the ACK in the inbound version: the message-structure component (MSH-9.3) exists
    from v2.4 on; a v2.3/2.3.1 ACK is ``ACK^O01`` (docs/orders.md)."""
    comp = h.encoding_characters[0]
    if not h.trigger_event:
        return "ACK"
    if _version_at_least(h.version, (2, 4)):
        return comp.join(["ACK", h.trigger_event, "ACK"])
    return comp.join(["ACK", h.trigger_event])


def _version_at_least(version: str, wanted: tuple[int, int]) -> bool:
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        return True
    return (major, minor) >= wanted


def _is_v25_or_later(version: str) -> bool:
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        return True
    return (major, minor) >= (2, 5)


def _escape(value: str, fs: str, enc: str) -> str:
    """HL7 escape sequences for delimiters appearing in echoed values (v2 §2.7.4)."""
    comp, rep, esc, sub = enc
    out = value.replace(esc, f"{esc}E{esc}")
    for char, code in ((fs, "F"), (comp, "S"), (rep, "R"), (sub, "T")):
        out = out.replace(char, f"{esc}{code}{esc}")
    return out.replace("\r", " ").replace("\n", " ")


# --- acknowledgements we receive (the outbox) ----------------------------------------------------

ACCEPTED = frozenset({"AA", "CA"})
ACK_CODES = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})


@dataclass(frozen=True)
class AckReceived:
    code: str  # MSA-1, table 0008
    control_id: str  # MSA-2: the MSH-10 it acknowledges
    text: str  # MSA-3 and the ERR segment's code/text, for the operator

    @property
    def accepted(self) -> bool:
        return self.code in ACCEPTED


class AckUnreadable(ValueError):
    """A reply that is not an HL7 acknowledgement: counts as no ACK."""


def ack_parse(raw: bytes) -> AckReceived:
    """Read an ACK from an EMR. Separators from MSH-1/MSH-2; any line ending; MSH-18 is not
    trusted for the few ASCII fields read here."""
    text = raw.decode("utf-8", errors="replace").replace("\r\n", "\r").replace("\n", "\r")
    segments = [s for s in text.split("\r") if s.strip()]
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 8:
        raise AckUnreadable(f"no MSH segment: {raw[:60]!r}")
    fs = segments[0][3]
    by_name = {s.split(fs, 1)[0]: s.split(fs) for s in segments}
    msa = by_name.get("MSA")
    if msa is None or len(msa) < 3:
        raise AckUnreadable("no MSA segment with MSA-1 and MSA-2")
    code = msa[1].strip().upper()
    if code not in ACK_CODES:
        raise AckUnreadable(f"MSA-1 {msa[1]!r} is not an acknowledgement code (table 0008)")
    details = [msa[3] if len(msa) > 3 else ""]
    if err := by_name.get("ERR"):
        details += [f for f in (err[3] if len(err) > 3 else "", err[8] if len(err) > 8 else "", err[1]) if f]
    return AckReceived(code=code, control_id=msa[2].strip(), text=" ".join(d for d in details if d)[:500])
