"""Expiry notices (issue 19): the days ahead are a setting, a fresh demo already tells the MSO of the
privileges 20 days from expiry, and a licence past its date makes its holder ineligible and tells the
MSO it is overdue."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from credentialing.demo import CHICAGO
from credentialing.eligibility import ReasonCode, assess
from credentialing.models import LicenceStatus, Notification, NotificationLevel
from credentialing.selectors import LATEST_US_ZONE, expiry_windows
from credentialing.services import expiries_check
from radiology.demo import demo_load
from tests.worklist.conftest import make_study

pytestmark = pytest.mark.django_db


def licence_expiring_in(credentials, days: int):
    licence = credentials["licence"]
    licence.expires_on = timezone.now().astimezone(LATEST_US_ZONE).date() + timedelta(days=days)
    licence.save()
    return licence


def test_the_notice_days_are_a_setting(settings, mso_mary, neuro_il_credentials):
    licence_expiring_in(neuro_il_credentials, 100)  # privileges expire 2027-02-28: beyond 120 days
    settings.READROOM_CREDENTIAL_NOTICE_DAYS = (30, 60, 90)
    assert expiry_windows() == (90, 60, 30)
    expiries_check(at=timezone.now())
    assert not Notification.objects.filter(recipient=mso_mary, message__contains="licence").exists()
    # when the office asks for 120 days' notice, the same licence is notified at once, under 120
    settings.READROOM_CREDENTIAL_NOTICE_DAYS = (120,)
    expiries_check(at=timezone.now())
    notice = Notification.objects.get(recipient=mso_mary, message__contains="licence")
    assert notice.key.endswith(":120") and "(in 100 days)" in notice.message


def test_a_fresh_demo_tells_the_mso_of_what_expires_soon():
    demo_load()
    messages = list(Notification.objects.filter(recipient__username="mso").values_list("message", flat=True))
    assert any("privileges at Lakeview" in m and "(in 20 days)" in m for m in messages), messages
    # the demo dates its licence 25 days from Chicago's today; a licence's days are counted from
    # the latest US zone's (Honolulu's) today, a day behind Chicago's from 06:00 to 10:00 UTC
    now = timezone.now()
    behind = (now.astimezone(CHICAGO).date() - now.astimezone(LATEST_US_ZONE).date()).days
    assert any("licence 036-171932" in m and f"(in {25 + behind} days)" in m for m in messages), messages


def test_an_expired_licence_removes_eligibility_and_the_mso_is_told(
    mso_mary, dr_neuro_il, neuro_il_credentials, chicago
):
    study = make_study(chicago, modalities="CT")
    now = timezone.now()
    licence_expiring_in(neuro_il_credentials, 5)
    assert ReasonCode.LICENCE not in {r.code for r in assess(dr_neuro_il, study, now).reasons}
    # when the licence's date passes without a renewal and the daily check runs
    licence = licence_expiring_in(neuro_il_credentials, -1)
    run = expiries_check(at=now)
    # then the reader is not eligible, for the licence, and the MSO has an overdue notice
    reasons = assess(dr_neuro_il, study, now).reasons
    assert ReasonCode.LICENCE in {r.code for r in reasons}, reasons
    assert not assess(dr_neuro_il, study, now).eligible
    licence.refresh_from_db()
    assert licence.status != LicenceStatus.ACTIVE and run.lapsed >= 1
    overdue = Notification.objects.get(
        recipient=mso_mary, key__endswith=":overdue", message__contains="licence"
    )
    assert overdue.level == NotificationLevel.DANGER and "expired on" in overdue.message
