"""The services behind the operations rota page: templates created, edited and deactivated with their
shifts materialised at once, time off that says which shifts it changed, and withdrawing it."""

from __future__ import annotations

from datetime import date, time, timedelta

import pytest
from django.core.exceptions import ValidationError

from credentialing.models import Subspecialty
from tests.credentialing.conftest import chicago_time
from tests.worklist.conftest import weekday_dates
from worklist.coverage import (
    HORIZON_DAYS,
    shift_template_create,
    shift_template_deactivate,
    shift_template_update,
    template_description,
    time_off_cancel,
    time_off_record,
    weekdays_label,
)
from worklist.models import Shift, ShiftTemplate, TimeOff

pytestmark = pytest.mark.django_db

WEEKDAYS = [0, 1, 2, 3, 4]


def create_nighthawk(reader, *, at, weekdays=WEEKDAYS, **extra):
    fields = {
        "name": "Nighthawk",
        "weekdays": weekdays,
        "start_time": time(23, 0),
        "end_time": time(7, 0),
        "timezone": "America/Chicago",
        "valid_from": date(2026, 1, 1),
        **extra,
    }
    return shift_template_create(radiologist=reader, at=at, **fields)


def local_spans(reader):
    return [
        (s.astimezone(chicago_time(2026, 1, 1).tzinfo), e.astimezone(chicago_time(2026, 1, 1).tzinfo))
        for s, e in Shift.objects.filter(radiologist=reader)
        .order_by("starts_at")
        .values_list("starts_at", "ends_at")
    ]


# --- describing a template ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "label"),
    [
        ([0, 1, 2, 3, 4], "Mon–Fri"),
        ([5, 6], "Sat, Sun"),
        ([4, 5, 6, 0], "Fri–Mon"),
        ([0, 2, 3, 4, 6], "Mon, Wed–Fri, Sun"),
        ([0, 1, 2, 3, 4, 5, 6], "Every day"),
        ([6], "Sun"),
    ],
)
def test_weekdays_read_as_a_rota_writes_them(days, label):
    assert weekdays_label(days) == label


def test_a_template_describes_itself_as_a_rota_line(dr_neuro_il, chicago):
    # given a weekday nighthawk for neuro at Lakeshore
    saved = create_nighthawk(
        dr_neuro_il,
        at=chicago_time(2026, 11, 2, 12, 0),
        facilities=[chicago],
        subspecialties=[Subspecialty.objects.get(code="neuro")],
    )
    # then it reads like the line on a rota
    assert template_description(saved.template) == (
        "Mon–Fri 23:00–07:00 America/Chicago, neuro, Lakeshore Medical Center"
    )


def test_an_unlimited_template_says_so(dr_neuro_il):
    saved = create_nighthawk(
        dr_neuro_il, at=chicago_time(2026, 11, 2, 12, 0), weekdays=[5, 6], valid_until=date(2026, 12, 31)
    )
    assert template_description(saved.template) == (
        "Sat, Sun 23:00–07:00 America/Chicago, all subspecialties, all facilities, until 31 Dec 2026"
    )


# --- create / update / deactivate ---------------------------------------------------------------------


def test_creating_a_template_materialises_the_horizon_at_once(dr_neuro_il, chicago):
    # when operations create a weekday nighthawk at Lakeshore on a Monday at noon
    at = chicago_time(2026, 11, 2, 12, 0)
    saved = create_nighthawk(dr_neuro_il, at=at, facilities=[chicago])
    # then every weekday night of the horizon (the forecast's 90 days) is a shift, limited to Lakeshore:
    # ten in the first fortnight
    assert saved.shifts_created == weekday_dates(date(2026, 11, 2), HORIZON_DAYS, WEEKDAYS)
    shifts = Shift.objects.filter(template=saved.template)
    assert shifts.count() == saved.shifts_created
    assert shifts.filter(starts_at__lt=at + timedelta(days=14)).count() == 10
    assert all(list(s.facilities.all()) == [chicago] for s in shifts)
    assert local_spans(dr_neuro_il)[0] == (chicago_time(2026, 11, 2, 23, 0), chicago_time(2026, 11, 3, 7, 0))


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"weekdays": []}, "weekdays"),
        ({"weekdays": [7]}, "weekdays"),
        ({"timezone": "Chicago"}, "timezone"),
        ({"name": "  "}, "name"),
        ({"valid_until": date(2025, 12, 31)}, "__all__"),
    ],
)
def test_an_invalid_template_is_refused_with_the_field_named(dr_neuro_il, bad, field):
    with pytest.raises(ValidationError) as refused:
        create_nighthawk(dr_neuro_il, at=chicago_time(2026, 11, 2, 12, 0), **bad)
    assert field in refused.value.message_dict
    assert not ShiftTemplate.objects.exists() and not Shift.objects.exists()


