"""The HL7 outbox: reports to each facility's EMR, strictly in order, until acknowledged.

* **Enqueue** (``outbound_message_enqueue``) inside the caller's transaction: the message exists
  exactly when the report state it carries exists; the delivery task is asked for after commit.
* **Deliver** (``outbox_deliver``) one facility at a time: only the head of the line — the oldest
  queued message — is ever attempted; the next goes only after the head was acknowledged (AA/CA)
  or dead-lettered, so a correction can never overtake its final report.
* **Retry**: AE/AR/CE/CR, refused connection, timeout, garbage → the head waits
  ``base · 2^(attempts−1)`` seconds (capped, with jitter) and blocks the line meanwhile.
* **Dead letter** after too many attempts or too long: status dead, an HL7-out interface alert and
  an operations event; the line moves on. Operations may requeue it (``outbound_message_requeue``).

See docs/delivery.md for the timing table and the reasoning."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, OuterRef, Subquery
from django.utils import timezone

from facilities.models import Facility
from interfaces.health import hl7_out_alert_raise
from interfaces.hl7.ack import AckUnreadable, ack_parse
from interfaces.hl7.client import Endpoint, MllpConnection, MllpError
from interfaces.hl7.oru import ReportMessage, oru_build
from interfaces.hl7.parse import encode
from interfaces.models import OutboundMessage, OutboundStatus
from interfaces.signals import outbound_acknowledged
from interfaces.tls import client_tls_context
from worklist.broadcast import operations_event_send

log = logging.getLogger(__name__)


# --- enqueue -------------------------------------------------------------------------------------


@transaction.atomic
def outbound_message_enqueue(
    *, facility: Facility, payload: str, control_id: str, source: str, kind: str = "ORU^R01"
) -> OutboundMessage:
    """Queue ``payload`` (ER7 text, MSH-10 = ``control_id``) for ``facility``. Call it inside the
    transaction that makes the reported state true; delivery is scheduled when that commits."""
    # The lock makes sequence order = commit order: a second signer waits here until the first one's
    # transaction commits, so it can never take a smaller number and be committed later.
    _enqueue_lock(facility.pk)
    last = OutboundMessage.objects.filter(facility=facility).aggregate(last=Max("sequence"))["last"] or 0
    now = timezone.now()
    message = OutboundMessage.objects.create(
        facility=facility,
        kind=kind,
        control_id=control_id,
        payload=payload,
        sequence=last + 1,
        source=source,
        next_attempt_at=now,
        created_at=now,
        queued_at=now,
    )
    _deliver_after_commit(facility.pk)
    return message


def oru_enqueue(*, facility: Facility, report: ReportMessage, source: str) -> OutboundMessage:
    """Build the ORU^R01 for ``report`` and queue it (the one call the reports app needs)."""
    return outbound_message_enqueue(
        facility=facility, payload=oru_build(report), control_id=report.control_id, source=source
    )


def oru_receiver(facility: Facility) -> tuple[str, str]:
    """MSH-5/MSH-6 for a facility's results: the application and facility that send us its orders
    (their interface engine routes by them), or the facility code when none is registered."""
    sender = facility.hl7_senders.order_by("id").first()
    if sender is None:
        return facility.code, facility.code
    return sender.sending_application, sender.sending_facility


def _enqueue_lock(facility_id: int) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtext('hl7-outbound-enqueue'), %s)", [facility_id]
            )
    # SQLite: one writer at a time already.


def _deliver_after_commit(facility_id: int) -> None:
    from interfaces.tasks import outbox_deliver_task  # tasks import this module

    def enqueue() -> None:
        try:
            outbox_deliver_task.delay(facility_id)
        except Exception:  # broker down: the periodic sweep delivers it
            log.exception("could not enqueue delivery for facility %s", facility_id)

    transaction.on_commit(enqueue)


# --- deliver -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    accepted: bool
    error: str = ""
    ack_code: str = ""
    ack_raw: str = ""


def outbox_deliver(*, facility_id: int) -> int:
    """Send a facility's due messages in order until one fails or none is due; returns how many were
    acknowledged. Any number of workers may call it at once: one delivers, the others return."""
    delivered = 0
    while True:
        with _delivery_lock(facility_id) as mine:
            if not mine:
                return delivered  # the holder re-checks after it lets go (below)
            delivered += _deliver_due(facility_id)
        # A message committed while we held the lock had its task turned away: look once more.
        if not _head_due(facility_id):
            return delivered


def _head(facility_id: int) -> OutboundMessage | None:
    return (
        OutboundMessage.objects.filter(facility_id=facility_id, status=OutboundStatus.QUEUED)
        .order_by("sequence")
        .first()
    )


def _head_due(facility_id: int) -> bool:
    head = _head(facility_id)
    return head is not None and head.next_attempt_at <= timezone.now()


def _deliver_due(facility_id: int) -> int:
    facility = Facility.objects.get(pk=facility_id)
    try:
        endpoint = _endpoint(facility)
        problem = "" if endpoint else "no ORU host/port configured"
    except (OSError, ValueError) as exc:  # a TLS file missing or unreadable: an attempt that failed
        endpoint, problem = None, f"TLS configuration: {exc}"
    delivered = 0
    with MllpConnection(endpoint or Endpoint("", 0)) as conn:
        while (head := _head(facility_id)) is not None and head.next_attempt_at <= timezone.now():
            attempt = _attempt(conn, head) if endpoint else Attempt(False, problem)
            _record(head, attempt)
            if not attempt.accepted:
                return delivered  # head-of-line: nothing behind it goes before it
            delivered += 1
    return delivered


def _endpoint(facility: Facility) -> Endpoint | None:
    if not facility.hl7_outbound_host or not facility.hl7_outbound_port:
        return None
    tls = facility.hl7_outbound_tls
    return Endpoint(
        facility.hl7_outbound_host,
        facility.hl7_outbound_port,
        connect_timeout=settings.READROOM_HL7_OUT_CONNECT_TIMEOUT,
        ack_timeout=settings.READROOM_HL7_OUT_ACK_TIMEOUT,
        # a missing or unreadable certificate file raises here (_deliver_due records it as the attempt)
        tls=client_tls_context(tls.get("ca_file", ""), tls.get("cert_file", ""), tls.get("key_file", ""))
        if tls
        else None,
        server_name=tls.get("server_name", "") if tls else "",
    )


def _attempt(conn: MllpConnection, message: OutboundMessage) -> Attempt:
    try:
        raw = conn.exchange(encode(message.payload))  # as its MSH-18 says (an ACK: the order's)
    except MllpError as exc:
        return Attempt(False, str(exc))
    text = raw.decode("utf-8", errors="replace")
    try:
        ack = ack_parse(raw)
    except AckUnreadable as exc:
        conn.close()  # whatever the peer is doing, start the next attempt on a clean stream
        return Attempt(False, f"unreadable ACK: {exc}", ack_raw=text)
    if ack.control_id != message.control_id:
        conn.close()  # out of step with the peer: a late ACK for an earlier exchange
        return Attempt(False, f"ACK is for {ack.control_id!r}, not {message.control_id!r}", ack.code, text)
    if not ack.accepted:
        return Attempt(False, f"{ack.code}: {ack.text or 'no reason given'}", ack.code, text)
    return Attempt(True, ack_code=ack.code, ack_raw=text)


def _record(message: OutboundMessage, attempt: Attempt) -> None:
    now = timezone.now()
    attempts = message.attempts + 1
    fields = dict(attempts=attempts, last_attempt_at=now, ack_code=attempt.ack_code, ack_raw=attempt.ack_raw)
    if attempt.accepted:
        fields.update(status=OutboundStatus.ACKED, acked_at=now, last_error="")
    elif _gives_up(message, attempts, now):
        fields.update(status=OutboundStatus.DEAD, dead_at=now, last_error=attempt.error)
    else:
        fields.update(next_attempt_at=now + retry_delay(attempts), last_error=attempt.error)
    with transaction.atomic():
        # compare-and-set: only the attempt we made is recorded, once
        changed = OutboundMessage.objects.filter(
            pk=message.pk, status=OutboundStatus.QUEUED, attempts=message.attempts
        ).update(**fields)
        if changed and fields.get("status") == OutboundStatus.DEAD:
            _dead_letter_announce(message, attempt.error, now)
        if changed and attempt.accepted:
            transaction.on_commit(
                lambda: outbound_acknowledged.send_robust(
                    sender=OutboundMessage, message_id=message.pk, source=message.source, acked_at=now
                )
            )
    log.log(
        logging.INFO if attempt.accepted else logging.WARNING,
        "HL7 out %s #%s %s: %s",
        message.facility_id,
        message.sequence,
        message.control_id,
        attempt.ack_code if attempt.accepted else attempt.error,
    )


def _gives_up(message: OutboundMessage, attempts: int, now: datetime) -> bool:
    max_age = timedelta(hours=settings.READROOM_HL7_OUT_MAX_AGE_HOURS)
    return attempts >= settings.READROOM_HL7_OUT_MAX_ATTEMPTS or now - message.queued_at >= max_age


def retry_delay(attempts: int) -> timedelta:
    """After the n-th failed attempt: base · 2^(n−1), at most the cap; ±20 % jitter so facilities
    that failed together (a network blip) do not retry in lockstep."""
    base, cap = settings.READROOM_HL7_OUT_RETRY_BASE_SECONDS, settings.READROOM_HL7_OUT_RETRY_MAX_SECONDS
    seconds = min(base * 2 ** max(attempts - 1, 0), cap)
    if settings.READROOM_HL7_OUT_RETRY_JITTER:
        seconds *= random.uniform(0.8, 1.2)
    return timedelta(seconds=seconds)


def _dead_letter_announce(message: OutboundMessage, error: str, now: datetime) -> None:
    facility = message.facility
    reason = f"{message.kind} {message.control_id} dead-lettered: {error}"[:300]
    hl7_out_alert_raise(facility, reason=reason, now=now, since=message.queued_at)
    _dead_letter_notice_send(message, error, now)


def _dead_letter_notice_send(message: OutboundMessage, error: str, now: datetime) -> None:
    """Each operations user's banner on every page, kept until they acknowledge it (so a page opened
    later, or a socket that reconnects, still shows it): the result never reached the EMR."""
    from django.urls import reverse

    from worklist.models import NoticeKind
    from worklist.notices import operations_notice_send

    operations_notice_send(
        kind=NoticeKind.RESULT_DEAD_LETTERED,
        at=now,
        text=f"{message.kind} {message.control_id}: {error}",
        url=reverse("interfaces:message", args=["out", message.pk]),
        facility_name=message.facility.name,
        about=f"dead_letter:{message.pk}",
    )


# Process-local stand-in for the advisory lock where there is no PostgreSQL (embedded SQLite runs one
# process; its request thread and ticker thread must still not deliver one facility twice at once).
_local_locks: dict[int, threading.Lock] = {}
_DELIVER_KEY = "hashtext('hl7-outbound-deliver')"
_local_locks_guard = threading.Lock()


@contextmanager
def _delivery_lock(facility_id: int) -> Iterator[bool]:
    """One deliverer per facility across every worker: a session-level advisory lock, tried without
    waiting (a worker that does not get it has nothing to do: the holder sends in order). Session
    level, not transaction level: no transaction stays open while we wait for an EMR."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT pg_try_advisory_lock({_DELIVER_KEY}, %s)", [facility_id])
            mine = cursor.fetchone()[0]
        try:
            yield mine
        finally:
            if mine:
                with connection.cursor() as cursor:
                    cursor.execute(f"SELECT pg_advisory_unlock({_DELIVER_KEY}, %s)", [facility_id])
        return
    with _local_locks_guard:
        lock = _local_locks.setdefault(facility_id, threading.Lock())
    mine = lock.acquire(blocking=False)
    try:
        yield mine
    finally:
        if mine:
            lock.release()


