"""The durable HL7 inbox: store every frame and decide its ACK, then apply stored messages in order.

``hl7_frame_receive`` runs on the listener's path: it parses (cheap), stores the raw frame with its
verdict in one INSERT (committed before it returns) and gives back the ACK bytes. Applying the
message is separate (``hl7_inbound_drain``, run by a task after the ACK is sent): a crash in between
leaves a ``received`` row that the sweep picks up again, and the dedupe key on sender + MSH-10 makes
a resent message a recorded duplicate that is never applied twice."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from auditlog.models import LogEntry
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DataError, IntegrityError, connection, connections, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.audit import AuditRowsDeferred, audit_entry_write
from facilities.models import Facility, Hl7Sender, address_allowed
from imaging import services as imaging
from imaging.ai import AiStudyNotStored
from imaging.facts import OrderFacts, OrderMessage
from interfaces.hl7.ack import ack_code_for, application_ack_wanted, build_ack
from interfaces.hl7.parse import (
    APPLICATION_INTERNAL_ERROR,
    CHARSETS,
    DATA_TYPE_ERROR,
    REQUIRED_FIELD_MISSING,
    UNKNOWN_KEY_IDENTIFIER,
    UNSUPPORTED_MESSAGE_TYPE,
    Header,
    Hl7Error,
    ParsedMessage,
    check_header,
    decode,
    normalize,
    parse,
    parse_text,
    read_header,
)
from interfaces.hl7.validate import fallback_accession_check, message_check
from interfaces.models import InboundMessage, InboundStatus

log = logging.getLogger(__name__)
SENDER_CACHE_SECONDS = 30.0
_sender_cache: dict[tuple[str, str], tuple[float, _SenderFacility | None]] = {}


@dataclass(frozen=True)
class Hl7Receipt:
    message_id: int
    ack: bytes | None  # None: the sender asked for no acknowledgement (enhanced mode)
    ack_code: str
    to_apply: bool  # a new accepted message: the caller enqueues the drain for its sender
    sender: tuple[str, str]
    close: bool = False  # the connection is closed after this ACK (a sender outside its allow-list)
    messages_per_minute: int | None = None  # the facility's pace for this sender (listener.SenderPace)


@dataclass(frozen=True)
class _SenderFacility:
    facility_id: int
    code: str
    accession_fallback: str
    allowed_networks: tuple[str, ...]
    messages_per_minute: int | None = None


class PeerNotAllowed(Hl7Error):
    """An onboarded sender connecting from an address outside its facility's allow-list."""


def _sender_facility(app: str, fac: str) -> _SenderFacility | None:
    """MSH-3/MSH-4 → its facility, cached briefly: asked for every frame."""
    key = (app.upper(), fac.upper())
    hit = _sender_cache.get(key)
    if hit and hit[0] > time.monotonic():
        return hit[1]
    sender = (
        Hl7Sender.objects.select_related("facility")
        .filter(sending_application__iexact=app, sending_facility__iexact=fac, facility__active=True)
        .first()
    )
    found = (
        _SenderFacility(
            sender.facility_id,
            sender.facility.code,
            sender.facility.hl7_accession_fallback,
            tuple(sender.facility.hl7_allowed_networks),
            sender.facility.hl7_max_messages_per_minute,
        )
        if sender
        else None
    )
    _sender_cache[key] = (time.monotonic() + SENDER_CACHE_SECONDS, found)
    return found


def oru_kind(header: Header) -> str | None:
    """What an ORU^R01 from this sender is, by the sender's configuration alone (asked for ORU
    frames only): an AI node's result (docs/ai.md), the facility's report history when the facility
    takes it (``hl7.report_history``, docs/priors.md), else None — refused. Our own reports go the
    other way, so an ORU is never read as one of them."""
    sender = (
        Hl7Sender.objects.select_related("facility")
        .filter(
            sending_application__iexact=header.sending_application,
            sending_facility__iexact=header.sending_facility,
        )
        .first()
    )
    if sender is None:
        return None
    if sender.ai_node:
        return "ai_result"
    return "report_history" if sender.facility.hl7_report_history else None


def sender_cache_clear() -> None:
    _sender_cache.clear()


