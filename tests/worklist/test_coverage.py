"""Coverage: repeating templates become Shift rows (DST-correct, idempotent), time off takes a reader
off shift with the engine's own reason, and the operations grid shows the gaps the rules leave."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from credentialing.eligibility import (
    FacilityFacts,
    ReasonCode,
    StudyFacts,
    assess,
    assess_facts,
    reader_facts,
)
from credentialing.models import Subspecialty
from radiology.schedule import PERIODIC_TASKS
from tests.credentialing.conftest import chicago_time
from tests.worklist.conftest import make_study, weekday_dates
from worklist.coverage import (
    HORIZON_DAYS,
    coverage_grid,
    interval_subtract,
    shift_template_apply,
    shift_templates_materialise,
    time_off_record,
)
from worklist.models import Shift, ShiftTemplate, TimeOff

pytestmark = pytest.mark.django_db


@pytest.fixture
def sub(db):
    """``sub("neuro")`` → the Subspecialty row."""
    return lambda code: Subspecialty.objects.get(code=code)


EVERY_DAY = [0, 1, 2, 3, 4, 5, 6]


def nighthawk(reader, *, weekdays=EVERY_DAY, facilities=(), subspecialties=(), **extra) -> ShiftTemplate:
    template = ShiftTemplate.objects.create(
        radiologist=reader,
        name="Nighthawk",
        weekdays=weekdays,
        start_time=time(23, 0),
        end_time=time(7, 0),
        timezone="America/Chicago",
        valid_from=extra.pop("valid_from", date(2026, 1, 1)),
        **extra,
    )
    template.facilities.set(facilities)
    template.subspecialties.set(subspecialties)
    return template


def shifts_of(reader) -> list[tuple[datetime, datetime]]:
    return list(
        Shift.objects.filter(radiologist=reader).order_by("starts_at").values_list("starts_at", "ends_at")
    )


# --- materialising templates --------------------------------------------------------------------------


def test_a_nighthawk_across_the_november_change_lasts_nine_hours(dr_neuro_il):
    # given a Saturday nighthawk, 23:00–07:00 Chicago time; clocks go back at 02:00 on Sun 1 Nov 2026
    template = nighthawk(dr_neuro_il, weekdays=[5])
    # when the rota is materialised from Friday
    created = shift_templates_materialise(at=chicago_time(2026, 10, 30, 12, 0), days=14)
    # then Sat 31 Oct 23:00 CDT (04:00 UTC) → Sun 07:00 CST (13:00 UTC) is nine hours, the next one eight
    assert created == 2
    assert shifts_of(dr_neuro_il) == [
        (datetime(2026, 11, 1, 4, 0, tzinfo=UTC), datetime(2026, 11, 1, 13, 0, tzinfo=UTC)),
        (datetime(2026, 11, 8, 5, 0, tzinfo=UTC), datetime(2026, 11, 8, 13, 0, tzinfo=UTC)),
    ]
    assert set(Shift.objects.values_list("template_id", flat=True)) == {template.pk}


def test_a_nighthawk_across_the_march_change_lasts_seven_hours(dr_neuro_il):
    # given the same template; clocks go forward at 02:00 on Sun 14 Mar 2027
    nighthawk(dr_neuro_il, weekdays=[5])
    # when materialised for the week of the change
    shift_templates_materialise(at=chicago_time(2027, 3, 12, 12, 0), days=3)
    # then Sat 13 Mar 23:00 CST (05:00 UTC) → Sun 07:00 CDT (12:00 UTC)
    [(start, end)] = shifts_of(dr_neuro_il)
    assert (start, end) == (datetime(2027, 3, 14, 5, 0, tzinfo=UTC), datetime(2027, 3, 14, 12, 0, tzinfo=UTC))
    assert end - start == timedelta(hours=7)


def test_materialising_again_creates_nothing_new(dr_neuro_il, sub):
    # given a weekday nighthawk limited to neuro, materialised once
    nighthawk(dr_neuro_il, weekdays=[0, 1, 2, 3, 4], subspecialties=[sub("neuro")])
    at = chicago_time(2026, 11, 2, 12, 0)
    first = shift_templates_materialise(at=at)
    # when the hourly task runs again, and an hour later
    again = shift_templates_materialise(at=at), shift_templates_materialise(at=at + timedelta(hours=1))
    # then the weekday nights of the horizon exist exactly once (ten in the first fortnight), each
    # limited to neuro
    assert first == weekday_dates(date(2026, 11, 2), HORIZON_DAYS, [0, 1, 2, 3, 4]) and again == (0, 0)
    assert Shift.objects.count() == first
    assert Shift.objects.filter(starts_at__lt=at + timedelta(days=14)).count() == 10
    assert all(
        list(s.subspecialties.values_list("code", flat=True)) == ["neuro"] for s in Shift.objects.all()
    )


def test_only_days_in_the_validity_window_are_materialised(dr_neuro_il):
    nighthawk(dr_neuro_il, valid_from=date(2026, 11, 3), valid_until=date(2026, 11, 5))
    shift_templates_materialise(at=chicago_time(2026, 11, 1, 12, 0))
    starts = [s.astimezone(chicago_time(2026, 1, 1).tzinfo).date() for s, _ in shifts_of(dr_neuro_il)]
    assert starts == [date(2026, 11, 3), date(2026, 11, 4), date(2026, 11, 5)]


def _audit_rows_of_shifts(since_id: int) -> list[tuple]:
    """The shifts' audit rows after ``since_id``, each shift named by its start (ids differ per run)."""
    from auditlog.models import LogEntry

    starts = {str(pk): start.isoformat() for pk, start in Shift.objects.values_list("pk", "starts_at")}
    rows = []
    for entry in LogEntry.objects.get_for_model(Shift).filter(pk__gt=since_id).order_by("pk"):
        changes = dict(entry.changes)
        if "id" in changes:
            changes["id"] = [None, starts[str(changes["id"][1])]]
        rows.append(
            (starts[entry.object_pk], entry.action, entry.object_repr, changes, entry.actor_id, entry.cid)
        )
    return rows


