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
        },
    )
