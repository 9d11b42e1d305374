from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from facilities.models import PriorityClass
from facilities.selectors import access_facility, can_administer_facility, facilities_visible_to


@login_required
def facility_list(request: HttpRequest) -> HttpResponse:
    facilities = facilities_visible_to(request.user).order_by("state", "name")
    return render(request, "facilities/list.html", {"facilities": facilities})


@login_required
def facility_detail(request: HttpRequest, code: str) -> HttpResponse:
    facility = access_facility(request.user, code)
    targets = [(p.label, facility.sla_target(p)) for p in PriorityClass]
    return render(
        request,
        "facilities/detail.html",
        {
            "facility": facility,
            "sla_targets": targets,
            "can_administer": can_administer_facility(request.user, facility),
            "charge_months": _charge_months(request.user, facility),
        },
    )


def _charge_months(user, facility) -> list[str]:
    """This month and the two before (facility-local, YYYY-MM) for the charges CSV links — only for
    those the CSV is for (operations and the facility's admins)."""
    from datetime import timedelta

    from django.utils import timezone

    from facilities.selectors import facilities_administered_by

    if not facilities_administered_by(user).filter(pk=facility.pk).exists():
        return []
    today = timezone.now().astimezone(facility.zone).date().replace(day=1)
    months = []
    for _ in range(3):
        months.append(f"{today:%Y-%m}")
        today = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    return months
