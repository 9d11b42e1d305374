from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts.decorators import role_required
from accounts.roles import Role, has_role
from interfaces.health import interface_health, unattributed_traffic
from interfaces.hl7.inbound import ReprocessRefused, inbound_message_discard, inbound_message_reprocess
from interfaces.hl7.outbound import outbound_message_requeue
from interfaces.models import (
    InboundMessage,
    InboundStatus,
    OutboundMessage,
    OutboundStatus,
    QuarantinedObject,
)


def can_watch_interfaces(user) -> bool:
    return user.is_authenticated and (user.is_superuser or has_role(user, Role.OPERATIONS))


@role_required(can_watch_interfaces, "Interface health is for the operations desk.")
def interface_health_page(request: HttpRequest) -> HttpResponse:
    """The operations desk's view of every facility's interfaces. Workflow metadata only: message
    types, times, counts and error texts — no patient content."""
    now = timezone.now()
    context = {
        "now": now,
        "rows": [
            (entry, entry.hl7_in.status(now), entry.dicom_in.status(now), entry.hl7_out.status(now))
            for entry in interface_health(now=now)
        ],
        # Message metadata only (control id, sequence, error): the payload carries PHI.
        "dead_letters": OutboundMessage.objects.filter(status=OutboundStatus.DEAD)
        .select_related("facility")
        .defer("payload", "ack_raw")
        .order_by("facility__name", "sequence")[:50],
        "unattributed": unattributed_traffic(now=now),
        # Dead-lettered inbound messages: metadata and error only, the raw frame carries PHI.
        "inbound_dead": InboundMessage.objects.filter(status=InboundStatus.DEAD)
        .select_related("facility")
        .defer("raw")
        .order_by("facility__name", "id")[:50],
        "recent_errors": InboundMessage.objects.filter(
            status__in=(InboundStatus.REJECTED, InboundStatus.FAILED, InboundStatus.DEAD)
        )
        .select_related("facility")
        .defer("raw")
        .order_by("-received_at")[:20],
        "quarantined": QuarantinedObject.objects.filter(resolved_at__isnull=True).count(),
    }
    template = "interfaces/_health_table.html" if request.htmx else "interfaces/health.html"
    return render(request, template, context)


@role_required(can_watch_interfaces, "Requeueing is for the operations desk.")
@require_POST
def outbound_requeue(request: HttpRequest, message_id: int) -> HttpResponse:
    """Operations puts a dead-lettered report back in its facility's line (after fixing the cause)."""
    if outbound_message_requeue(message_id=message_id, by=request.user):
        messages.success(request, "Requeued: it is sent again now, before anything queued after it.")
    else:
        messages.info(request, "That message is not a dead letter (any more): nothing to requeue.")
    return redirect("interfaces:health")


# --- the message browser -----------------------------------------------------------------------------

BROWSER_PAGE_SIZE = 50


def _browse_filters(request: HttpRequest) -> tuple[dict[str, str], dict]:
    """The form's values as typed, and as the selector takes them (dates → aware datetimes in the
    filtered facility's zone, else UTC)."""
    from datetime import datetime, time, timedelta
    from zoneinfo import ZoneInfo

    from facilities.models import Facility
    from interfaces.selectors import MESSAGE_FILTERS

    typed = {name: request.GET.get(name, "").strip() for name in MESSAGE_FILTERS}
    typed["direction"] = "out" if typed["direction"] == "out" else "in"
    query = dict(typed)
    facility = Facility.objects.filter(code=typed["facility"]).first() if typed["facility"] else None
    zone = ZoneInfo(facility.timezone) if facility else ZoneInfo("UTC")
    for name, days in (("since", 0), ("until", 1)):  # "until" a date includes that whole day
        try:
            day = datetime.strptime(typed[name], "%Y-%m-%d").date() if typed[name] else None
        except ValueError:
            day = None
            typed[name] = ""
        query[name] = datetime.combine(day + timedelta(days=days), time(), zone) if day else None
    return typed, query


@role_required(can_watch_interfaces, "The message browser is for the operations desk.")
def message_browser(request: HttpRequest) -> HttpResponse:
    """``/operations/interfaces/messages/``: HL7 in and out, filterable; each opens segment by segment."""
    from django.core.paginator import Paginator

    from facilities.models import Facility
    from interfaces.selectors import messages_browse

    typed, query = _browse_filters(request)
    page = Paginator(messages_browse(query), BROWSER_PAGE_SIZE).get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    context = {
        "filters": typed,
        "page": page,
        "query": params.urlencode(),
        "facilities": Facility.objects.order_by("name"),
        "ack_codes": ("AA", "AE", "AR", "CA", "CE", "CR"),
    }
    return render(request, "interfaces/messages.html", context)


def _inbound_ack(message: InboundMessage) -> str:
    """The ACK this message was answered with, rebuilt from what was stored (code, error): the raw
    ACK bytes are not kept for inbound messages, and the rebuild is the same function that sent it."""
    from interfaces.hl7.ack import build_ack
    from interfaces.hl7.parse import Hl7Error, decode, read_header

    if not message.ack_code:
        return ""
    try:
        header = read_header(decode(bytes(message.raw)))
    except Hl7Error:
        header = None
    ack = build_ack(header, message.ack_code, error_code=message.error_code, error_text=message.error[:80])
    return ack.decode("utf-8", "replace") if isinstance(ack, bytes) else str(ack)