def outbox_facilities_due(*, now: datetime | None = None) -> list[int]:
    """Facilities whose head of the line is due (a message behind a waiting head is not a reason
    to wake up: it must wait for the head anyway)."""
    head_sequence = (
        OutboundMessage.objects.filter(facility_id=OuterRef("facility_id"), status=OutboundStatus.QUEUED)
        .order_by("sequence")
        .values("sequence")[:1]
    )
    return list(
        OutboundMessage.objects.filter(
            status=OutboundStatus.QUEUED,
            next_attempt_at__lte=now or timezone.now(),
            sequence=Subquery(head_sequence),
        ).values_list("facility_id", flat=True)
    )


# --- operations ----------------------------------------------------------------------------------


@transaction.atomic
def outbound_message_requeue(*, message_id: int, by) -> bool:
    """Give a dead letter a fresh episode: queued, due now, attempts from zero. It keeps its place
    in the line (its sequence), so it goes before anything queued after it. False if it is not dead."""
    now = timezone.now()
    changed = OutboundMessage.objects.filter(pk=message_id, status=OutboundStatus.DEAD).update(
        status=OutboundStatus.QUEUED,
        attempts=0,
        next_attempt_at=now,
        queued_at=now,
        dead_at=None,
        requeued_at=now,
        requeued_by=by,
    )
    if not changed:
        return False
    message = OutboundMessage.objects.select_related("facility").get(pk=message_id)
    operations_event_send(
        {
            "type": "interface.requeued",
            "facility": message.facility.code,
            "interface": "hl7_out",
            "message": message.pk,
            "control_id": message.control_id,
        }
    )
    _deliver_after_commit(message.facility_id)
    return True