def hl7_frame_receive(
    *, raw: bytes, peer: str = "", received_at: datetime | None = None, oversize: int = 0
) -> Hl7Receipt:
    """Store one frame and return its ACK. ``oversize``: the frame's true size when it exceeded the
    limit and only its head (``raw``) was kept."""
    received_at = received_at or timezone.now()
    header, facility_id, error = _assess(raw, oversize, peer)
    row = InboundMessage(
        received_at=received_at,
        peer=peer[:64],
        raw=raw,
        size_bytes=oversize or len(raw),
        facility_id=facility_id,
        sending_application=(header.sending_application if header else "")[:180],
        sending_facility=(header.sending_facility if header else "")[:180],
        control_id=(header.control_id if header else "")[:199],
        message_type=(header.message_type if header else "")[:32],
        version=(header.version if header else "")[:16],
    )
    original_code = "AA" if error is None else error.ack
    row.ack_code = ack_code_for(header, original_code) or ""
    sender = (row.sending_application, row.sending_facility)
    # the sender's pace applies to every frame it sends, refused ones too (an engine resending an
    # erroring message in a loop is what it is for); an unknown sender has none
    known = _sender_facility(*sender) if facility_id is not None else None
    pace = known.messages_per_minute if known else None
    if error is not None:
        row.status, row.error_code, row.error = InboundStatus.REJECTED, error.code, error.text
        row.save(force_insert=True)
        log.info("HL7 %s from %s: %s %s", row.ack_code or original_code, peer, error.code, error.text)
        refused = isinstance(error, PeerNotAllowed)
        if refused:
            log.warning("HL7 from %s refused: %s", peer, error.text)
        ack = _ack(header, original_code, error)
        return Hl7Receipt(row.pk, ack, row.ack_code, False, sender, refused, pace)
    row.dedupe_key = f"{header.sending_application}^{header.sending_facility}^{header.control_id}"[:600]
    row.pk = _inbox_insert(row)
    to_apply = row.pk is not None
    if not to_apply:
        # Resent after a lost ACK: keep what we received, answer as before, apply nothing.
        row.duplicate_of = InboundMessage.objects.filter(dedupe_key=row.dedupe_key).first()
        row.dedupe_key, row.status = None, InboundStatus.DUPLICATE
        row.save(force_insert=True)
    return Hl7Receipt(row.pk, _ack(header, "AA", None), row.ack_code, to_apply, sender, False, pace)


_INSERT_SQL: dict[str, tuple[str, list]] = {}
# Field types whose value, when it is already one of _PLAIN_TYPES, Django hands to the driver as it
# is (PostgreSQL): for those the listener skips ``get_db_prep_save`` (a tenth of its CPU per frame).
_IDENTITY_ON_POSTGRESQL = frozenset(
    {
        "CharField",
        "TextField",
        "DateTimeField",
        "PositiveIntegerField",
        "PositiveSmallIntegerField",
        "ForeignKey",
        "BinaryField",
    }
)
_PLAIN_TYPES = frozenset({str, int, bytes, type(None), datetime})


def _inbox_insert(row: InboundMessage) -> int | None:
    """Store an accepted frame; None when its dedupe key is taken (a resend).

    The listener's hot path: one statement, one round trip. In autocommit mode it commits by itself
    (no BEGIN/COMMIT pair), and ON CONFLICT DO NOTHING turns a resend into "no row returned"
    instead of an error, so there is no savepoint either inside a caller's transaction. About a
    quarter less CPU than ``Model.save`` (docs/ingest.md, Performance)."""
    conn = connections[DEFAULT_DB_ALIAS]  # once: each ``connection.x`` goes through asgiref's Local
    vendor = conn.vendor
    sql, fields = _INSERT_SQL.get(vendor) or _insert_sql(conn)
    if vendor == "postgresql":
        values = []
        for field, plain in fields:
            value = getattr(row, field.attname)
            values.append(
                value if plain and type(value) in _PLAIN_TYPES else field.get_db_prep_save(value, conn)
            )
        return _inbox_insert_prepared(conn, sql, values)
    values = [field.get_db_prep_save(getattr(row, field.attname), conn) for field, _ in fields]
    with conn.cursor() as cursor:
        cursor.execute(sql, values)
        inserted = cursor.fetchone()
    return inserted[0] if inserted else None


def _inbox_insert_prepared(conn, sql: str, values: list) -> int | None:
    """The same INSERT as a prepared statement on the connection's own psycopg cursor: Django binds
    values client-side, so PostgreSQL parses and plans every message; prepared, a message costs
    ~0.08 ms less of the ~1 ms round trip an engine waits for its ACK (bench/hl7). Errors still come
    out as Django's DatabaseError (the listener answers AE 207 on those)."""
    conn.ensure_connection()
    with conn.wrap_database_errors, psycopg.Cursor(conn.connection) as cursor:
        cursor.execute(sql, values, prepare=True)
        inserted = cursor.fetchone()
    return inserted[0] if inserted else None


def _insert_sql(conn) -> tuple[str, list]:
    meta, quote = InboundMessage._meta, conn.ops.quote_name
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    # identifiers come from the model's meta, never from a message; values are bound parameters
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(fields))}) "
        f"ON CONFLICT ({quote(meta.get_field('dedupe_key').column)}) DO NOTHING "
        f"RETURNING {quote(meta.pk.column)}"
    )
    plain = [(f, f.get_internal_type() in _IDENTITY_ON_POSTGRESQL) for f in fields]
    _INSERT_SQL[conn.vendor] = (sql, plain)
    return sql, plain


