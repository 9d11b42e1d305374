from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from accounts.roles import Role, has_role
from interfaces.health import interface_health, unattributed_traffic
from interfaces.models import InboundMessage, InboundStatus, QuarantinedObject


def can_watch_interfaces(user) -> bool:
    return user.is_authenticated and (user.is_superuser or has_role(user, Role.OPERATIONS))


@login_required
def interface_health_page(request: HttpRequest) -> HttpResponse:
    """The operations desk's view of every facility's interfaces. Workflow metadata only: message
    types, times, counts and error texts — no patient content."""
    if not can_watch_interfaces(request.user):
        return render(
            request, "403.html", {"reason": "Interface health is for the operations desk."}, status=403
        )
    now = timezone.now()
    context = {
        "now": now,
        "rows": [
            (entry, entry.hl7_in.status(now), entry.dicom_in.status(now))
            for entry in interface_health(now=now)
        ],
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