def test_materialising_in_bulk_writes_the_audit_rows_one_at_a_time_did(dr_neuro_il, ops_omar, chicago, sub):
    # the batch INSERTs (shifts, scope, audit) must leave the trail the per-row saves left: a CREATE row
    # and an m2m "add" row per scope field, in order, with the actor of the request
    from auditlog.models import LogEntry

    from accounts.audit import audit_as
    from worklist.coverage import _shift_from_template, _shifts_from_template

    template = nighthawk(dr_neuro_il, weekdays=[0, 2], facilities=[chicago], subspecialties=[sub("neuro")])
    at = chicago_time(2026, 11, 2, 12, 0)
    pieces = [
        ((datetime(2026, 11, 3, 5, 0, tzinfo=UTC), datetime(2026, 11, 3, 13, 0, tzinfo=UTC)), False),
        ((datetime(2026, 11, 5, 5, 0, tzinfo=UTC), datetime(2026, 11, 5, 9, 0, tzinfo=UTC)), True),
    ]
    mark = LogEntry.objects.order_by("pk").last().pk
    with audit_as(ops_omar):
        for piece, trimmed in pieces:
            _shift_from_template(template, piece, trimmed=trimmed)
    one_at_a_time = _audit_rows_of_shifts(mark)
    Shift.objects.all().delete()
    mark = LogEntry.objects.order_by("pk").last().pk
    with audit_as(ops_omar):
        assert _shifts_from_template(template, pieces) == 2
    in_bulk = _audit_rows_of_shifts(mark)
    assert len(in_bulk) == 6 and {row[4] for row in in_bulk} == {ops_omar.pk}
    assert [r[:4] for r in in_bulk] == [r[:4] for r in one_at_a_time]
    assert [list(s.facilities.all()) for s in Shift.objects.all()] == [[chicago], [chicago]]
    assert shift_templates_materialise(at=at, days=7) == 0


