"""The daily expiry check: credentialing staff are told in-app and by e-mail when a credential enters
its 90/60/30-day window and when it is overdue — once each — and lapsed grants are closed."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
import time_machine
from django.core import mail

from credentialing.models import LicenceStatus, Notification, NotificationLevel, PrivilegeStatus
from credentialing.tasks import check_expiries
from radiology.schedule import PERIODIC_TASKS
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(mso_mary):
    from accounts.roles import Role

    mso_mary.email = "mary@readroom.example"
    mso_mary.save()
    mike = make_user("mso_mike", Role.CREDENTIALING, email="mike@readroom.example")
    return [mso_mary, mike]


@pytest.fixture
def expiring(neuro_il_credentials):
    licence = neuro_il_credentials["licence"]
    licence.expires_on = date(2027, 1, 15)
    licence.save()
    return neuro_il_credentials  # privileges at Lakeshore expire 2027-02-28


def run_at(when: datetime, capture) -> dict:
    with time_machine.travel(when, tick=False), capture(execute=True):
        return check_expiries.delay().get()


def test_thresholds_are_notified_once_each(staff, expiring, django_capture_on_commit_callbacks):
    mary = staff[0]
    # given 1 December: the licence is 45 days out (60-day window), the privileges 89 (90-day window)
    result = run_at(datetime(2026, 12, 1, 12, 0, tzinfo=UTC), django_capture_on_commit_callbacks)
    # then each staff member is told both, in-app and in one e-mail each
    assert result == {"notified": 4, "emails": 2, "lapsed": 0}
    messages = sorted(Notification.objects.filter(recipient=mary).values_list("message", flat=True))
    assert messages == [
        "Dr dr_neuro_il's IL licence 036-142857 expires on 2027-01-15 (in 45 days)",
        "Dr dr_neuro_il's privileges at Lakeshore Medical Center expire on 2027-02-28 (in 89 days)",
    ]
    assert sorted(m.to[0] for m in mail.outbox) == ["mary@readroom.example", "mike@readroom.example"]
    assert "IL licence 036-142857 expires on 2027-01-15" in mail.outbox[0].body

    # when the check runs again the same day (a restart, a second beat)
    again = run_at(datetime(2026, 12, 1, 18, 0, tzinfo=UTC), django_capture_on_commit_callbacks)
    # then nobody is told anything twice
    assert again == {"notified": 0, "emails": 0, "lapsed": 0}
    assert len(mail.outbox) == 2

    # when the licence enters its 30-day window
    later = run_at(datetime(2026, 12, 20, 12, 0, tzinfo=UTC), django_capture_on_commit_callbacks)
    # then only that is new
    assert later["notified"] == 2
    newest = Notification.objects.filter(recipient=mary).order_by("-id").first()
    assert newest.message == "Dr dr_neuro_il's IL licence 036-142857 expires on 2027-01-15 (in 26 days)"
    assert newest.level == NotificationLevel.WARNING


def test_an_expired_licence_is_overdue_once_and_closed(staff, expiring, django_capture_on_commit_callbacks):
    mary = staff[0]
    run_at(datetime(2026, 12, 20, 12, 0, tzinfo=UTC), django_capture_on_commit_callbacks)
    # given the day after the licence's expiry has begun even in Honolulu
    result = run_at(datetime(2027, 1, 16, 12, 0, tzinfo=UTC), django_capture_on_commit_callbacks)
    # then staff are told it is overdue, and its status says expired
    overdue = Notification.objects.get(recipient=mary, level=NotificationLevel.DANGER)
    assert (
        overdue.message == "Dr dr_neuro_il's IL licence 036-142857 expired on 2027-01-15 and was not renewed"
    )
    assert result["lapsed"] == 1
    expiring["licence"].refresh_from_db()
    assert expiring["licence"].status == LicenceStatus.EXPIRED
    # and the next day brings nothing new about it
    assert (
        run_at(datetime(2027, 1, 17, 12, 0, tzinfo=UTC), django_capture_on_commit_callbacks)["notified"] == 0
    )


def test_a_licence_is_not_closed_while_its_day_lasts_somewhere(
    staff, expiring, django_capture_on_commit_callbacks
):
    # 2027-01-16 06:00 UTC is still 15 January in Chicago: the licence is valid there until midnight
    run_at(datetime(2027, 1, 16, 6, 0, tzinfo=UTC), django_capture_on_commit_callbacks)
    expiring["licence"].refresh_from_db()
    assert expiring["licence"].status == LicenceStatus.ACTIVE


def test_a_renewal_rearms_the_thresholds(staff, expiring, django_capture_on_commit_callbacks):
    run_at(datetime(2026, 12, 1, 12, 0, tzinfo=UTC), django_capture_on_commit_callbacks)
    licence = expiring["licence"]
    licence.expires_on = date(2029, 1, 15)
    licence.save()
    # two years later the renewed licence reaches its 60-day window: that is a new event
    result = run_at(datetime(2028, 12, 1, 12, 0, tzinfo=UTC), django_capture_on_commit_callbacks)
    assert Notification.objects.filter(message__contains="expires on 2029-01-15").count() == 2
    assert result["notified"] >= 2


def test_privileges_past_expiry_lapse_with_an_overdue_notice(
    staff, expiring, django_capture_on_commit_callbacks
):
    # 1 March 2027, 07:00 in Chicago: the grant ended at midnight local time
    result = run_at(datetime(2027, 3, 1, 13, 0, tzinfo=UTC), django_capture_on_commit_callbacks)
    privilege = expiring["privilege"]
    privilege.refresh_from_db()
    assert privilege.status == PrivilegeStatus.LAPSED
    assert "Expired on 2027-02-28" in privilege.status_note
    assert result["lapsed"] >= 1
    assert Notification.objects.filter(
        recipient=staff[0],
        level=NotificationLevel.DANGER,
        message__contains="privileges at Lakeshore Medical Center",
    ).exists()


def test_the_check_runs_daily_from_the_one_schedule():
    entry = PERIODIC_TASKS["credentialing-expiries"]
    assert entry.task == "credentialing.tasks.check_expiries"
    assert entry.every.total_seconds() == 24 * 3600


def test_staff_read_their_notifications(client, staff, expiring, django_capture_on_commit_callbacks):
    run_at(datetime(2026, 12, 1, 12, 0, tzinfo=UTC), django_capture_on_commit_callbacks)
    mary = staff[0]
    client.force_login(mary)
    page = client.get("/credentialing/notifications/")
    assert b"IL licence 036-142857 expires on 2027-01-15" in page.content
    first = Notification.objects.filter(recipient=mary).first()
    client.post("/credentialing/notifications/", {"id": first.pk}, HTTP_HX_REQUEST="true")
    first.refresh_from_db()
    assert first.read_at is not None
