"""The operations rota page: templates and time off edited through a labelled form instead of the
admin's JSON, saved through the coverage services so the grid changes at once; operations only."""

from __future__ import annotations

from datetime import time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.contrib.messages import get_messages
from django.utils import timezone

from accounts.navigation import navigation_for
from credentialing.models import Subspecialty
from worklist.coverage import HORIZON_DAYS, shift_template_create, time_off_record
from worklist.models import Shift, ShiftTemplate, TimeOff

pytestmark = pytest.mark.django_db

CHICAGO = ZoneInfo("America/Chicago")


def nighthawk_form(reader, *, weekdays=(0, 1, 2, 3, 4, 5, 6), **extra) -> dict:
    return {
        "radiologist": reader.pk,
        "name": "Nighthawk",
        "weekdays": [str(d) for d in weekdays],
        "start_time": "23:00",
        "end_time": "07:00",
        "timezone": "America/Chicago",
        "valid_from": (timezone.now().astimezone(CHICAGO).date() - timedelta(days=1)).isoformat(),
        "valid_until": "",
        **extra,
    }


def existing_nighthawk(reader, **scope) -> ShiftTemplate:
    return shift_template_create(
        radiologist=reader,
        name="Nighthawk",
        weekdays=[0, 1, 2, 3, 4, 5, 6],
        start_time=time(23, 0),
        end_time=time(7, 0),
        timezone="America/Chicago",
        valid_from=timezone.now().date() - timedelta(days=2),
        at=timezone.now(),
        **scope,
    ).template


def grid_row(html: str, facility: str, subspecialty: str) -> str:
    return html.split(f'data-facility="{facility}" data-subspecialty="{subspecialty}"')[1].split("</tr>")[0]


def test_the_form_labels_every_field(client, ops_omar, chicago):
    client.force_login(ops_omar)
    html = client.get("/operations/rota/templates/new/").content.decode()
    for label in (
        "Reader",
        "Name",
        "Starts on",
        "Starts at (local time)",
        "Ends at (local time)",
        "Time zone",
    ):
        assert f"{label}" in html
    for day in ("Monday", "Sunday"):
        assert f'<label for="id_weekdays_{"0" if day == "Monday" else "6"}">' in html and day in html
    assert '<label for="id_facilities_0">' in html and "Lakeshore Medical Center (IL)" in html
    assert '<input type="time" name="start_time"' in html and '<input type="date" name="valid_from"' in html


def test_operations_create_a_nighthawk_and_the_grid_is_covered_at_once(
    client, ops_omar, dr_neuro_il, neuro_il_credentials, chicago
):
    # given the grid red for Lakeshore neuro: nobody on any shift
    client.force_login(ops_omar)
    before = grid_row(client.get("/operations/coverage/").content.decode(), "CHI-L1", "neuro")
    assert 'data-gap="yes"' in before
    # when operations create an every-night nighthawk for Lakeshore neuro through the form
    neuro = Subspecialty.objects.get(code="neuro")
    response = client.post(
        "/operations/rota/templates/new/",
        nighthawk_form(dr_neuro_il, facilities=[chicago.pk], subspecialties=[neuro.pk]),
    )
    # then it is saved with its shifts of the horizon, and the rota describes it
    assert response.status_code == 302 and response["Location"] == "/operations/rota/"
    template = ShiftTemplate.objects.get()
    assert template.weekdays == [0, 1, 2, 3, 4, 5, 6]
    assert Shift.objects.filter(template=template).count() >= HORIZON_DAYS
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert f"shift(s) of the next {HORIZON_DAYS} days are on the rota" in texts[0]
    rota = client.get("/operations/rota/").content.decode()
    assert "Every day 23:00–07:00 America/Chicago, neuro, Lakeshore Medical Center" in rota
    # and tomorrow's cell no longer has a gap at night (23:00–07:00 is covered)
    after = grid_row(client.get("/operations/coverage/").content.decode(), "CHI-L1", "neuro")
    tomorrow = (timezone.now().astimezone(CHICAGO) + timedelta(days=1)).date().isoformat()
    cell = after.split(f'data-day="{tomorrow}"')[1].split("</td>")[0]
    assert "00:00–07:00" not in cell and "07:00–23:00" in cell


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"weekdays": []}, "weekdays", "Tick at least one day the shift starts on."),
        ({"start_time": "25:00"}, "start_time", "Enter a time as HH:MM on the 24-hour clock, e.g. 23:00."),
        ({"timezone": "Mars/Olympus"}, "timezone", "Select a valid choice."),
        ({"valid_until": "2020-01-01"}, "valid_until", "The last day must be on or after the first day"),
        ({"name": ""}, "name", "Give the shift a name"),
    ],
)
def test_a_bad_template_form_says_what_to_do_and_saves_nothing(
    client, ops_omar, dr_neuro_il, change, field, message
):
    client.force_login(ops_omar)
    response = client.post("/operations/rota/templates/new/", nighthawk_form(dr_neuro_il, **change))
    assert response.status_code == 200
    assert message in " ".join(response.context["form"].errors[field])
    assert message.split(",")[0] in response.content.decode()
    assert not ShiftTemplate.objects.exists() and not Shift.objects.exists()


