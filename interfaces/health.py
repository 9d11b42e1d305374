"""Interface health per facility: when each interface last carried traffic, how much in the last
24 hours, how much of it failed — and whether it has been silent for longer than the facility
expects (DESIGN.md §2 operations desk). Computed from the message and association tables.

HL7 out (the report outbox) is judged differently: not by silence but by what is stuck — a dead
letter, or a report queued longer than ``READROOM_HL7_OUT_OVERDUE_MINUTES`` without an ACK (issue #6:
"a report signed but not acknowledged within 5 minutes shows on the operations page")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Min, Q, Sum
from django.utils import timezone

from facilities.models import Facility
from interfaces.models import (
    DicomAssociation,
    InboundMessage,
    InboundStatus,
    InterfaceAlert,
    InterfaceKind,
    OutboundMessage,
    OutboundStatus,
)
from worklist.broadcast import operations_event_send

WINDOW = timedelta(hours=24)
FAILED = (InboundStatus.REJECTED, InboundStatus.FAILED)


@dataclass(frozen=True)
class InterfaceState:
    kind: str
    last_at: datetime | None
    count_24h: int
    errors_24h: int
    expected_gap: timedelta
    dead: int = 0  # HL7 in: dead-lettered messages awaiting an operator (reprocess or discard)

    def silent(self, now: datetime) -> bool:
        """Silent longer than expected. An interface that never carried traffic is awaiting go-live,
        not down: it does not alarm."""
        return self.last_at is not None and now - self.last_at > self.expected_gap

    def status(self, now: datetime) -> str:
        if self.dead:
            return "dead"
        if self.last_at is None:
            return "awaiting"
        return "silent" if self.silent(now) else "ok"


@dataclass(frozen=True)
class OutboundState:
    """A facility's report outbox, for the operations page."""

    kind: str
    configured: bool  # an ORU host and port are set
    last_ack_at: datetime | None
    queued: int
    dead: int
    oldest_unacked_at: datetime | None  # start of the oldest queued message's delivery episode
    overdue_after: timedelta

    def overdue(self, now: datetime) -> bool:
        return self.oldest_unacked_at is not None and now - self.oldest_unacked_at > self.overdue_after

    def in_trouble(self, now: datetime) -> bool:
        return self.dead > 0 or self.overdue(now)

    def status(self, now: datetime) -> str:
        if self.dead:
            return "dead"
        if self.overdue(now):
            return "overdue"
        if self.queued:
            return "sending"
        if self.last_ack_at is not None:
            return "ok"
        return "awaiting" if self.configured else "unconfigured"


@dataclass(frozen=True)
class FacilityInterfaces:
    facility: Facility
    hl7_in: InterfaceState
    dicom_in: InterfaceState
    hl7_out: OutboundState
    open_alerts: tuple[InterfaceAlert, ...]


def interface_health(*, now: datetime | None = None) -> list[FacilityInterfaces]:
    now = now or timezone.now()
    since = now - WINDOW
    hl7 = {
        row["facility_id"]: row
        for row in InboundMessage.objects.filter(facility__isnull=False)
        .values("facility_id")
        .annotate(
            last=Max("received_at"),
            count=Count("id", filter=Q(received_at__gte=since)),
            errors=Count("id", filter=Q(received_at__gte=since, status__in=FAILED)),
            dead=Count("id", filter=Q(status=InboundStatus.DEAD)),
        )
    }
    dicom = {
        row["facility_id"]: row
        for row in DicomAssociation.objects.filter(facility__isnull=False, accepted=True)
        .values("facility_id")
        .annotate(
            last=Max("started_at"),
            count=Sum("instances_stored", filter=Q(started_at__gte=since)),
            errors=Sum("instances_failed", filter=Q(started_at__gte=since)),
        )
    }
    outbound = _outbound_rows()
    alerts: dict[int, list[InterfaceAlert]] = {}
    for alert in InterfaceAlert.objects.filter(cleared_at__isnull=True):
        alerts.setdefault(alert.facility_id, []).append(alert)
    return [
        FacilityInterfaces(
            facility=facility,
            hl7_in=_state(InterfaceKind.HL7_IN, hl7.get(facility.pk), facility.hl7_expected_gap_minutes),
            dicom_in=_state(
                InterfaceKind.DICOM_IN, dicom.get(facility.pk), facility.dicom_expected_gap_minutes
            ),
            hl7_out=_outbound_state(facility, outbound.get(facility.pk)),
            open_alerts=tuple(alerts.get(facility.pk, ())),
        )
        for facility in Facility.objects.filter(active=True).order_by("name")
    ]


def _state(kind: str, row: dict | None, gap_minutes: int) -> InterfaceState:
    row = row or {}
    return InterfaceState(
        kind=kind,
        last_at=row.get("last"),
        count_24h=row.get("count") or 0,
        errors_24h=row.get("errors") or 0,
        expected_gap=timedelta(minutes=gap_minutes),
        dead=row.get("dead") or 0,
    )


def _outbound_rows() -> dict[int, dict]:
    return {
        row["facility_id"]: row
        for row in OutboundMessage.objects.values("facility_id").annotate(
            last_ack=Max("acked_at"),
            queued=Count("id", filter=Q(status=OutboundStatus.QUEUED)),
            dead=Count("id", filter=Q(status=OutboundStatus.DEAD)),
            oldest=Min("queued_at", filter=Q(status=OutboundStatus.QUEUED)),
        )
    }


def _outbound_state(facility: Facility, row: dict | None) -> OutboundState:
    row = row or {}
    return OutboundState(
        kind=InterfaceKind.HL7_OUT,
        configured=bool(facility.hl7_outbound_host and facility.hl7_outbound_port),
        last_ack_at=row.get("last_ack"),
        queued=row.get("queued") or 0,
        dead=row.get("dead") or 0,
        oldest_unacked_at=row.get("oldest"),
        overdue_after=timedelta(minutes=settings.READROOM_HL7_OUT_OVERDUE_MINUTES),
    )