def _assess(raw: bytes, oversize: int, peer: str = "") -> tuple[Header | None, int | None, Hl7Error | None]:
    """The order of checks follows HL7 v2 §2.13: the MSH and the sender first (AR), then the
    content (AE). Returns (header, facility id, error). ``peer``: "host:port" it came from."""
    try:
        text = decode(normalize(raw))
        header = read_header(text)
    except Hl7Error as exc:
        return None, None, exc
    if oversize:
        limit = settings.READROOM_HL7_MAX_FRAME_BYTES
        return (
            header,
            None,
            Hl7Error("AR", DATA_TYPE_ERROR, f"frame of {oversize} bytes exceeds the {limit}-byte limit"),
        )
    try:
        check_header(header)
    except Hl7Error as exc:
        return header, None, exc
    sender = _sender_facility(header.sending_application, header.sending_facility)
    if sender is None:
        text = f"unknown sender {header.sending_application}^{header.sending_facility}: not onboarded"
        return header, None, Hl7Error("AR", UNKNOWN_KEY_IDENTIFIER, text, "MSH^1^3")
    facility_id, fallback = sender.facility_id, sender.accession_fallback
    host = peer.rsplit(":", 1)[0].strip("[]")
    if not address_allowed(list(sender.allowed_networks), host):
        # AR: resending it unchanged from there will not help; the sender's analyst reads why in
        # ERR. Kept (status rejected) like every refused frame; the listener then hangs up.
        text = f"address {host} not in {sender.code}'s HL7 allow-list"
        return header, facility_id, PeerNotAllowed("AR", UNKNOWN_KEY_IDENTIFIER, text, "MSH^1^4")
    kind = oru_kind(header) if header.message_code == "ORU" else None
    if header.message_code == "ORU" and kind is None:
        # decided from MSH alone, before the body is parsed: an ORU from a sender that is neither an
        # AI node nor one of a facility taking report history is an unsupported type (AR 200)
        sender_name = f"{header.sending_application}^{header.sending_facility}"
        reason = (
            f"ORU^R01 from {sender_name}: only an AI node's results, or report history from a "
            "facility that takes it (hl7.report_history), are accepted"
        )
        return header, facility_id, Hl7Error("AR", UNSUPPORTED_MESSAGE_TYPE, reason, "MSH^1^9")
    try:
        parsed = parse_text(text, header, oru_kind=kind or "ai_result")
        return (
            header,
            facility_id,
            message_check(text, header, parsed) or _accession_missing(parsed, fallback),
        )
    except Hl7Error as exc:
        return header, facility_id, exc
    except Exception as exc:  # a parser bug must not take the listener down: reject, keep the frame
        log.exception("unexpected error parsing HL7")
        return (
            header,
            facility_id,
            Hl7Error("AE", APPLICATION_INTERNAL_ERROR, f"internal error: {type(exc).__name__}"),
        )


def _accession_missing(parsed: ParsedMessage, fallback: str) -> Hl7Error | None:
    """Every order needs an accession: from the message or from the facility's fallback."""
    if parsed.kind != "order":
        return None
    for seq, order in enumerate(parsed.content.orders, start=1):
        if order.accession_number:
            continue
        accession = _fallback_accession(order, fallback)
        if not accession:
            return Hl7Error(
                "AE", REQUIRED_FIELD_MISSING, "no accession number (IPC-1 / OBR-18)", f"OBR^{seq}^18"
            )
        if problem := fallback_accession_check(accession, fallback, seq):
            return problem
    return None


def hl7_unavailable_ack(raw: bytes) -> bytes | None:
    """AE 207 for a frame that could not be stored (the inbox is down): never an ACK for what was
    not kept, but one the engine can match — MSA-2 echoes MSH-10 and MSH-5/6 name the sender, as
    far as the frame's own MSH can be read without the database."""
    try:
        header = read_header(decode(normalize(raw)))
    except Exception:  # unreadable: the ACK says so without a header, as for garbage
        header = None
    error = Hl7Error("AE", APPLICATION_INTERNAL_ERROR, "inbox unavailable")
    return _ack(header, "AE", error)


def _ack(header: Header | None, original_code: str, error: Hl7Error | None) -> bytes | None:
    code = ack_code_for(header, original_code)
    if code is None:
        return None
    if error is None:
        return build_ack(header, code)
    return build_ack(
        header, code, error_code=error.code, error_text=error.text, error_location=error.location
    )


# --- applying ------------------------------------------------------------------------------------


# A batch: this many messages, or until it has used this much of the worker's CPU, or this much
# wall time — one transaction, one sender lock and one query each for the images, the patients and
# the orders of all its messages, and one audit INSERT, instead of one each per message
# (bench/hl7 --apply). Short enough that an order reaches the worklist well under a second after its
# ACK on a quiet machine even in a replay, and that the sender lock is never held long.
# The deadline is CPU, not wall time: on a loaded machine a 0.25-s wall deadline cut batches to ~5
# messages, so the per-batch statements were paid by 5 messages instead of 100 and the CPU per
# message doubled — the slower it applied, the slower it got (bench/hl7/apply_profile.py --phases,
# docs/ingest.md). The wall cap still bounds how long the sender lock is held.
BATCH_MESSAGES = 100
BATCH_SECONDS = 0.25  # of this process's CPU (time.process_time)
BATCH_WALL_SECONDS = 2.0
# A batch reads only about as many rows as it can apply before its deadline, by this process's
# recent CPU per message (``_BatchPace``): reading 100 rows (each parsed, its keys looked up) to
# apply the 10 that fit made the next batch — often the other worker process's, as the sender lock
# alternates between them — read and parse the other 90 again.
BATCH_MIN_MESSAGES = 5


