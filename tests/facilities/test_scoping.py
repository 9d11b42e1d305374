"""A facility admin sees and changes only their own facility — in the admin, the pages and the API."""

import json

import pytest

from facilities.selectors import facilities_visible_to

pytestmark = pytest.mark.django_db


def test_facility_admin_sees_only_own_facility_in_admin_changelist(client, admin_chicago, chicago, lakeview):
    # given Chicago's administrator
    client.force_login(admin_chicago)
    # when they open the facility list in the admin
    response = client.get("/admin/facilities/facility/")
    # then Chicago is listed and Lakeview is not
    assert response.status_code == 200
    assert b"Lakeshore Medical Center" in response.content
    assert b"Lakeview Outpatient Imaging" not in response.content


def test_facility_admin_cannot_open_other_facility_in_admin(client, admin_chicago, lakeview):
    client.force_login(admin_chicago)
    response = client.get(f"/admin/facilities/facility/{lakeview.pk}/change/")
    # the admin answers "doesn't exist" (redirect to the index with a message), never the form
    assert response.status_code == 302
    assert b"Lakeview" not in client.get(response["Location"]).content


def test_facility_admin_cannot_post_changes_to_other_facility(client, admin_chicago, lakeview):
    client.force_login(admin_chicago)
    client.post(f"/admin/facilities/facility/{lakeview.pk}/change/", {"name": "Hijacked"})
    lakeview.refresh_from_db()
    assert lakeview.name == "Lakeview Outpatient Imaging"


def test_facility_admin_edits_own_facility_but_not_its_contract(client, admin_chicago, chicago):
    client.force_login(admin_chicago)
    page = client.get(f"/admin/facilities/facility/{chicago.pk}/change/")
    assert page.status_code == 200
    # the contract targets are shown read-only: no input for them
    assert b'name="sla_stroke_minutes"' not in page.content
    response = client.post(
        f"/admin/facilities/facility/{chicago.pk}/change/",
        {
            "name": "Lakeshore Medical Center — Main Campus",
            "timezone": "America/Chicago",
            "sla_stroke_minutes": 999,
        },
    )
    assert response.status_code == 302
    chicago.refresh_from_db()
    assert chicago.name == "Lakeshore Medical Center — Main Campus"
    assert chicago.sla_stroke_minutes == 20


def test_a_facility_admin_cannot_change_where_priors_come_from(client, admin_chicago, chicago):
    # given Chicago's FHIR report source, set by operations
    source = {"name": "EHR", "method": "fhir", "base_url": "https://fhir.lakeshore.example.org/r4",
              "auth": {"type": "bearer", "token_env": "LAKESHORE_FHIR_TOKEN"}}  # fmt: skip
    chicago.prior_sources = [source]
    chicago.save(update_fields=["prior_sources"])
    client.force_login(admin_chicago)
    # then Chicago's own admin sees no input for it, and a crafted POST (another URL, and a variable
    # naming ReadRoom's own secret) changes nothing: the worker sends that secret to that URL
    page = client.get(f"/admin/facilities/facility/{chicago.pk}/change/")
    assert page.status_code == 200 and b'name="prior_sources"' not in page.content
    assert b'name="dicom_move_destinations"' not in page.content
    stolen = {
        **source,
        "base_url": "https://attacker.example.net",
        "auth": {"type": "bearer", "token_env": "X"},
    }
    client.post(
        f"/admin/facilities/facility/{chicago.pk}/change/",
        {"name": chicago.name, "timezone": "America/Chicago", "prior_sources": json.dumps([stolen])},
    )
    chicago.refresh_from_db()
    assert chicago.prior_sources == [source]


