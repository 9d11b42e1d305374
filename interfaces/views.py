from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts.decorators import role_required
from accounts.roles import Role, has_role
from interfaces.health import interface_health, unattributed_traffic
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
        "recent_errors": InboundMessage.objects.filter(
            status__in=(InboundStatus.REJECTED, InboundStatus.FAILED)
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