def test_editing_a_template_through_the_page(client, ops_omar, dr_neuro_il, chicago):
    # given a nighthawk on the rota
    template = existing_nighthawk(dr_neuro_il)
    client.force_login(ops_omar)
    page = client.get(f"/operations/rota/templates/{template.pk}/").content.decode()
    assert 'value="23:00"' in page and "checked" in page
    # when it is narrowed to weekends 22:00–06:00
    response = client.post(
        f"/operations/rota/templates/{template.pk}/",
        {
            **nighthawk_form(dr_neuro_il, weekdays=(5, 6)),
            "start_time": "22:00",
            "end_time": "06:00",
            "active": "on",
        },
    )
    # then the template and its future shifts follow
    assert response.status_code == 302
    template.refresh_from_db()
    assert (template.weekdays, template.start_time) == ([5, 6], time(22, 0))
    future = Shift.objects.filter(template=template, starts_at__gt=timezone.now())
    assert future.exists()
    assert {s.starts_at.astimezone(CHICAGO).weekday() for s in future} <= {5, 6}


def test_the_reader_of_a_template_cannot_be_changed(client, ops_omar, dr_neuro_il, dr_msk_wi):
    template = existing_nighthawk(dr_neuro_il)
    client.force_login(ops_omar)
    client.post(f"/operations/rota/templates/{template.pk}/", {**nighthawk_form(dr_msk_wi), "active": "on"})
    template.refresh_from_db()
    assert template.radiologist == dr_neuro_il


def test_deactivating_with_htmx_returns_the_refreshed_tables(client, ops_omar, dr_neuro_il):
    # given a nighthawk on the rota
    template = existing_nighthawk(dr_neuro_il)
    client.force_login(ops_omar)
    # when operations deactivate it from the list
    response = client.post(f"/operations/rota/templates/{template.pk}/deactivate/", HTTP_HX_REQUEST="true")
    # then the tables come back with it inactive and its future shifts gone
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert "inactive" in html and "Deactivated “Nighthawk”" in html
    assert not Shift.objects.filter(template=template, starts_at__gt=timezone.now()).exists()


def test_deactivating_needs_a_post(client, ops_omar, dr_neuro_il):
    template = existing_nighthawk(dr_neuro_il)
    client.force_login(ops_omar)
    assert client.get(f"/operations/rota/templates/{template.pk}/deactivate/").status_code == 405
    assert ShiftTemplate.objects.get().active


def test_time_off_through_the_page_lists_the_shifts_it_changed(client, ops_omar, dr_neuro_il):
    # given an every-night nighthawk
    existing_nighthawk(dr_neuro_il)
    tomorrow = (timezone.now().astimezone(CHICAGO) + timedelta(days=1)).date()
    client.force_login(ops_omar)
    # when operations record tomorrow 02:00 to the day after 12:00 off, written in Chicago time
    response = client.post(
        "/operations/rota/time-off/new/",
        {
            "radiologist": dr_neuro_il.pk,
            "starts_at": f"{tomorrow.isoformat()}T02:00",
            "ends_at": f"{(tomorrow + timedelta(days=1)).isoformat()}T12:00",
            "timezone": "America/Chicago",
            "reason": "conference",
        },
    )
    # then the time off is stored in that zone and the messages say what happened to each shift
    assert response.status_code == 302
    off = TimeOff.objects.get()
    assert off.starts_at.astimezone(CHICAGO).hour == 2 and off.recorded_by == ops_omar
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert "1 shift(s) removed, 1 trimmed, 0 split" in texts[0]
    assert any(
        t.startswith("Nighthawk ") and "trimmed, now" in t and t[:-3].endswith(" 02:00 C") for t in texts[1:]
    )
    assert any(t.endswith(": removed.") for t in texts[1:])