def test_a_batch_another_worker_overlapped_creates_only_the_rest(dr_neuro_il, chicago):
    # given one occurrence already written by another worker between our read and our INSERT
    from worklist.coverage import _shifts_from_template

    template = nighthawk(dr_neuro_il, facilities=[chicago])
    first = (datetime(2026, 11, 3, 5, 0, tzinfo=UTC), datetime(2026, 11, 3, 13, 0, tzinfo=UTC))
    second = (datetime(2026, 11, 4, 5, 0, tzinfo=UTC), datetime(2026, 11, 4, 13, 0, tzinfo=UTC))
    Shift.objects.create(radiologist=dr_neuro_il, starts_at=first[0], ends_at=first[1], template=template)
    # when the batch with both is written, the constraint refuses it and the shifts go one by one
    assert _shifts_from_template(template, [(first, False), (second, False)]) == 1
    # then each occurrence exists once, the new one with its scope
    assert shifts_of(dr_neuro_il) == [first, second]
    assert list(Shift.objects.get(starts_at=second[0]).facilities.all()) == [chicago]


def test_materialising_is_a_periodic_task():
    entry = PERIODIC_TASKS["shift-templates-materialise"]
    assert entry.task == "worklist.coverage_tasks.shift_templates_materialise"
    assert entry.every <= timedelta(hours=1)


def test_an_edited_template_replaces_its_future_shifts(dr_neuro_il):
    # given a nighthawk materialised for the horizon
    template = nighthawk(dr_neuro_il)
    at = chicago_time(2026, 11, 2, 12, 0)
    shift_templates_materialise(at=at)
    # when it becomes 22:00–06:00
    template.start_time, template.end_time = time(22, 0), time(6, 0)
    template.save()
    shift_template_apply(template_id=template.pk, at=at)
    # then every future shift starts at 22:00 Chicago time, once
    local_starts = {s.astimezone(chicago_time(2026, 1, 1).tzinfo).time() for s, _ in shifts_of(dr_neuro_il)}
    assert local_starts == {time(22, 0)} and Shift.objects.count() == HORIZON_DAYS  # one a night


# --- the 07:00 edge, in the facility's time zone ---------------------------------------------------------


def test_a_shift_written_as_ending_at_0700_ends_at_0700_facility_time(
    neuro_il_credentials, dr_neuro_il, chicago
):
    # given a nighthawk template materialised for a Tuesday night (standard time: UTC−6)
    nighthawk(dr_neuro_il)
    shift_templates_materialise(at=chicago_time(2026, 11, 10, 12, 0))
    study = make_study(chicago, code="70450", subspecialty=Subspecialty.objects.get(code="neuro"))
    # when asked one second before and exactly at 07:00 Chicago time on Wednesday
    before = assess(dr_neuro_il, study, chicago_time(2026, 11, 11, 6, 59, 59))
    at_seven = assess(dr_neuro_il, study, chicago_time(2026, 11, 11, 7, 0, 0))
    # then the reader is eligible until 06:59:59 and off shift from 07:00:00 (13:00 UTC)
    assert before.eligible
    assert not at_seven.eligible
    assert [r.code for r in at_seven.reasons] == [ReasonCode.SHIFT]
    assert at_seven.messages == ["not on shift at 07:00 CST"]


# --- time off -----------------------------------------------------------------------------------------