@role_required(can_watch_interfaces, "The message browser is for the operations desk.")
def message_detail(request: HttpRequest, direction: str, message_id: int) -> HttpResponse:
    """One message, segment by segment, with its ACK and what operations did to it; resend
    (outbound) or reprocess (inbound) with a reason."""
    from django.shortcuts import get_object_or_404

    from interfaces.hl7.outbound import ResendRefused, outbound_message_resend
    from interfaces.selectors import segments_of

    if direction not in ("in", "out"):
        raise Http404("No such direction.")
    model = InboundMessage if direction == "in" else OutboundMessage
    message = get_object_or_404(model.objects.select_related("facility"), pk=message_id)
    problem = ""
    if request.method == "POST":
        reason = request.POST.get("reason", "")
        try:
            if direction == "out":
                copy = outbound_message_resend(message_id=message.pk, by=request.user, reason=reason)
                messages.success(request, f"Queued again as control ID {copy.control_id}.")
                return redirect("interfaces:message", "out", copy.pk)
            result = inbound_message_reprocess(message_id=message.pk, by=request.user, reason=reason)
            messages.success(request, f"Reprocessed: {result.get_status_display().lower()}.")
            return redirect("interfaces:message", "in", message.pk)
        except (ResendRefused, ReprocessRefused) as refusal:
            problem = str(refusal)
    if direction == "in":
        text = bytes(message.raw).decode("utf-8", "replace")
        ack = _inbound_ack(message)
        can_act = message.status not in (
            InboundStatus.PROCESSED,
            InboundStatus.DUPLICATE,
            InboundStatus.RECEIVED,
            InboundStatus.REJECTED,
            InboundStatus.WAITING,
        )
    else:
        text, ack = message.payload, message.ack_raw
        can_act = message.status != OutboundStatus.QUEUED
    context = {
        "direction": direction,
        "message": message,
        "segments": segments_of(text),
        "ack_segments": segments_of(ack),
        "can_act": can_act,
        "problem": problem,
        "actions": message.actions.select_related("by", "resent_as").order_by("at"),
        "resent_from": getattr(message, "resent_from", None) if direction == "out" else None,
    }
    return render(request, "interfaces/message_detail.html", context, status=400 if problem else 200)


# --- DICOM associations and quarantine ----------------------------------------------------------------


@role_required(can_watch_interfaces, "The DICOM associations are for the operations desk.")
def dicom_associations(request: HttpRequest) -> HttpResponse:
    """``/operations/interfaces/dicom/``: associations by calling AE with their counts and status, and
    the quarantine (open first) with release or discard."""
    from django.core.paginator import Paginator

    from facilities.models import Facility
    from interfaces.models import DicomAssociation

    facility, ae = request.GET.get("facility", "").strip(), request.GET.get("ae", "").strip()
    associations = DicomAssociation.objects.select_related("facility").order_by("-started_at", "-id")
    quarantine = QuarantinedObject.objects.select_related("facility", "association", "resolved_by")
    if facility:
        associations = associations.filter(facility__code=facility)
        quarantine = quarantine.filter(facility__code=facility)
    if ae:
        associations = associations.filter(calling_ae_title__iexact=ae)
        quarantine = quarantine.filter(association__calling_ae_title__iexact=ae)
    page = Paginator(associations, BROWSER_PAGE_SIZE).get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    context = {
        "page": page,
        "query": params.urlencode(),
        "filters": {"facility": facility, "ae": ae},
        "facilities": Facility.objects.order_by("name"),
        "quarantine": quarantine.order_by("resolved_at", "-received_at")[:100],
    }
    return render(request, "interfaces/dicom.html", context)


@role_required(can_watch_interfaces, "Quarantine decisions are for the operations desk.")
@require_POST
def quarantine_decide(request: HttpRequest, object_id: int) -> HttpResponse:
    from interfaces.dicom.quarantine import QuarantineRefused, quarantine_discard, quarantine_release

    reason = request.POST.get("reason", "")
    try:
        if request.POST.get("decision") == "release":
            messages.success(request, quarantine_release(object_id=object_id, by=request.user, reason=reason))
        else:
            quarantine_discard(object_id=object_id, by=request.user, reason=reason)
            messages.success(request, "Discarded (the encrypted copy is kept).")
    except QuarantinedObject.DoesNotExist as missing:
        raise Http404("No such quarantined object.") from missing
    except QuarantineRefused as refusal:
        messages.error(request, str(refusal))
    return redirect("interfaces:dicom")


@role_required(can_watch_interfaces, "Dead letters are for the operations desk.")
@require_POST
def inbound_decide(request: HttpRequest, message_id: int, action: str) -> HttpResponse:
    """Operations reprocesses (after fixing the cause) or discards a dead-lettered HL7 message,
    always with a reason (audited)."""
    reason = request.POST.get("reason", "").strip()
    if not reason:
        messages.error(request, "Give a reason: it is kept with the decision.")
        return redirect("interfaces:health")
    if action == "reprocess":
        try:
            result = inbound_message_reprocess(message_id=message_id, by=request.user, reason=reason)
        except ReprocessRefused as refusal:
            messages.info(request, str(refusal))
        else:
            messages.success(request, f"Reprocessed: {result.get_status_display().lower()}.")
    elif inbound_message_discard(message_id=message_id, by=request.user, reason=reason):
        messages.success(request, "Discarded.")
    else:
        messages.info(request, "That message is not a dead letter (any more): nothing to do.")
    return redirect("interfaces:health")