class _BatchPace:
    """This process's CPU seconds per applied message, smoothed over its recent batches."""

    def __init__(self) -> None:
        self.seconds: float | None = None  # none measured yet: a first batch takes BATCH_MESSAGES

    def size(self) -> int:
        if not self.seconds:
            return BATCH_MESSAGES
        # a fifth more than fits: the deadline, not the row count, should end a batch under load
        fits = int(BATCH_SECONDS / self.seconds * 1.2) + 1
        return max(BATCH_MIN_MESSAGES, min(BATCH_MESSAGES, fits))

    def record(self, done: int, elapsed: float) -> None:
        if done <= 0:
            return
        per = elapsed / done
        self.seconds = per if self.seconds is None else 0.5 * self.seconds + 0.5 * per


_pace = _BatchPace()


def hl7_inbound_drain(*, sending_application: str, sending_facility: str) -> int:
    """Apply a sender's received messages oldest first, in batches (``_batch_apply``). Several
    workers may drain the same sender: the sender lock keeps them in order (an XO never overtakes
    its NW).

    A message that cannot be applied never blocks the ones after it for long: a deterministic
    error sets it aside at once (dead letter), any other error stops this drain with the attempt
    counted (the sweep tries again) until ``READROOM_HL7_IN_MAX_ATTEMPTS``, then it is set aside."""
    applied, batched = 0, True
    read: dict[int, ParsedMessage] = {}  # orders read by a batch and left for the next (its deadline)
    while True:
        try:
            done, more = _batch_apply(sending_application, sending_facility, batched=batched, read=read)
        except Exception:
            if not batched:
                raise  # one message at a time, as before batches: the sweep tries again
            # the batch rolled back whole (nothing of it is lost: the rows are still received):
            # the rest of this drain goes one message at a time, which sets a bad one aside alone
            log.exception(
                "HL7 batch of %s^%s failed: applying one message at a time",
                *(sending_application, sending_facility),
            )
            batched = False
            continue
        applied += done
        if not more:
            return applied


class _BatchFailed(Exception):
    """A step of the batch itself failed (not one message): the batch rolls back whole."""


@dataclass
class _Batch:
    """What a batch shares across its messages, each part written or read once for all of them:
    the images to relink (``imaging.OrderRelinks``), the messages' rows (``_settled_save``), the
    audit rows (``AuditRowsDeferred``: one INSERT), the patients and orders known absent
    (``imaging.KnownAbsent``: one SELECT each), and each message read once up front."""

    relinks: imaging.OrderRelinks = dataclasses.field(default_factory=imaging.OrderRelinks)
    settled: list[InboundMessage] = dataclasses.field(default_factory=list)
    audit: AuditRowsDeferred = dataclasses.field(default_factory=AuditRowsDeferred)
    absent: imaging.KnownAbsent = dataclasses.field(default_factory=imaging.KnownAbsent)
    parsed: dict[int, ParsedMessage] = dataclasses.field(default_factory=dict)

    def read(self, messages: list[InboundMessage]) -> None:
        """Every message read once (a message that cannot be read is read again, and fails, when
        it is applied), and the patients and orders its orders name looked up together. An order
        read by an earlier batch of the drain is not read again (a batch often stops at its
        deadline before its last messages: the next batch takes them)."""
        orders: dict[int, tuple[Facility, list[OrderMessage]]] = {}
        for message in messages:
            try:
                parsed = self.parsed.get(message.pk) or _parsed(message)
            except Exception:  # noqa: S112 — its own apply reads it again and sets it aside
                continue
            if parsed.kind == "order":  # an ORU's reading depends on its sender's settings: read it anew
                self.parsed[message.pk] = parsed
            if parsed.kind == "order" and message.facility is not None:
                content = _with_fallback_accessions(message.facility, parsed.content)
                orders.setdefault(message.facility_id, (message.facility, []))[1].append(content)
        for facility, contents in orders.values():
            self.absent.learn(facility, contents)

    def flush(self, *, audit: bool = True) -> None:
        """Pending image links, then (``audit``) every audit row collected so far: before a message
        that could see them (links: one naming a pending order again; rows: anything but an order),
        and at the batch's end."""
        try:
            with self.audit.collecting():  # relinking a study writes its own audit rows
                self.relinks.flush()
            if audit:
                self.audit.write()
        except Exception as exc:
            raise _BatchFailed("linking the batch's orders to their images failed") from exc