def test_time_off_in_the_middle_of_a_shift_splits_it_and_the_reader_goes_off_shift(
    neuro_il_credentials, dr_neuro_il, chicago, ops_omar
):
    # given a materialised nighthawk Tue 10 Nov 23:00 → Wed 07:00
    nighthawk(dr_neuro_il, weekdays=[1])
    shift_templates_materialise(at=chicago_time(2026, 11, 10, 12, 0), days=2)
    study = make_study(chicago, code="70450", subspecialty=Subspecialty.objects.get(code="neuro"))
    # when operations records 01:00–03:00 off for a family emergency
    result = time_off_record(
        radiologist=dr_neuro_il,
        starts_at=chicago_time(2026, 11, 11, 1, 0),
        ends_at=chicago_time(2026, 11, 11, 3, 0),
        reason="family emergency",
        recorded_by=ops_omar,
    )
    # then the shift is split around it, the reason noted on both pieces
    assert (result.removed, result.trimmed, result.split) == (0, 0, 1)
    assert shifts_of(dr_neuro_il) == [
        (chicago_time(2026, 11, 10, 23, 0), chicago_time(2026, 11, 11, 1, 0)),
        (chicago_time(2026, 11, 11, 3, 0), chicago_time(2026, 11, 11, 7, 0)),
    ]
    assert all("time off: family emergency" in n for n in Shift.objects.values_list("note", flat=True))
    # and the engine says "not on shift" during it, eligible around it
    during = assess(dr_neuro_il, study, chicago_time(2026, 11, 11, 2, 0))
    assert [r.code for r in during.reasons] == [ReasonCode.SHIFT]
    assert assess(dr_neuro_il, study, chicago_time(2026, 11, 11, 0, 30)).eligible
    assert assess(dr_neuro_il, study, chicago_time(2026, 11, 11, 3, 0)).eligible
    # and the hourly materialisation does not put the removed hours back
    assert shift_templates_materialise(at=chicago_time(2026, 11, 10, 12, 0), days=2) == 0
    assert len(shifts_of(dr_neuro_il)) == 2


def test_time_off_trims_removes_and_is_skipped_by_materialisation(dr_neuro_il):
    # given nighthawks on Tue and Wed nights
    nighthawk(dr_neuro_il, weekdays=[1, 2])
    shift_templates_materialise(at=chicago_time(2026, 11, 10, 12, 0), days=2)
    # when time off covers the end of Tuesday's and all of Wednesday's
    result = time_off_record(
        radiologist=dr_neuro_il,
        starts_at=chicago_time(2026, 11, 11, 5, 0),
        ends_at=chicago_time(2026, 11, 12, 12, 0),
        reason="conference",
    )
    # then Tuesday's is trimmed to 05:00 and Wednesday's removed
    assert (result.removed, result.trimmed, result.split) == (1, 1, 0)
    assert shifts_of(dr_neuro_il) == [(chicago_time(2026, 11, 10, 23, 0), chicago_time(2026, 11, 11, 5, 0))]
    # and a template added later for the same nights leaves the time off out
    second = ShiftTemplate.objects.create(
        radiologist=dr_neuro_il,
        name="Backup",
        weekdays=[2],
        start_time=time(20, 0),
        end_time=time(23, 0),
        timezone="America/Chicago",
        valid_from=date(2026, 1, 1),
    )
    assert shift_templates_materialise(at=chicago_time(2026, 11, 10, 12, 0), days=2) == 0
    assert not Shift.objects.filter(template=second).exists()


def test_time_off_needs_a_reason(dr_neuro_il):
    from worklist.coverage import InvalidTimeOff

    with pytest.raises(InvalidTimeOff):
        time_off_record(
            radiologist=dr_neuro_il,
            starts_at=chicago_time(2026, 11, 11, 1, 0),
            ends_at=chicago_time(2026, 11, 11, 3, 0),
            reason="  ",
        )
    assert not TimeOff.objects.exists()


def test_interval_subtract():
    t = [chicago_time(2026, 11, 11, h, 0) for h in range(10)]
    assert interval_subtract((t[1], t[5]), [(t[2], t[3])]) == [(t[1], t[2]), (t[3], t[5])]
    assert interval_subtract((t[1], t[5]), [(t[0], t[9])]) == []
    assert interval_subtract((t[1], t[5]), [(t[4], t[9]), (t[0], t[2])]) == [(t[2], t[4])]


# --- the coverage grid ----------------------------------------------------------------------------------


@pytest.fixture
def wi_reader_all_week(dr_msk_wi, msk_wi_credentials):
    """dr_msk_wi (WI licence, privileges at Lakeview only) on one long shift covering the grid."""
    Shift.objects.create(
        radiologist=dr_msk_wi,
        starts_at=chicago_time(2026, 11, 1, 0, 0),
        ends_at=chicago_time(2026, 12, 1, 0, 0),
    )
    return dr_msk_wi