def test_operations_may_set_a_fhir_source_in_the_admin_but_never_a_literal_token(client, ops_omar, chicago):
    client.force_login(ops_omar)
    page = client.get(f"/admin/facilities/facility/{chicago.pk}/change/")
    assert b'name="prior_sources"' in page.content
    literal = [{"name": "EHR", "method": "fhir", "base_url": "https://fhir.lakeshore.example.org/r4",
                "auth": {"type": "bearer", "token": "eyJhbGciOi"}}]  # fmt: skip
    form = facility_admin_form(chicago, ops_omar)
    refused = client.post(
        f"/admin/facilities/facility/{chicago.pk}/change/", {**form, "prior_sources": json.dumps(literal)}
    )
    assert refused.status_code == 200 and "{type: bearer, token_env}" in refused.content.decode()
    chicago.refresh_from_db()
    assert chicago.prior_sources == []
    named = [{**literal[0], "auth": {"type": "bearer", "token_env": "LAKESHORE_FHIR_TOKEN"}}]
    saved = client.post(
        f"/admin/facilities/facility/{chicago.pk}/change/", {**form, "prior_sources": json.dumps(named)}
    )
    assert saved.status_code == 302, saved.content.decode()[-3000:]
    chicago.refresh_from_db()
    assert chicago.prior_sources == named


def facility_admin_form(facility, user) -> dict:
    """The change form's fields as the admin shows them to ``user``, filled with what is stored."""
    from django.contrib.admin.sites import site
    from django.forms.models import model_to_dict
    from django.test import RequestFactory

    from facilities.models import Facility

    request = RequestFactory().get("/")
    request.user = user
    fields = site._registry[Facility].get_form(request, facility).base_fields
    values = {k: v for k, v in model_to_dict(facility).items() if k in fields and v is not None}
    for key, value in values.items():
        if isinstance(value, list | dict):
            values[key] = json.dumps(value)
    values.update({f"{p}-TOTAL_FORMS": "0" for p in ("hl7_senders", "dicom_senders")})
    values.update({f"{p}-INITIAL_FORMS": "0" for p in ("hl7_senders", "dicom_senders")})
    return values


def test_facility_pages_hide_other_facilities(client, admin_chicago, chicago, lakeview):
    client.force_login(admin_chicago)
    listing = client.get("/facilities/")
    assert b"Lakeshore Medical Center" in listing.content
    assert b"Lakeview" not in listing.content
    assert client.get("/facilities/CHI-L1/").status_code == 200
    # another client's facility is indistinguishable from a missing one
    assert client.get("/facilities/WI-LAKEVIEW/").status_code == 404
    assert client.get("/facilities/NO-SUCH/").status_code == 404


def test_facility_api_is_scoped(client, admin_lakeview, chicago, lakeview):
    client.force_login(admin_lakeview)
    listing = client.get("/api/v1/facilities/").json()
    assert [f["code"] for f in listing["results"]] == ["WI-LAKEVIEW"]
    assert client.get("/api/v1/facilities/CHI-L1/").status_code == 404
    detail = client.get("/api/v1/facilities/WI-LAKEVIEW/").json()
    assert detail["sla_targets_minutes"]["STROKE"] == 20


def test_api_refuses_anonymous(client, chicago):
    assert client.get("/api/v1/facilities/").status_code in (401, 403)


def test_operations_and_mso_see_every_facility(ops_omar, mso_mary, chicago, prairie, lakeview):
    assert facilities_visible_to(ops_omar).count() == 3
    assert facilities_visible_to(mso_mary).count() == 3


def test_radiologist_gets_no_facility_pages(client, dr_msk_wi, chicago):
    # a radiologist's facilities come from their privileges, not from this list
    assert facilities_visible_to(dr_msk_wi).count() == 0
    client.force_login(dr_msk_wi)
    # dr_msk_wi has no authenticator yet: sent to enrol before anything else
    response = client.get("/facilities/CHI-L1/")
    assert response.status_code == 302
    assert response["Location"].startswith("/account/security/")


def test_facility_admin_cannot_add_facilities(client, admin_chicago):
    client.force_login(admin_chicago)
    assert client.get("/admin/facilities/facility/add/").status_code == 403