def _batch_apply(
    app: str, fac: str, *, batched: bool = True, read: dict[int, ParsedMessage] | None = None
) -> tuple[int, bool]:
    """Up to ``BATCH_MESSAGES`` of the sender's oldest received messages (or what ``BATCH_SECONDS``
    of CPU and ``BATCH_WALL_SECONDS`` allow) in one transaction under the sender lock, each in a
    savepoint of its own: a bad message rolls back alone and is set aside with its reason, the
    others apply, in order. Returns (messages
    settled, whether to go on); a transient failure stops here with what came before it committed."""
    done = 0
    with transaction.atomic():
        _sender_lock(app, fac)
        started, cpu_started = time.monotonic(), time.process_time()
        wall_deadline, cpu_deadline = started + BATCH_WALL_SECONDS, cpu_started + BATCH_SECONDS
        messages = list(
            InboundMessage.objects.filter(
                status=InboundStatus.RECEIVED, sending_application=app, sending_facility=fac
            ).order_by("id")[: _pace.size() if batched else 1]
        )
        if not messages:
            return 0, False
        # one Facility for the batch, read once (not joined to every row: a facility row is wide,
        # seven JSON fields decoded per message); its MRN domain is cached on it
        facilities = Facility.objects.in_bulk({m.facility_id for m in messages if m.facility_id is not None})
        for message in messages:
            if message.facility_id is not None:
                message.facility = facilities[message.facility_id]
        batch = _Batch(parsed=read if read is not None else {}) if batched else None
        if batch is not None:
            batch.read(messages)
        more = True
        for message in messages:
            if not _message_apply(message, batch):
                more = False  # kept in order: a transient failure; the sweep drains again
                break
            done += 1
            if time.process_time() > cpu_deadline or time.monotonic() > wall_deadline:
                break
        if batch is not None:
            batch.flush()
            _settled_save(batch.settled)
            _pace.record(done, time.process_time() - cpu_started)
    return done, more


def _sender_lock(app: str, fac: str) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"hl7-inbound:{app}^{fac}"])
    # SQLite: one writer at a time already (transactions begin IMMEDIATE).


# Errors that the same message will raise every time: retrying only delays the sender's next orders.
# DataError: value too long for its column, NUL in text (PostgreSQL); ValueError: NUL (psycopg/SQLite
# adaptation), invalid values; UnicodeError: undecodable bytes.
DETERMINISTIC_ERRORS = (DataError, ValueError, UnicodeError)


# What applying a message may change on its row; a batch writes them for all its messages at once.
SETTLED_FIELDS = (
    "status",
    "error",
    "attempts",
    "processed_at",
    "dead_at",
    "waiting_study_uid",
    "waiting_accession",
)


def _settled_save(settled: list[InboundMessage]) -> None:
    """The batch's rows in one UPDATE per set of values — one in all for a batch of orders that
    applied cleanly (status, note, attempts alike), a few more for notes and failures. Their
    ``processed_at`` is the batch's one time: the batch commits as one, so that is when each was
    applied for every reader. ``bulk_update`` (a CASE per field per row) took ~5 ms per message of
    a 100-message batch (bench/hl7/apply_profile.py, docs/ingest.md)."""
    if not settled:
        return
    now = timezone.now()
    groups: dict[tuple, list[int]] = {}
    for message in settled:
        message.processed_at = now
        values = tuple(getattr(message, name) for name in SETTLED_FIELDS)
        groups.setdefault(values, []).append(message.pk)
    for values, ids in groups.items():
        InboundMessage.objects.filter(pk__in=ids).update(**dict(zip(SETTLED_FIELDS, values, strict=True)))


def _message_apply(message: InboundMessage, batch: _Batch | None = None) -> bool:
    """Apply one message in a savepoint; False when it stays ``received`` (a transient failure).
    ``batch``: applied as part of one (``_Batch``): its orders' images are linked with the batch's,
    its audit rows and its row are written with the others', its patients and orders looked up with
    the others'; else all of that now."""
    message.attempts += 1
    fields = ["status", "error", "attempts", "processed_at"]
    try:
        note = _apply_in_savepoint(message, batch)
        message.status, message.error = InboundStatus.PROCESSED, note
    except _BatchFailed:
        raise
    except AiStudyNotStored as exc:
        _ai_result_wait(message, exc)
        fields += ["waiting_study_uid", "waiting_accession"]
    except (Hl7Error, imaging.IngestConflict) as exc:
        message.status, message.error = InboundStatus.FAILED, str(exc)
    except DETERMINISTIC_ERRORS as exc:
        _dead_letter(message, f"{type(exc).__name__}: {exc}")
        fields += ["dead_at"]
    except Exception as exc:  # anything else may pass: count it, retry, then set aside
        log.exception("HL7 message %s could not be applied (attempt %d)", message.pk, message.attempts)
        message.error = f"attempt {message.attempts}: {type(exc).__name__}: {exc}"[:2000]
        if message.attempts < settings.READROOM_HL7_IN_MAX_ATTEMPTS:
            message.save(update_fields=["error", "attempts"])
            return False
        _dead_letter(message, message.error)
        fields += ["dead_at"]
    message.processed_at = timezone.now()  # for a waiting message: when its wait began
    if batch is None:
        message.save(update_fields=fields)
    else:
        batch.settled.append(message)  # written with the batch's others in one UPDATE (_settled_save)
    if message.status != InboundStatus.WAITING:  # a waiting message is acknowledged when it ends
        _application_ack_send(message)
    return True


