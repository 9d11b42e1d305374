"""Credential flags on the MSO's pages (issue 19): a reader whose licence in force is unverified, or
whose malpractice cover is missing, lapsed or unverified, is flagged with the reason in the matrix
(however the privilege reads) and in the coverage forecast — and only credentialing readers see them."""

from __future__ import annotations

from datetime import date

import pytest
import time_machine

from credentialing.models import MalpracticeCoverage
from tests.credentialing.conftest import chicago_time

pytestmark = pytest.mark.django_db

NOW = chicago_time(2026, 12, 1, 10, 0)


@pytest.fixture
def mso(client, mso_mary):
    with time_machine.travel(NOW, tick=False):
        client.force_login(mso_mary)
        yield client


@pytest.fixture
def unverified_neuro(neuro_il_credentials, dr_neuro_il):
    """dr_neuro_il approved at Lakeshore, but the IL licence is not verified and there is no cover."""
    licence = neuro_il_credentials["licence"]
    licence.verified_at, licence.verification_method = None, ""
    licence.save()
    MalpracticeCoverage.objects.filter(profile=dr_neuro_il.radiologist_profile).delete()
    return neuro_il_credentials


def test_matrix_flags_an_approved_reader_with_unverified_licence_and_no_cover(
    mso, unverified_neuro, msk_wi_credentials
):
    page = mso.get("/credentialing/").content.decode()
    # the privilege still reads as granted (89 days to expiry) …
    assert 'class="cell tone-soon"' in page and ">89 d<" in page
    # … but the row says what is wrong, and the cell that it bars says it cannot be read
    assert "⚑ IL licence 036-142857 not verified" in page
    assert "⚑ no malpractice cover" in page
    assert page.count('data-testid="credential-flag"') == 1  # dr_msk_wi is verified and covered
    assert (
        'data-testid="cell-flag" title="Lakeshore Medical Center requires verified credentials: '
        'IL licence 036-142857 not verified; no malpractice cover"' in page
    )


def test_a_verified_covered_reader_is_not_flagged(mso, neuro_il_credentials):
    page = mso.get("/credentialing/").content.decode()
    assert "credential-flag" not in page and "cell-flag" not in page


def test_lapsed_cover_is_flagged_but_a_facility_reading_before_verification_is_not_barred(
    mso, msk_wi_credentials, dr_msk_wi, lakeview
):
    MalpracticeCoverage.objects.filter(profile=dr_msk_wi.radiologist_profile).update(
        expires_on=date(2026, 11, 15)
    )
    lakeview.reads_before_verification = True
    lakeview.save()
    page = mso.get("/credentialing/").content.decode()
    assert "⚑ malpractice cover lapsed on 2026-11-15" in page
    assert "cell-flag" not in page  # Lakeview lets them read: the engine does not bar them there
    forecast = mso.get("/credentialing/forecast/").content.decode()
    assert "still reads at Lakeview Outpatient Imaging" in forecast


def test_forecast_lists_flagged_readers_and_where_they_are_not_eligible(mso, unverified_neuro):
    page = mso.get("/credentialing/forecast/").content.decode()
    assert 'data-testid="forecast-flags"' in page
    assert "IL licence 036-142857 not verified; no malpractice cover" in page
    assert "not eligible at Lakeshore Medical Center until verified" in page


def test_forecast_says_when_nobody_is_flagged(mso, neuro_il_credentials):
    page = mso.get("/credentialing/forecast/").content.decode()
    assert 'data-testid="forecast-flags-empty"' in page


@pytest.mark.parametrize("url", ["/credentialing/", "/credentialing/forecast/"])
def test_facility_admin_and_reader_cannot_see_the_flags(
    client, verified_client, url, admin_chicago, dr_neuro_il, unverified_neuro
):
    assert client.get(url).status_code == 302  # anonymous: to the sign-in page
    client.force_login(admin_chicago)
    refused = [client.get(url)]
    refused.append(verified_client(dr_neuro_il).get(url))  # the flagged reader, past the second factor
    for response in refused:
        assert response.status_code == 403
        assert b"not verified" not in response.content


def test_the_daily_check_tells_the_mso_of_a_flagged_reader_once_per_set_of_problems(
    mso_mary, unverified_neuro, dr_neuro_il
):
    from credentialing.models import Notification, NotificationLevel
    from credentialing.services import expiries_check

    def notices() -> list[Notification]:
        return list(
            Notification.objects.filter(recipient=mso_mary, key__startswith="verification:").order_by("pk")
        )

    # when the daily check runs twice on a reader with an unverified licence and no cover
    expiries_check(at=NOW)
    expiries_check(at=NOW)
    # then the MSO has one notice, with the engine's words and where it bars them
    (notice,) = notices()
    assert notice.message == (
        "Dr dr_neuro_il is not eligible at Lakeshore Medical Center until verified: "
        "IL licence 036-142857 not verified; no malpractice cover"
    )
    assert notice.level == NotificationLevel.WARNING
    assert notice.url == f"/credentialing/profiles/{dr_neuro_il.radiologist_profile.pk}/"
    # when the licence is verified, what is left is a new state: one more notice, about the cover
    licence = unverified_neuro["licence"]
    licence.verified_at, licence.verification_method = NOW, "source_website"
    licence.save()
    expiries_check(at=NOW)
    assert [n.message.split(": ", 1)[1] for n in notices()[1:]] == ["no malpractice cover"]