def test_time_off_without_a_reason_is_refused(client, ops_omar, dr_neuro_il):
    client.force_login(ops_omar)
    response = client.post(
        "/operations/rota/time-off/new/",
        {
            "radiologist": dr_neuro_il.pk,
            "starts_at": "2026-12-01T07:00",
            "ends_at": "2026-12-01T06:00",
            "timezone": "America/Chicago",
            "reason": "",
        },
    )
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert errors["reason"] == ["Give the reason for the time off, e.g. annual leave or sick."]
    assert errors["ends_at"] == ["The reader must be back after the time off starts."]
    assert not TimeOff.objects.exists()


def test_withdrawing_time_off_puts_the_shifts_back(client, ops_omar, dr_neuro_il):
    # given a nighthawk and two days off starting tomorrow
    template = existing_nighthawk(dr_neuro_il)
    start = timezone.now() + timedelta(days=1)
    count = Shift.objects.filter(template=template).count()
    off = time_off_record(
        radiologist=dr_neuro_il, starts_at=start, ends_at=start + timedelta(days=2), reason="sick"
    ).time_off
    client.force_login(ops_omar)
    assert f'data-time-off="{off.pk}"' in client.get("/operations/rota/").content.decode()
    # when it is withdrawn from the rota page
    response = client.post(f"/operations/rota/time-off/{off.pk}/withdraw/", HTTP_HX_REQUEST="true")
    # then it is gone and the nights are back
    assert response.status_code == 200 and "Withdrew" in response.content.decode()
    assert not TimeOff.objects.exists()
    assert Shift.objects.filter(template=template).count() >= count


# --- who may use it -------------------------------------------------------------------------------------

PAGES = ["/operations/rota/", "/operations/rota/templates/new/", "/operations/rota/time-off/new/"]


@pytest.mark.parametrize("page", PAGES)
def test_a_radiologist_is_refused(verified_client, neuro_reader, page):
    assert verified_client(neuro_reader).get(page).status_code == 403


@pytest.mark.parametrize("who", ["mso_mary", "admin_chicago", "director_dana"])
def test_other_roles_cannot_change_the_rota(request, client, who, dr_neuro_il):
    # given a nighthawk, and someone who is not operations
    template = existing_nighthawk(dr_neuro_il)
    user = request.getfixturevalue(who)
    client.force_login(user)
    if who == "director_dana":
        from tests.conftest import current_totp, enrol_totp

        device = enrol_totp(user)
        client.post("/account/verify/", {"token": current_totp(device)})
    # when they open the pages or post to them
    statuses = [client.get(page).status_code for page in PAGES]
    statuses.append(client.post("/operations/rota/templates/new/", nighthawk_form(dr_neuro_il)).status_code)
    statuses.append(client.post(f"/operations/rota/templates/{template.pk}/deactivate/").status_code)
    # then every one is refused and nothing changed
    assert statuses == [403] * 5
    assert ShiftTemplate.objects.get().active and ShiftTemplate.objects.count() == 1


def test_anonymous_is_sent_to_sign_in(client):
    assert client.get(PAGES[0]).status_code == 302
    assert client.post("/operations/rota/time-off/new/", {}).status_code == 302


def test_a_superuser_may_keep_the_rota(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", password="x" * 20))
    assert all(client.get(page).status_code == 200 for page in PAGES)


def test_the_rota_is_in_operations_navigation_only(ops_omar, neuro_reader, admin_chicago, mso_mary):
    def labels(user):
        return {item.label for item in navigation_for(user)}

    assert "Rota" in labels(ops_omar)
    assert "Rota" not in labels(neuro_reader) | labels(admin_chicago) | labels(mso_mary)