def _apply_in_savepoint(message: InboundMessage, batch: _Batch | None) -> str:
    """The message applied in a savepoint of its own; its note. In a batch, an order's audit rows are
    collected with the savepoint (dropped if it rolls back), anything else first flushes what the
    batch holds back (pending links, audit rows) and the batch's negative cache, which it could make
    wrong (an ADT merge re-keys patients)."""
    if batch is None:
        with transaction.atomic():
            return _apply(message.facility, _parsed(message))
    parsed = batch.parsed.pop(message.pk, None) or _parsed(message)  # an ORU, or unreadable
    if parsed.kind != "order":
        batch.flush()
        batch.absent.clear()
        with transaction.atomic():
            return _apply(message.facility, parsed)
    if batch.relinks.touches(parsed.content):
        batch.flush(audit=False)  # before anything that could see or change a pending link
    try:
        with batch.audit.collecting(), transaction.atomic():
            return _apply(message.facility, parsed, batch.relinks, batch.absent)
    except IntegrityError:
        # a patient or order the cache had as absent was created meanwhile by another connection
        # (another sender of this facility): this message again, looking everything up
        batch.absent.forget(_with_fallback_accessions(message.facility, parsed.content), message.facility)
        with batch.audit.collecting(), transaction.atomic():
            return _apply(message.facility, parsed, batch.relinks)


def _parsed(message: InboundMessage) -> ParsedMessage:
    """The stored frame read again for its apply; an ORU by its sender's configuration now (a
    sender changed since the ACK is read as it is configured when applied)."""
    raw = bytes(message.raw)
    if message.message_type.startswith("ORU"):
        kind = oru_kind(read_header(decode(normalize(raw))))
        if kind is None:
            raise Hl7Error("AE", UNSUPPORTED_MESSAGE_TYPE, "its sender no longer sends ORU^R01 we accept")
        return parse(raw, oru_kind=kind)
    return parse(raw)


# --- an AI result before its study ---------------------------------------------------------------


def _ai_result_wait(message: InboundMessage, exc: AiStudyNotStored) -> None:
    """An AI node's ORU for a study its facility does not hold yet: kept waiting (ACK stays AA; it is
    well-formed), applied when the study's first image is stored there (``ai_orus_waiting_release``).
    The study may be committed by another connection meanwhile: after this commits, the study is
    looked for once more, and the release is a compare-and-set, so the result is applied once."""
    message.status = InboundStatus.WAITING
    message.error = f"{exc}: waiting for its study, applied when its images arrive"
    message.waiting_study_uid = exc.study_instance_uid[:64]
    message.waiting_accession = exc.accession_number[:16]
    message_id = message.pk
    transaction.on_commit(lambda: _ai_result_wait_recheck(message_id))


def _ai_result_wait_recheck(message_id: int) -> None:
    message = InboundMessage.objects.filter(pk=message_id, status=InboundStatus.WAITING).first()
    if message is None or message.facility is None:
        return
    from imaging.models import Study  # the edge reads the study it names

    studies = Study.objects.filter(facility=message.facility)
    for_uid = message.waiting_study_uid and studies.filter(study_instance_uid=message.waiting_study_uid)
    for_accession = message.waiting_accession and studies.filter(accession_number=message.waiting_accession)
    if (for_uid and for_uid.exists()) or (for_accession and for_accession.exists()):
        # back to received: the drain that set it waiting (its loop) or the sweep applies it
        InboundMessage.objects.filter(pk=message_id, status=InboundStatus.WAITING).update(
            status=InboundStatus.RECEIVED
        )


def ai_orus_waiting_release(*, facility: Facility, study_instance_uid: str, accession_number: str) -> int:
    """The study's first image is stored at ``facility``: the AI ORUs waiting for it **there** (by its
    Study Instance UID, or its accession) go back to *received* and their senders' drains apply them
    in order, after this commits. Never another facility's: a facility-B ORU naming the same
    accession stays waiting. Returns how many were released."""
    match = Q(waiting_study_uid=study_instance_uid) if study_instance_uid else Q(pk__in=[])
    if accession_number:
        match |= Q(waiting_accession=accession_number)
    waiting = InboundMessage.objects.filter(match, facility=facility, status=InboundStatus.WAITING)
    senders = set(waiting.values_list("sending_application", "sending_facility"))
    released = waiting.update(status=InboundStatus.RECEIVED)  # compare-and-set on the status
    if released:
        from interfaces.tasks import hl7_inbound_drain_task  # tasks import this module

        for app, fac in senders:
            transaction.on_commit(
                lambda app=app, fac=fac: hl7_inbound_drain_task.delay(app, fac), robust=True
            )
    return released