class ResendRefused(ValueError):
    """Why a message may not be resent (said on the page)."""


def _with_control_id(payload: str, control_id: str) -> str:
    """The ER7 text with MSH-10 replaced (the field separator is MSH's fourth character)."""
    msh, _, rest = payload.partition("\r")
    fields = msh.split(msh[3])
    fields[9] = control_id  # fields[0] is "MSH", [1] the encoding characters (MSH-2): MSH-n is [n-1]
    return msh[3].join(fields) + ("\r" + rest if rest or payload.endswith("\r") else "")


@transaction.atomic
def outbound_message_resend(*, message_id: int, by, reason: str):
    """Queue a copy of a sent (or dead) message under a new control ID, at the end of its facility's
    line, with the operator's reason (``InterfaceAction``). Refused while the original is still
    queued (it will go anyway) and when a later message reports the same thing (a correction would
    be overtaken by the stale version)."""
    from interfaces.hl7.oru import control_id_new
    from interfaces.models import InterfaceAction, InterfaceActionKind

    reason = (reason or "").strip()
    if not reason:
        raise ResendRefused("Give a reason for the resend.")
    message = OutboundMessage.objects.select_for_update().select_related("facility").get(pk=message_id)
    if message.status == OutboundStatus.QUEUED:
        raise ResendRefused("It is still queued: it will be sent (or retried) without a resend.")
    subject = message.source.rsplit(":", 1)[0] + ":"
    if (
        OutboundMessage.objects.filter(facility=message.facility, sequence__gt=message.sequence)
        .filter(source__startswith=subject)
        .exclude(source=message.source)
        .exists()
    ):
        raise ResendRefused("A later version of this report was sent since: resend that one instead.")
    control_id = control_id_new()
    copy = outbound_message_enqueue(
        facility=message.facility,
        payload=_with_control_id(message.payload, control_id),
        control_id=control_id,
        source=message.source,
        kind=message.kind,
    )
    InterfaceAction.objects.create(
        kind=InterfaceActionKind.RESEND,
        at=timezone.now(),
        by=by,
        reason=reason,
        outbound=message,
        resent_as=copy,
    )
    return copy
