"""The MSO workspace pages: the matrix, the applications queue, the expiry windows, the dossier's
forms (every field labelled) and the privilege workflow through the page."""

from __future__ import annotations

import re
from datetime import date

import pytest
import time_machine

from credentialing import services
from credentialing.models import FacilityCredentialing, FacilityPrivilege, PrivilegeStatus, RadiologistProfile
from tests.credentialing.conftest import chicago_time
from tests.credentialing.factories import LicenceFactory

pytestmark = pytest.mark.django_db

NOW = chicago_time(2026, 12, 1, 10, 0)


@pytest.fixture
def mso(client, mso_mary):
    with time_machine.travel(NOW, tick=False):
        client.force_login(mso_mary)
        yield client


def test_matrix_colours_by_status_and_days_to_expiry(
    mso, neuro_il_credentials, msk_wi_credentials, dr_msk_wi, chicago
):
    # given Lakeshore privileges 89 days from expiry and an open application for the MSK reader there
    services.privilege_apply(actor=None, profile=dr_msk_wi.radiologist_profile, facility=chicago)
    # when the MSO opens the workspace
    page = mso.get("/credentialing/").content.decode()
    # then each cell shows the state, coloured
    assert 'class="cell tone-soon"' in page and ">89 d<" in page
    assert 'class="cell tone-ok"' in page  # Lakeview, 303 days
    assert 'class="cell tone-pending"' in page and ">Applied<" in page


def test_matrix_filter_answers_with_the_partial(mso, neuro_il_credentials, msk_wi_credentials):
    response = mso.get("/credentialing/?q=msk", HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert "<html" not in body
    assert "dr_msk_wi" in body and "dr_neuro_il" not in body


def test_empty_matrix_says_why(mso, chicago):
    page = mso.get("/credentialing/").content
    assert b"No radiologist has a dossier yet" in page


def test_applications_queue_lists_missing_items(mso, mso_mary, dr_msk_wi, lakeview):
    services.facility_requirements_set(
        actor=mso_mary, facility=lakeview, labels=["NPDB query", "Peer references"]
    )
    privilege = services.privilege_apply(
        actor=mso_mary, profile=dr_msk_wi.radiologist_profile, facility=lakeview, applied_on=date(2026, 11, 1)
    )
    services.checklist_item_complete(actor=mso_mary, item=privilege.checklist.get(label="NPDB query"))
    page = mso.get("/credentialing/applications/").content.decode()
    assert "Lakeview Outpatient Imaging" in page
    assert '<li class="missing">Peer references</li>' in page
    assert '<li class="missing">NPDB query</li>' not in page
    assert "30 days" in page


def test_expiring_windows(mso, neuro_il_credentials, dr_neuro_il):
    LicenceFactory(
        profile=dr_neuro_il.radiologist_profile, state="WI", number="WI-77", expires_on=date(2026, 12, 20)
    )
    within_30 = mso.get("/credentialing/expiring/?within=30", HTTP_HX_REQUEST="true").content.decode()
    assert "WI licence WI-77" in within_30
    assert "privileges at Lakeshore" not in within_30  # 89 days away
    within_90 = mso.get("/credentialing/expiring/?within=90").content.decode()
    assert "privileges at Lakeshore Medical Center" in within_90


def test_every_form_field_is_labelled(mso, dr_neuro_il, neuro_il_credentials):
    profile = dr_neuro_il.radiologist_profile
    pages = [
        f"/credentialing/profiles/{profile.pk}/licences/new/",
        f"/credentialing/profiles/{profile.pk}/boards/new/",
        f"/credentialing/profiles/{profile.pk}/fellowships/new/",
        f"/credentialing/profiles/{profile.pk}/dea/new/",
        f"/credentialing/profiles/{profile.pk}/malpractice/new/",
        f"/credentialing/profiles/{profile.pk}/licences/{neuro_il_credentials['licence'].pk}/verify/",
        f"/credentialing/profiles/{profile.pk}/privileges/new/",
        f"/credentialing/privileges/{neuro_il_credentials['privilege'].pk}/",
        f"/credentialing/profiles/{profile.pk}/",
        "/credentialing/facilities/CHI-L1/",
    ]
    for url in pages:
        html = mso.get(url).content.decode()
        labelled = set(re.findall(r'<label[^>]*for="([^"]+)"', html))
        inputs = re.findall(r'<(?:input|select|textarea)[^>]*\bid="([^"]+)"', html)
        visible = [
            i
            for i in inputs
            if not re.search(rf'id="{i}"[^>]*type="hidden"|type="hidden"[^>]*id="{i}"', html)
        ]
        unlabelled = [i for i in visible if i not in labelled and not i.startswith("id_q")]
        assert not unlabelled, (url, unlabelled)


def test_approve_through_the_page_says_what_is_missing(mso, mso_mary, dr_msk_wi, lakeview):
    privilege = services.privilege_apply(
        actor=mso_mary, profile=dr_msk_wi.radiologist_profile, facility=lakeview
    )
    mso.post(f"/credentialing/privileges/{privilege.pk}/review/")
    response = mso.post(f"/credentialing/privileges/{privilege.pk}/approve/", {"granted_on": "2026-12-01"})
    assert response.status_code == 409
    assert b"required checklist items are still open" in response.content
    # the checklist is completed row by row (HTMX swaps the row)
    for item in privilege.checklist.all():
        row = mso.post(f"/credentialing/checklist/{item.pk}/", HTTP_HX_REQUEST="true").content.decode()
        assert row.startswith(f'<tr id="item-{item.pk}">') and "Done" in row
    response = mso.post(f"/credentialing/privileges/{privilege.pk}/approve/", {"granted_on": "2026-12-01"})
    assert response.status_code == 302
    assert FacilityPrivilege.objects.get(pk=privilege.pk).status == PrivilegeStatus.APPROVED


def test_facility_settings_are_edited_by_the_mso(mso, chicago):
    response = mso.post(
        "/credentialing/facilities/CHI-L1/",
        {
            "mso_contact_name": "Pat Reyes",
            "mso_contact_email": "mso@lakeshore.example",
            "mso_contact_phone": "+1 312 555 0100",
            "reappointment_months": "24",
            "accepts_proxy": "on",
            "requirements": "Signed application\nNPDB query\n",
        },
    )
    assert response.status_code == 302
    assert services.required_checklist_labels(chicago) == ["Signed application", "NPDB query"]
    assert FacilityCredentialing.objects.get(facility=chicago).accepts_proxy is True


def test_open_a_dossier_for_a_new_radiologist(mso, sub):
    from accounts.roles import Role
    from tests.conftest import make_user

    newcomer = make_user("dr_new", Role.RADIOLOGIST)
    response = mso.post(
        "/credentialing/profiles/new/",
        {"user": newcomer.pk, "npi": "1234567893", "subspecialties": [sub("chest").pk]},
    )
    assert response.status_code == 302
    assert RadiologistProfile.objects.get(user=newcomer).npi == "1234567893"
