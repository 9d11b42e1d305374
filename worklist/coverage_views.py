"""The operations desk's coverage pages (issue 4, "Coverage"): who is on now, and the facility ×
subspecialty × next-7-days grid, red where nobody eligible is on shift. Operations (and superusers)
only: the pages name readers and their load, workflow metadata but not for readers' eyes."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from accounts.decorators import role_required
from accounts.roles import Role, has_role
from facilities.models import Facility
from worklist.coverage import coverage_grid, on_shift_now


def can_watch_coverage(user) -> bool:
    return user.is_authenticated and (user.is_superuser or has_role(user, Role.OPERATIONS))


operations_only = role_required(can_watch_coverage, "Coverage is for the operations desk.")


@operations_only
def on_now_page(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    context = {"now": now, "on_shift": on_shift_now(now)}
    template = "worklist/_on_now_table.html" if request.htmx else "worklist/on_now.html"
    return render(request, template, context)


@operations_only
def coverage_grid_page(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    facilities = Facility.objects.filter(active=True).order_by("name")
    chosen = request.GET.get("facility", "")
    facility_ids = [f.pk for f in facilities if f.code == chosen] if chosen else None
    grid = coverage_grid(at=now, facility_ids=facility_ids)
    context = {"now": now, "grid": grid, "facilities": facilities, "chosen": chosen}
    return render(request, "worklist/coverage_grid.html", context)