def row(grid, facility, code):
    return next(r for r in grid.rows if r.facility == facility and r.subspecialty.code == code)


def test_an_il_facility_is_red_when_only_a_wi_licensed_reader_is_on(wi_reader_all_week, chicago, lakeview):
    # when operations looks at the grid on Monday 9 Nov, noon
    grid = coverage_grid(at=chicago_time(2026, 11, 9, 12, 0))
    # then Lakeshore (IL) has no eligible reader at any hour: every cell is red, all day long
    chicago_msk = row(grid, chicago, "msk")
    assert all(cell.is_gap for cell in chicago_msk.cells)
    assert chicago_msk.cells[1].gap_labels == ["00:00–24:00"]
    assert chicago_msk.cells[0].gap_labels == ["12:00–24:00"]  # today: from now
    # while Lakeview (WI) is covered for MSK and general work by the WI reader
    assert not any(cell.is_gap for cell in row(grid, lakeview, "msk").cells)
    assert row(grid, lakeview, "msk").cells[2].readers == ("Dr dr_msk_wi",)


def test_the_grid_shows_the_hours_a_nighthawk_leaves_open(neuro_il_credentials, dr_neuro_il, chicago):
    # given an IL neuroradiologist on nighthawk every night (privileges at Lakeshore, scope: all)
    nighthawk(dr_neuro_il)
    at = chicago_time(2026, 11, 9, 12, 0)
    shift_templates_materialise(at=at)
    # when the grid is computed
    grid = coverage_grid(at=at)
    # then Lakeshore neuro is red in the daytime hours only; MSK (not his subspecialty, but Lakeshore
    # accepts general readers — he is not one) is red all day
    tuesday = row(grid, chicago, "neuro").cells[1]
    assert tuesday.gap_labels == ["07:00–23:00"]
    assert row(grid, chicago, "msk").cells[1].gap_labels == ["00:00–24:00"]


def test_the_grid_agrees_with_assess_at_every_hour(
    neuro_il_credentials, dr_neuro_il, wi_reader_all_week, chicago, lakeview, sub
):
    # given a neuro nighthawk limited to Lakeshore, and the WI reader all week
    nighthawk(dr_neuro_il, facilities=[chicago], subspecialties=[sub("neuro")])
    at = chicago_time(2026, 11, 9, 12, 0)
    shift_templates_materialise(at=at)
    grid = coverage_grid(at=at)
    readers = reader_facts(
        [dr_neuro_il.pk, wi_reader_all_week.pk], shifts_from=at, shifts_until=at + timedelta(days=8)
    )
    # then at every hour of the week, a cell's gap ⇔ assess_facts finds nobody eligible
    for grid_row in grid.rows:
        sub_ = grid_row.subspecialty
        study = StudyFacts(FacilityFacts.of(grid_row.facility), sub_.pk, sub_.code, sub_.name, None)
        for cell in grid_row.cells:
            t = cell.start
            while t < cell.end:
                in_gap = any(s <= t < e for s, e in cell.gaps)
                anyone = any(assess_facts(r, study, t).eligible for r in readers.values())
                assert in_gap != anyone, (grid_row.facility.code, grid_row.subspecialty.code, t)
                t += timedelta(minutes=30)


def test_the_grid_costs_the_same_queries_for_3_or_40_facilities(
    wi_reader_all_week, chicago, prairie, lakeview, django_assert_max_num_queries
):
    from facilities.models import Facility, FacilityKind

    at = chicago_time(2026, 11, 9, 12, 0)
    with django_assert_max_num_queries(12) as few:
        coverage_grid(at=at)
    Facility.objects.bulk_create(
        Facility(code=f"IL-{n:02}", name=f"Hospital {n}", state="IL", kind=FacilityKind.COMMUNITY)
        for n in range(37)
    )
    with django_assert_max_num_queries(len(few.captured_queries)):
        grid = coverage_grid(at=at)
    assert len({r.facility for r in grid.rows}) == 40
