"""The rota calendar page (issue 19): a week of shifts by reader and the facilities' gaps, for the
operations desk and the MSO (credentialing staff); one-off shifts are created and changed from it
by operations only (the MSO has no write permission on shifts, ``accounts.roles``)."""

from __future__ import annotations

from datetime import date, timedelta

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone

from accounts.decorators import role_required
from accounts.roles import Role, has_role
from facilities.models import Facility
from worklist.coverage_views import can_watch_coverage, operations_only
from worklist.models import Shift
from worklist.rota_calendar import (
    WEEK_DAYS,
    month_after,
    month_first,
    rota_month,
    rota_week,
    shift_one_off_save,
    week_monday,
)
from worklist.rota_forms import OneOffShiftForm
from worklist.rota_views import _errors_to_form, desk_clock


def can_see_rota_calendar(user) -> bool:
    return user.is_authenticated and (
        user.is_superuser or has_role(user, Role.OPERATIONS, Role.CREDENTIALING)
    )


def can_edit_shifts(user) -> bool:
    return user.is_authenticated and (user.is_superuser or has_role(user, Role.OPERATIONS))


calendar_viewers = role_required(can_see_rota_calendar, "The rota calendar is for operations and the MSO.")


def _week_from(request: HttpRequest, zone) -> date:
    try:
        day = date.fromisoformat(request.GET.get("week", ""))
    except ValueError:  # absent or not a date: this week
        day = timezone.now().astimezone(zone).date()
    return week_monday(day)


def _chosen_facility(request: HttpRequest) -> tuple[list[Facility], Facility | None, object]:
    """The active facilities, the one asked for (``?facility=<code>``) and the calendar's zone: a
    facility's calendar is in its own zone; all facilities: the desk's zone."""
    facilities = list(Facility.objects.filter(active=True).order_by("name"))
    chosen = request.GET.get("facility", "")
    facility = next((f for f in facilities if f.code == chosen), None)
    return facilities, facility, facility.zone if facility else desk_clock().zone


def _calendar_context(request: HttpRequest) -> dict:
    facilities, facility, zone = _chosen_facility(request)
    monday = _week_from(request, zone)
    return {
        "week": rota_week(monday=monday, zone=zone, facility=facility),
        "facilities": facilities,
        "chosen": facility.code if facility else "",
        "previous": monday - timedelta(days=WEEK_DAYS),
        "next": monday + timedelta(days=WEEK_DAYS),
        "can_edit": can_edit_shifts(request.user),
        # the MSO sees the calendar but not the operations desk's coverage grid: no link to a 403
        "can_watch_coverage": can_watch_coverage(request.user),
    }


@calendar_viewers
def calendar_page(request: HttpRequest) -> HttpResponse:
    context = _calendar_context(request)
    template = "worklist/_rota_calendar.html" if request.htmx else "worklist/rota_calendar.html"
    return render(request, template, context)


def _month_from(request: HttpRequest, zone) -> date:
    try:  # ?month=2026-11
        return date.fromisoformat(f"{request.GET.get('month', '')}-01")
    except ValueError:  # absent or not a month: this month
        return month_first(timezone.now().astimezone(zone).date())


@calendar_viewers
def month_page(request: HttpRequest) -> HttpResponse:
    """A month of the rota: per day who is on shift and each facility's gaps (facility local time)."""
    facilities, facility, zone = _chosen_facility(request)
    first = _month_from(request, zone)
    context = {
        "month": rota_month(first=first, zone=zone, facility=facility),
        "facilities": facilities,
        "chosen": facility.code if facility else "",
        "previous": month_first(first - timedelta(days=1)),
        "next": month_after(first),
        "weekdays": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
        "can_watch_coverage": can_watch_coverage(request.user),
    }
    return render(request, "worklist/rota_calendar_month.html", context)


def _shift_form(request: HttpRequest, shift: Shift | None) -> HttpResponse:
    zone = desk_clock().zone
    if shift is None:
        initial = {
            "timezone": zone.key,
            "day": request.GET.get("day"),
            "radiologist": request.GET.get("reader"),
        }
    else:
        # shown in the zone of its first facility (as on "On now"), else the desk's
        zone = next((f.zone for f in shift.facilities.all()), zone)
        start, end = shift.starts_at.astimezone(zone), shift.ends_at.astimezone(zone)
        initial = {
            "radiologist": shift.radiologist_id,
            "day": start.date(),
            "start_time": start.time(),
            "end_time": end.time(),
            "timezone": zone.key,
            "facilities": list(shift.facilities.all()),
            "subspecialties": list(shift.subspecialties.all()),
            "note": shift.note,
        }
    form = OneOffShiftForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            shift_one_off_save(
                radiologist=data["radiologist"],
                starts_at=data["starts_at"],
                ends_at=data["ends_at"],
                facilities=data["facilities"],
                subspecialties=data["subspecialties"],
                note=data["note"],
                shift_id=shift.pk if shift else None,
            )
        except ValidationError as error:
            _errors_to_form(form, error)
        else:
            if not request.htmx:
                return redirect(f"{reverse('coverage:calendar')}?week={data['day'].isoformat()}")
            # the calendar of the week the shift is in, in place of the old one
            request.GET = request.GET.copy()
            request.GET["week"] = data["day"].isoformat()
            response = render(request, "worklist/_rota_calendar.html", _calendar_context(request))
            response["HX-Retarget"] = "#rota-calendar"
            response["HX-Reswap"] = "outerHTML"
            return response
    # errors come back with 200: htmx swaps only 2xx responses into the editor
    context = {"form": form, "shift": shift}
    template = "worklist/_rota_shift_form.html" if request.htmx else "worklist/rota_shift_page.html"
    return render(request, template, context)


@operations_only
def shift_create(request: HttpRequest) -> HttpResponse:
    return _shift_form(request, None)


@operations_only
def shift_edit(request: HttpRequest, shift_id: int) -> HttpResponse:
    shift = get_object_or_404(Shift.objects.select_related("template"), pk=shift_id, template__isnull=True)
    return _shift_form(request, shift)