def ai_orus_waiting_expire(*, now: datetime | None = None) -> int:
    """AI ORUs that waited ``READROOM_AI_ORU_WAIT_HOURS`` for a study that never came: dead letters,
    shown to operations on the interfaces page (reprocess — it waits again — or discard) with the
    dead-letter alert of their facility. Idempotent (a compare-and-set on the status)."""
    now = now or timezone.now()
    cutoff = now - timedelta(hours=settings.READROOM_AI_ORU_WAIT_HOURS)
    expired = 0
    for message in InboundMessage.objects.filter(status=InboundStatus.WAITING, processed_at__lt=cutoff).defer(
        "raw"
    ):
        error = (
            f"its study never arrived: waited {settings.READROOM_AI_ORU_WAIT_HOURS:g} h "
            f"({message.error.split(': waiting for its study')[0]})"
        )[:2000]
        with transaction.atomic():
            if not InboundMessage.objects.filter(pk=message.pk, status=InboundStatus.WAITING).update(
                status=InboundStatus.DEAD, error=error, dead_at=now
            ):
                continue  # its study came meanwhile
            log.warning("AI ORU %s dead-lettered: %s", message.pk, error)
            message.status, message.error = InboundStatus.DEAD, error
            facility = message.facility
            transaction.on_commit(lambda facility=facility: hl7_in_dead_letter_alert(facility))
        expired += 1
        _application_ack_send(InboundMessage.objects.get(pk=message.pk))
    return expired


def _application_ack_send(message: InboundMessage) -> None:
    """Enhanced mode (HL7 v2.5.1 §2.9.3): the commit ACK (CA) went back at once; now that the message
    was applied — or could not be — the application ACK (AA, or AE with ERR 207 and the reason) goes
    to the facility's HL7 endpoint through the ordered outbox, if MSH-16 asks for it. The ACK asks
    for an accept ACK itself (MSH-15 AL, MSH-16 NE), which is what the outbox waits for."""
    try:
        header = read_header(decode(normalize(bytes(message.raw))))
    except Hl7Error:
        return  # it passed the MSH checks before its commit ACK: cannot happen
    code = "AA" if message.status == InboundStatus.PROCESSED else "AE"
    if not application_ack_wanted(header, code):
        return
    # MSH-10 is at most 20 characters; one per inbound message and attempt (a reprocessed message
    # acknowledges again), unique per facility in the outbox
    control_id = f"AK{message.pk}.{message.attempts}"
    error = {} if code == "AA" else {"error_code": APPLICATION_INTERNAL_ERROR, "error_text": message.error}
    if message.status == InboundStatus.FAILED and message.error_code:
        error["error_code"] = message.error_code
    payload = build_ack(header, code, control_id=control_id, ack_types=("AL", "NE"), **error)
    from interfaces.hl7.outbound import outbound_message_enqueue  # outbound → health → the inbox

    outbound_message_enqueue(
        facility=message.facility,
        payload=payload.decode(CHARSETS.get(header.charset.upper(), "utf-8")),
        control_id=control_id,
        source=f"hl7-app-ack:{message.pk}",
        kind="ACK",
    )


def _dead_letter(message: InboundMessage, error: str) -> None:
    message.status, message.error, message.dead_at = InboundStatus.DEAD, error[:2000], timezone.now()
    log.warning("HL7 message %s dead-lettered after %d attempt(s): %s", message.pk, message.attempts, error)
    facility = message.facility
    transaction.on_commit(lambda: hl7_in_dead_letter_alert(facility))


def hl7_in_dead_letter_alert(facility: Facility) -> None:
    from interfaces.health import hl7_in_dead_alert_raise  # health reads the inbox: import at use

    count = InboundMessage.objects.filter(facility=facility, status=InboundStatus.DEAD).count()
    try:
        if count:
            hl7_in_dead_alert_raise(facility, count=count)
    except Exception:  # at once is a courtesy: the periodic interface_alerts_check raises it anyway
        log.exception("could not announce the dead letter of %s at once", facility)


def _apply(
    facility: Facility,
    parsed: ParsedMessage,
    relinks: imaging.OrderRelinks | None = None,
    absent: imaging.KnownAbsent | None = None,
) -> str:
    if parsed.kind == "order":
        content = _with_fallback_accessions(facility, parsed.content)
        outcomes = imaging.order_message_apply(
            facility=facility, message=content, relinks=relinks, absent=absent
        )
        return "; ".join(o.note for o in outcomes if o.note)
    if parsed.kind == "demographics":
        patient = imaging.patient_demographics_update(facility=facility, update=parsed.content)
        return "" if patient else "no such patient here: nothing to update"
    if parsed.kind == "ai_result":
        from imaging.ai import ai_result_record

        result = ai_result_record(facility=facility, facts=parsed.content)
        return f"AI result {result.pk} for study {result.study_id}"
    if parsed.kind == "report_history":
        from imaging.report_history import historical_report_record

        return historical_report_record(facility=facility, facts=parsed.content).note
    merged = imaging.patients_merge(facility=facility, merge=parsed.content)
    return "" if merged else "no prior patient found: nothing to merge"


