"""The operations rota page (issue 4, "Coverage"): repeating shift templates by reader with what they
mean in words, a proper form to create, edit and deactivate them, and time off recorded and withdrawn
with the shifts it changed. Every write calls a ``worklist.coverage`` service, which materialises the
next HORIZON_DAYS (90) days at once so the coverage grid shows the change on its next load. Operations and
superusers only, like the other coverage pages."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from facilities.models import Facility
from worklist.coverage import (
    HORIZON_DAYS,
    InvalidTimeOff,
    ShiftChange,
    TimeOffResult,
    rota_templates,
    shift_template_create,
    shift_template_deactivate,
    shift_template_update,
    template_description,
    time_off_ahead,
    time_off_cancel,
    time_off_record,
)
from worklist.coverage_views import operations_only
from worklist.models import ShiftTemplate, TimeOff
from worklist.rota_forms import ShiftTemplateForm, TimeOffForm

TEMPLATE_FIELDS = (
    "name",
    "weekdays",
    "start_time",
    "end_time",
    "timezone",
    "valid_from",
    "valid_until",
    "facilities",
    "subspecialties",
)


@dataclass(frozen=True)
class DeskClock:
    """The zone the desk reads time off in (the facility_time tag wants an object with ``zone``)."""

    zone: ZoneInfo


def desk_clock() -> DeskClock:
    """Time off belongs to a reader, not a facility: it is shown in the zone most active facilities
    keep (America/Chicago for the demo), with UTC in the tooltip."""
    zones = Counter(Facility.objects.filter(active=True).values_list("timezone", flat=True))
    return DeskClock(ZoneInfo(zones.most_common(1)[0][0] if zones else "America/Chicago"))


def _rota_context(now: datetime) -> dict:
    templates = rota_templates()
    return {
        "now": now,
        "rows": [(t, template_description(t)) for t in templates],
        "time_off": time_off_ahead(now),
        "clock": desk_clock(),
        "horizon_days": HORIZON_DAYS,
    }


def _rota_changed(request: HttpRequest) -> HttpResponse:
    """After a change from the rota page: its tables afresh for htmx (the change in place), else the page."""
    if request.htmx:
        return render(request, "worklist/_rota_tables.html", _rota_context(timezone.now()))
    return redirect("coverage:rota")


@operations_only
def rota_page(request: HttpRequest) -> HttpResponse:
    return render(request, "worklist/rota.html", _rota_context(timezone.now()))


@operations_only
def template_create(request: HttpRequest) -> HttpResponse:
    zone = desk_clock().zone  # "today" on the desk's clock, not the server's UTC date
    initial = {
        "timezone": zone.key,
        "valid_from": timezone.now().astimezone(zone).date(),
        "radiologist": None,
    }
    if reader := request.GET.get("reader"):
        initial["radiologist"] = reader
    form = ShiftTemplateForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            saved = shift_template_create(
                radiologist=data["radiologist"],
                **{field: data[field] for field in TEMPLATE_FIELDS},
                at=timezone.now(),
            )
        except ValidationError as error:
            _errors_to_form(form, error)
        else:
            messages.success(
                request,
                f"Saved “{saved.template.name}” for {saved.template.radiologist}: "
                f"{saved.shifts_created} shift(s) of the next {HORIZON_DAYS} days are on the rota.",
            )
            return redirect("coverage:rota")
    return render(request, "worklist/rota_template_form.html", {"form": form, "template": None})


@operations_only
def template_edit(request: HttpRequest, template_id: int) -> HttpResponse:
    template = get_object_or_404(
        ShiftTemplate.objects.select_related("radiologist").prefetch_related("facilities", "subspecialties"),
        pk=template_id,
    )
    initial = {
        "radiologist": template.radiologist_id,
        **{field: getattr(template, field) for field in TEMPLATE_FIELDS[:7]},
        "facilities": list(template.facilities.all()),
        "subspecialties": list(template.subspecialties.all()),
        "active": template.active,
    }
    form = ShiftTemplateForm(request.POST or None, initial=initial, editing=True)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            saved = shift_template_update(
                template_id=template.pk,
                **{field: data[field] for field in TEMPLATE_FIELDS},
                active=data["active"],
                at=timezone.now(),
            )
        except ValidationError as error:
            _errors_to_form(form, error)
        else:
            state = "" if saved.template.active else " It is inactive: no shifts are made from it."
            messages.success(
                request,
                f"Saved “{saved.template.name}”: {saved.shifts_removed} shift(s) not yet started were "
                f"replaced by {saved.shifts_created} from the template as it now reads.{state}",
            )
            return redirect("coverage:rota")
    context = {"form": form, "template": template, "description": template_description(template)}
    return render(request, "worklist/rota_template_form.html", context)


@require_POST
@operations_only
def template_deactivate(request: HttpRequest, template_id: int) -> HttpResponse:
    template = get_object_or_404(ShiftTemplate, pk=template_id)
    saved = shift_template_deactivate(template_id=template.pk, at=timezone.now())
    messages.success(
        request,
        f"Deactivated “{template.name}” for {template.radiologist}: {saved.shifts_removed} shift(s) "
        "not yet started were taken off the rota; one under way runs to its end.",
    )
    return _rota_changed(request)


@operations_only
def time_off_create(request: HttpRequest) -> HttpResponse:
    initial = {"timezone": desk_clock().zone.key}
    if reader := request.GET.get("reader"):
        initial["radiologist"] = reader
    form = TimeOffForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            result = time_off_record(
                radiologist=data["radiologist"],
                starts_at=data["starts_at"],
                ends_at=data["ends_at"],
                reason=data["reason"],
                recorded_by=request.user,
            )
        except InvalidTimeOff as error:
            form.add_error(None, str(error))
        else:
            _time_off_messages(request, result, ZoneInfo(data["timezone"]))
            return redirect("coverage:rota")
    return render(request, "worklist/rota_time_off_form.html", {"form": form})


@require_POST
@operations_only
def time_off_withdraw(request: HttpRequest, time_off_id: int) -> HttpResponse:
    off = get_object_or_404(TimeOff.objects.select_related("radiologist"), pk=time_off_id)
    restored = time_off_cancel(time_off_id=off.pk, at=timezone.now())
    messages.success(
        request,
        f"Withdrew {off.radiologist}'s time off ({off.reason}): {restored} shift(s) from their templates "
        "are back on the rota. One-off shifts it removed must be added again by hand.",
    )
    return _rota_changed(request)


def _time_off_messages(request: HttpRequest, result: TimeOffResult, zone: ZoneInfo) -> None:
    off = result.time_off
    messages.success(
        request,
        f"Recorded time off for {off.radiologist} ({off.reason}), {_when(off.starts_at, zone)} to "
        f"{_when(off.ends_at, zone)}: {result.removed} shift(s) removed, {result.trimmed} trimmed, "
        f"{result.split} split.",
    )
    for change in result.changes:
        messages.info(request, _change_sentence(change, zone))


def _change_sentence(change: ShiftChange, zone: ZoneInfo) -> str:
    before = f"{change.label} {_span(change.before, zone)}"
    if change.kind == "removed":
        return f"{before}: removed."
    pieces = " and ".join(_span(piece, zone) for piece in change.after)
    return f"{before}: {change.kind}, now {pieces}."


def _span(interval: tuple[datetime, datetime], zone: ZoneInfo) -> str:
    start, end = (t.astimezone(zone) for t in interval)
    end_text = end.strftime("%H:%M %Z") if end.date() == start.date() else _when(end, zone)
    return f"{start:%a %-d %b %H:%M}–{end_text}"


def _when(at: datetime, zone: ZoneInfo) -> str:
    return at.astimezone(zone).strftime("%a %-d %b %H:%M %Z")


def _errors_to_form(form, error: ValidationError) -> None:
    """The model's validation (``full_clean`` in the service) onto the form's fields."""
    if hasattr(error, "error_dict"):
        for field, errors in error.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, error.messages)