def test_editing_replaces_future_shifts_and_lets_the_running_one_finish(dr_neuro_il, chicago, prairie):
    # given a weekday nighthawk, and it is Tuesday 02:00 (Monday night's shift under way)
    created = create_nighthawk(dr_neuro_il, at=chicago_time(2026, 11, 2, 12, 0))
    now = chicago_time(2026, 11, 3, 2, 0)
    # when it is changed to 22:00–06:00 at Prairie only
    saved = shift_template_update(
        template_id=created.template.pk,
        name="Late nighthawk",
        weekdays=WEEKDAYS,
        start_time=time(22, 0),
        end_time=time(6, 0),
        timezone="America/Chicago",
        valid_from=date(2026, 1, 1),
        facilities=[prairie],
        at=now,
    )
    # then Monday night's shift keeps its 23:00–07:00, every later one is 22:00–06:00 at Prairie
    spans = local_spans(dr_neuro_il)
    assert spans[0] == (chicago_time(2026, 11, 2, 23, 0), chicago_time(2026, 11, 3, 7, 0))
    assert {(s.time(), e.time()) for s, e in spans[1:]} == {(time(22, 0), time(6, 0))}
    later = Shift.objects.filter(template=saved.template, starts_at__gt=now)
    assert all(list(s.facilities.all()) == [prairie] for s in later)
    assert saved.shifts_removed == created.shifts_created - 1  # all but the running one
    assert saved.shifts_created == later.count() == weekday_dates(date(2026, 11, 3), HORIZON_DAYS, WEEKDAYS)


def test_deactivating_takes_future_shifts_off_and_materialisation_leaves_it(dr_neuro_il):
    # given a weekday nighthawk, Monday night's shift under way
    created = create_nighthawk(dr_neuro_il, at=chicago_time(2026, 11, 2, 12, 0))
    now = chicago_time(2026, 11, 3, 2, 0)
    # when operations deactivate it
    saved = shift_template_deactivate(template_id=created.template.pk, at=now)
    # then only the running shift is left, and the template is kept, inactive
    assert saved.shifts_removed == created.shifts_created - 1
    assert local_spans(dr_neuro_il) == [(chicago_time(2026, 11, 2, 23, 0), chicago_time(2026, 11, 3, 7, 0))]
    assert ShiftTemplate.objects.get().active is False
    from worklist.coverage import shift_templates_materialise

    assert shift_templates_materialise(at=now) == 0


# --- time off: what it changed, and withdrawing it ------------------------------------------------------


def test_time_off_says_which_shifts_it_changed(dr_neuro_il, ops_omar):
    # given weekday nighthawks from Monday 2 Nov
    create_nighthawk(dr_neuro_il, at=chicago_time(2026, 11, 2, 12, 0))
    # when the reader is away from Tuesday 03:00 to Thursday 12:00
    result = time_off_record(
        radiologist=dr_neuro_il,
        starts_at=chicago_time(2026, 11, 3, 3, 0),
        ends_at=chicago_time(2026, 11, 5, 12, 0),
        reason="conference",
        recorded_by=ops_omar,
    )
    # then Monday night's shift is trimmed to 23:00–03:00 and Tuesday's and Wednesday's are removed
    changes = [(c.label, c.kind, c.before[0], c.after) for c in result.changes]
    assert changes == [
        (
            "Nighthawk",
            "trimmed",
            chicago_time(2026, 11, 2, 23, 0),
            ((chicago_time(2026, 11, 2, 23, 0), chicago_time(2026, 11, 3, 3, 0)),),
        ),
        ("Nighthawk", "removed", chicago_time(2026, 11, 3, 23, 0), ()),
        ("Nighthawk", "removed", chicago_time(2026, 11, 4, 23, 0), ()),
    ]