def _with_fallback_accessions(facility: Facility, message: OrderMessage) -> OrderMessage:
    """IPC-1 → OBR-18 → the facility's configured fallback (filler or placer order number)."""
    orders = tuple(
        order if order.accession_number else _fallback(facility, order) for order in message.orders
    )
    return OrderMessage(patient=message.patient, orders=orders, sent_at=message.sent_at)


def _fallback(facility: Facility, order: OrderFacts) -> OrderFacts:
    accession = _fallback_accession(order, facility.hl7_accession_fallback)
    return dataclasses.replace(order, accession_number=accession)


def _fallback_accession(order: OrderFacts, fallback: str) -> str:
    # never cut short: an over-long fallback is refused before the ACK (validate.py)
    return {"filler": order.filler_order_number, "placer": order.placer_order_number}.get(fallback, "")


def hl7_inbound_senders_pending(*, older_than_seconds: float) -> list[tuple[str, str]]:
    """Senders with messages received but not applied for a while: a worker died, or the task
    was lost. The sweep drains them again."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    return list(
        InboundMessage.objects.filter(status=InboundStatus.RECEIVED, received_at__lt=cutoff)
        .values_list("sending_application", "sending_facility")
        .distinct()
    )


class ReprocessRefused(ValueError):
    """Why an inbound message may not be applied again (said on the page)."""


# Applied, waiting (to be applied, or for its study), or a copy of an applied one: applying again
# would change nothing or apply twice.
NOT_REPROCESSABLE = (
    InboundStatus.PROCESSED,
    InboundStatus.DUPLICATE,
    InboundStatus.RECEIVED,
    InboundStatus.WAITING,
)


def inbound_message_reprocess(*, message_id: int, by, reason: str) -> InboundMessage:
    """Apply a failed or dead-lettered inbound message again, after the cause was fixed, with the
    operator's reason (``InterfaceAction``; a dead letter also keeps who decided and an audit row).
    It goes back to *received*, ahead of anything of its sender still waiting, and its sender's drain
    applies it in order; the answer is the message as it stands after that drain."""
    from interfaces.models import InterfaceAction, InterfaceActionKind

    reason = (reason or "").strip()[:300]
    if not reason:
        raise ReprocessRefused("Give a reason for reprocessing.")
    with transaction.atomic():
        message = InboundMessage.objects.select_for_update().get(pk=message_id)
        if message.status in NOT_REPROCESSABLE:
            raise ReprocessRefused(f"It is {message.get_status_display().lower()}: nothing to reprocess.")
        if message.status == InboundStatus.REJECTED and not message.dedupe_key:
            raise ReprocessRefused("It was rejected (NAK sent): the sender must correct and resend it.")
        was_dead = message.status == InboundStatus.DEAD
        message.status = InboundStatus.RECEIVED
        fields = ["status"]
        if was_dead:
            message.resolved_at, message.resolved_by, message.resolution = timezone.now(), by, reason
            fields += ["resolved_at", "resolved_by", "resolution"]
            _decision_audit(message, by, InboundStatus.RECEIVED, reason)
        message.save(update_fields=fields)
        InterfaceAction.objects.create(
            kind=InterfaceActionKind.REPROCESS, at=timezone.now(), by=by, reason=reason, inbound=message
        )
    hl7_inbound_drain(
        sending_application=message.sending_application, sending_facility=message.sending_facility
    )
    message.refresh_from_db()
    return message


# --- dead letters: the operator's decision -------------------------------------------------------


def inbound_message_discard(*, message_id: int, by, reason: str) -> bool:
    """Set a dead letter aside for good (kept, never applied). False if it is not a dead letter."""
    return _dead_letter_resolve(message_id, by, reason, InboundStatus.DISCARDED) is not None


def _dead_letter_resolve(message_id: int, by, reason: str, status: str) -> InboundMessage | None:
    reason = reason.strip()[:300]
    if not reason:
        raise ValueError("a reason is required")
    now = timezone.now()
    with transaction.atomic():
        # compare-and-set: two operators deciding at once, only one wins
        changed = InboundMessage.objects.filter(pk=message_id, status=InboundStatus.DEAD).update(
            status=status, resolved_at=now, resolved_by=by, resolution=reason
        )
        if not changed:
            return None
        message = InboundMessage.objects.defer("raw").get(pk=message_id)
        _decision_audit(message, by, status, reason)
    return message


def _decision_audit(message: InboundMessage, by, status: str, reason: str) -> None:
    """The operator's decision on a dead letter, as an UPDATE row of the message."""
    audit_entry_write(
        message,
        action=LogEntry.Action.UPDATE,
        text=str(message),
        changes={"status": [InboundStatus.DEAD.value, status], "resolution": ["", reason]},
        actor=by,
        extra={"facility": message.facility_id, "dead_letter": True},
    )