def unattributed_traffic(*, now: datetime | None = None) -> dict[str, int]:
    """Traffic from senders no facility claims, in the last 24 hours: a new interface pointed at us
    before it was onboarded, or a misconfigured MSH-3/MSH-4 or AE title."""
    since = (now or timezone.now()) - WINDOW
    return {
        "hl7": InboundMessage.objects.filter(facility__isnull=True, received_at__gte=since).count(),
        "dicom": DicomAssociation.objects.filter(facility__isnull=True, started_at__gte=since).count(),
    }


def interface_alerts_check(*, now: datetime | None = None) -> list[InterfaceAlert]:
    """Raise an alert once per silence episode and clear it when traffic resumes; each change is
    announced to the operations desk after commit. Safe to run from several workers at once."""
    now = now or timezone.now()
    raised = []
    for entry in interface_health(now=now):
        open_by_kind = {alert.interface: alert for alert in entry.open_alerts}
        for state in (entry.hl7_in, entry.dicom_in):
            alert = open_by_kind.get(state.kind)
            if state.silent(now) and alert is None:
                created = _alert_raise(entry.facility, state, now)
                if created is not None:
                    raised.append(created)
            elif alert is not None and not state.silent(now):
                _alert_clear(alert, now)
        dead_alert = open_by_kind.get(InterfaceKind.HL7_IN_DEAD)
        if entry.hl7_in.dead and dead_alert is None:
            created = hl7_in_dead_alert_raise(entry.facility, count=entry.hl7_in.dead, now=now)
            if created is not None:
                raised.append(created)
        elif dead_alert is not None and not entry.hl7_in.dead:
            _alert_clear(dead_alert, now)
        out, alert = entry.hl7_out, open_by_kind.get(InterfaceKind.HL7_OUT)
        if out.in_trouble(now) and alert is None:
            created = hl7_out_alert_raise(
                entry.facility, reason=_outbound_reason(out), now=now, since=out.oldest_unacked_at
            )
            if created is not None:
                raised.append(created)
        elif alert is not None and not out.in_trouble(now):
            _alert_clear(alert, now)
    return raised


def _outbound_reason(state: OutboundState) -> str:
    if state.dead:
        return f"{state.dead} report message(s) dead-lettered: requeue after fixing the cause"
    return f"a report queued since {state.oldest_unacked_at:%Y-%m-%d %H:%M} UTC is not acknowledged"


def hl7_out_alert_raise(
    facility: Facility, *, reason: str, now: datetime, since: datetime | None
) -> InterfaceAlert | None:
    """Open the facility's HL7-out alert (dead letter or overdue ACK) unless one is open already."""
    try:
        with transaction.atomic():
            alert = InterfaceAlert.objects.create(
                facility=facility,
                interface=InterfaceKind.HL7_OUT,
                raised_at=now,
                last_message_at=since,
                reason=reason,
            )
            operations_event_send({**_event("interface.undelivered", alert), "reason": reason})
    except IntegrityError:
        return None  # open already (one open alert per interface)
    return alert


def hl7_in_dead_alert_raise(
    facility: Facility, *, count: int, now: datetime | None = None
) -> InterfaceAlert | None:
    """Open the facility's inbound dead-letter alert unless one is open already: a message that
    could not be applied was set aside, and the sender's later messages went on without it."""
    now = now or timezone.now()
    reason = f"{count} HL7 message(s) dead-lettered: reprocess or discard them (with a reason)"
    try:
        with transaction.atomic():
            alert = InterfaceAlert.objects.create(
                facility=facility, interface=InterfaceKind.HL7_IN_DEAD, raised_at=now, reason=reason
            )
            operations_event_send({**_event("interface.inbound_dead_letter", alert), "reason": reason})
    except IntegrityError:
        return None  # open already (one open alert per interface)
    return alert


def _alert_raise(facility: Facility, state: InterfaceState, now: datetime) -> InterfaceAlert | None:
    try:
        with transaction.atomic():
            alert = InterfaceAlert.objects.create(
                facility=facility, interface=state.kind, raised_at=now, last_message_at=state.last_at
            )
            operations_event_send(_event("interface.silent", alert))
            _silent_notice_send(alert, now)
    except IntegrityError:
        return None  # another worker raised it first (one open alert per interface)
    return alert


def _silent_notice_send(alert: InterfaceAlert, now: datetime) -> None:
    """Each operations user's banner, on every page, until they acknowledge it (worklist.notices)."""
    from django.urls import reverse

    from worklist.models import NoticeKind
    from worklist.notices import operations_notice_send

    since = f"since {alert.last_message_at:%H:%M} UTC" if alert.last_message_at else "nothing received yet"
    operations_notice_send(
        kind=NoticeKind.INTERFACE_SILENT,
        at=now,
        text=f"{alert.get_interface_display()} silent, {since}",
        url=reverse("interfaces:health"),
        facility_name=alert.facility.name,
        about=f"interface_silent:{alert.pk}",
    )


def _alert_clear(alert: InterfaceAlert, now: datetime) -> None:
    with transaction.atomic():
        if InterfaceAlert.objects.filter(pk=alert.pk, cleared_at__isnull=True).update(cleared_at=now):
            operations_event_send(_event("interface.resumed", alert))


def _event(kind: str, alert: InterfaceAlert) -> dict:
    return {
        "type": kind,
        "facility": alert.facility.code,
        "interface": alert.interface,
        "last_message_at": alert.last_message_at.isoformat() if alert.last_message_at else None,
    }