def test_withdrawn_time_off_puts_the_template_shifts_back(dr_neuro_il):
    # given weekday nighthawks and time off from Tuesday 03:00 to Thursday 12:00
    create_nighthawk(dr_neuro_il, at=chicago_time(2026, 11, 2, 12, 0))
    before = local_spans(dr_neuro_il)
    off = time_off_record(
        radiologist=dr_neuro_il,
        starts_at=chicago_time(2026, 11, 3, 3, 0),
        ends_at=chicago_time(2026, 11, 5, 12, 0),
        reason="conference",
    ).time_off
    # when it is withdrawn on Tuesday at 01:00, before it starts
    restored = time_off_cancel(time_off_id=off.pk, at=chicago_time(2026, 11, 3, 1, 0))
    # then Monday night runs to 07:00 again (in two pieces) and Tue/Wed nights are back
    assert restored == 3
    assert not TimeOff.objects.exists()
    spans = local_spans(dr_neuro_il)
    assert spans[:2] == [
        (chicago_time(2026, 11, 2, 23, 0), chicago_time(2026, 11, 3, 3, 0)),
        (chicago_time(2026, 11, 3, 3, 0), chicago_time(2026, 11, 3, 7, 0)),
    ]
    assert spans[2:] == before[1:]


def test_withdrawing_time_off_under_way_restores_from_now_and_respects_other_time_off(dr_neuro_il):
    # given weekday nighthawks, a week off from Monday, and a second day off on Wednesday
    create_nighthawk(dr_neuro_il, at=chicago_time(2026, 11, 2, 12, 0))
    week = time_off_record(
        radiologist=dr_neuro_il,
        starts_at=chicago_time(2026, 11, 2, 0, 0),
        ends_at=chicago_time(2026, 11, 9, 0, 0),
        reason="annual leave",
    ).time_off
    time_off_record(
        radiologist=dr_neuro_il,
        starts_at=chicago_time(2026, 11, 4, 12, 0),
        ends_at=chicago_time(2026, 11, 5, 12, 0),
        reason="course",
    )
    # when the week is withdrawn on Tuesday 02:00 (the reader came back early)
    time_off_cancel(time_off_id=week.pk, at=chicago_time(2026, 11, 3, 2, 0))
    # then Monday night counts from 02:00, Tue, Thu and Fri nights are back, Wednesday's stays off
    spans = [s for s in local_spans(dr_neuro_il) if s[0] < chicago_time(2026, 11, 9, 0, 0)]
    assert spans == [
        (chicago_time(2026, 11, 3, 2, 0), chicago_time(2026, 11, 3, 7, 0)),
        (chicago_time(2026, 11, 3, 23, 0), chicago_time(2026, 11, 4, 7, 0)),
        (chicago_time(2026, 11, 5, 23, 0), chicago_time(2026, 11, 6, 7, 0)),
        (chicago_time(2026, 11, 6, 23, 0), chicago_time(2026, 11, 7, 7, 0)),
    ]


def test_withdrawing_time_off_that_is_over_changes_no_shift(dr_neuro_il):
    create_nighthawk(dr_neuro_il, at=chicago_time(2026, 11, 2, 12, 0))
    off = time_off_record(
        radiologist=dr_neuro_il,
        starts_at=chicago_time(2026, 11, 3, 0, 0),
        ends_at=chicago_time(2026, 11, 3, 5, 0),
        reason="dentist",
    ).time_off
    count = Shift.objects.count()
    assert time_off_cancel(time_off_id=off.pk, at=chicago_time(2026, 11, 3, 6, 0) + timedelta(hours=1)) == 0
    assert Shift.objects.count() == count
