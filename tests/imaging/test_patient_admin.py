"""A patient corrected by hand in the Django admin (issue #13, docs/orders.md "A patient corrected in
the admin"): the save goes through ``imaging.services.patient_correct``, so the identity rules HL7 and
the images follow apply — an issuer of the MRN domain is kept under the domain's name, an identifier
another patient holds merges the two as an ADT^A40 does — and every write is audited with the reason."""

from __future__ import annotations

from datetime import date

import pytest
from auditlog.models import LogEntry

from imaging.facts import PatientIdentifier
from imaging.models import Order, Patient, Study
from imaging.services import patient_find
from tests.worklist.conftest import make_study

pytestmark = pytest.mark.django_db


@pytest.fixture
def support(django_user_model):
    return django_user_model.objects.create_superuser("root_support", "root@example.org", "x" * 16)


@pytest.fixture
def lakeshore(chicago):
    """Chicago's MRN domain: the EMR's LAKESHORE, and the PACS's issuer LS_PACS meaning the same."""
    chicago.patient_id_authority = "LAKESHORE"
    chicago.patient_id_issuers = ["LS_PACS"]
    chicago.save()
    return chicago


@pytest.fixture
def quinlan(lakeshore) -> Patient:
    """The EMR's patient, with her order."""
    patient = Patient.objects.create(
        facility=lakeshore,
        mrn="MRN5001",
        assigning_authority="LAKESHORE",
        family_name="Quinlan",
        given_name="Jane",
        birth_date=date(1961, 4, 2),
        sex="F",
    )
    Order.objects.create(
        facility=lakeshore, patient=patient, accession_number="A5001", procedure_code="70450"
    )
    return patient


@pytest.fixture
def typo(lakeshore) -> tuple[Patient, Study]:
    """A stray record the modality made: the technologist typed MRN5010 for MRN5001."""
    stray = Patient.objects.create(facility=lakeshore, mrn="MRN5010", assigning_authority="LAKESHORE")
    study = make_study(lakeshore)
    Study.objects.filter(pk=study.pk).update(patient=stray)
    return stray, study


def _url(patient: Patient) -> str:
    return f"/admin/imaging/patient/{patient.pk}/change/"


def _form(client, patient: Patient, **changes) -> dict:
    """The change form as the page fills it, with ``changes``."""
    page = client.get(_url(patient))
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    data.update(changes)
    return data


def _errors(response) -> str:
    form = response.context["adminform"].form
    return " ".join(str(e) for errors in form.errors.values() for e in errors)


def test_correcting_a_typed_mrn_to_anothers_merges_into_that_patient_as_an_a40_does(
    client, support, quinlan, typo
):
    stray, study = typo
    client.force_login(support)
    # when support corrects the stray record's MRN to the EMR patient's, without saying why
    refused = client.post(_url(stray), _form(client, stray, mrn="MRN5001"))
    # then the admin asks for the reason and nothing changes
    assert refused.status_code == 200 and "Say why" in _errors(refused)
    assert Patient.objects.get(pk=stray.pk).mrn == "MRN5010"
    # when they say why
    reason = "MRN typed wrong at the CT console (ticket 4411)"
    response = client.post(_url(stray), _form(client, stray, mrn="MRN5001", reason=reason), follow=True)
    assert response.status_code == 200
    # then the stray record is merged into the EMR's patient, as an ADT^A40 would: the images move,
    # the stray record is a link kept under the typed MRN, so later images with it land right
    assert Study.objects.get(pk=study.pk).patient_id == quinlan.pk
    stray = Patient.objects.get(pk=stray.pk)
    assert (stray.merged_into_id, stray.mrn) == (quinlan.pk, "MRN5010")
    for mrn in ("MRN5001", "MRN5010"):
        found = patient_find(facility=quinlan.facility, identifier=PatientIdentifier(mrn, "LS_PACS"))
        assert found == quinlan, mrn
    # and the EMR's patient keeps its identifier and demographics
    kept = Patient.objects.get(pk=quinlan.pk)
    assert (kept.mrn, kept.family_name, kept.sex, kept.merged_into_id) == ("MRN5001", "Quinlan", "F", None)
    # and the admin says what happened
    shown = " ".join(str(m) for m in response.context["messages"])
    assert f"Merged into QUINLAN, Jane (MRN MRN5001) (patient {quinlan.pk})" in shown
    # and each write is audited under support with the reason
    moved = LogEntry.objects.get_for_object(Study.objects.get(pk=study.pk)).latest("timestamp")
    assert (moved.actor, moved.changes_text) == (support, reason)
    assert [str(v) for v in moved.changes_dict["patient"]] == [str(stray.pk), str(quinlan.pk)]
    link = LogEntry.objects.get_for_object(stray).filter(action=LogEntry.Action.UPDATE).latest("timestamp")
    assert (link.actor, link.changes_text) == (support, reason) and "merged_into" in link.changes_dict
    # and the link is read-only from now on: shown, not changed
    assert client.get(_url(stray)).status_code == 200
    assert client.post(_url(stray), {"mrn": "MRN9999", "reason": "x"}).status_code == 403
    assert Patient.objects.get(pk=stray.pk).mrn == "MRN5010"


def test_another_name_of_the_domain_is_kept_under_the_domains_own(client, support, typo):
    stray, _study = typo
    client.force_login(support)
    # when support types the PACS's issuer (a name of the domain) with a free MRN
    data = _form(client, stray, mrn="MRN5011", assigning_authority="ls_pacs", reason="typed wrong")
    assert client.post(_url(stray), data).status_code == 302
    # then the record is re-keyed under the domain's own authority, as an order or image would be
    stray = Patient.objects.get(pk=stray.pk)
    assert (stray.mrn, stray.assigning_authority, stray.merged_into_id) == ("MRN5011", "LAKESHORE", None)
    entry = LogEntry.objects.get_for_object(stray).latest("timestamp")
    assert entry.changes_dict["mrn"] == ["MRN5010", "MRN5011"] and entry.changes_text == "typed wrong"


def test_another_authoritys_identifier_stays_apart(client, support, quinlan, typo):
    stray, _study = typo
    client.force_login(support)
    # another hospital's MRN5001 is another person: a re-key, never a merge
    data = _form(client, stray, mrn="MRN5001", assigning_authority="ST_ELSEWHERE", reason="their MRN")
    assert client.post(_url(stray), data).status_code == 302
    stray = Patient.objects.get(pk=stray.pk)
    assert (stray.assigning_authority, stray.merged_into_id) == ("ST_ELSEWHERE", None)


def test_a_merge_with_demographic_edits_is_refused_and_changes_nothing(client, support, quinlan, typo):
    stray, study = typo
    client.force_login(support)
    data = _form(client, stray, mrn="MRN5001", family_name="Quinlen", reason="typed wrong")
    response = client.post(_url(stray), data)
    assert response.status_code == 200 and "Save the identifier alone" in _errors(response)
    assert Patient.objects.get(pk=stray.pk).merged_into_id is None
    assert Study.objects.get(pk=study.pk).patient_id == stray.pk


def test_demographics_are_saved_field_by_field_and_the_identity_fields_stay(
    client, support, quinlan, prairie
):
    client.force_login(support)
    # when support corrects the middle name (a form: the page shows every value; blank is blank)
    data = _form(client, quinlan, middle_name="Ann", facility=prairie.pk, merged_into=quinlan.pk)
    assert client.post(_url(quinlan), data).status_code == 302
    # then only that field is written, audited with the default reason; the facility and the merge
    # link are not fields of the form (a posted value is ignored)
    saved = Patient.objects.get(pk=quinlan.pk)
    assert (saved.middle_name, saved.facility_id, saved.merged_into_id) == ("Ann", quinlan.facility_id, None)
    entry = LogEntry.objects.get_for_object(saved).latest("timestamp")
    assert set(entry.changes_dict) == {"middle_name"}
    assert (entry.actor, entry.changes_text) == (support, "corrected in the admin")
    # and a demographics edit needs no reason, a blank one clears the field
    assert client.post(_url(quinlan), _form(client, quinlan, middle_name="")).status_code == 302
    assert Patient.objects.get(pk=quinlan.pk).middle_name == ""


def test_no_record_is_added_by_hand_nor_moved_to_another_patient(client, support, quinlan, typo):
    _stray, study = typo
    client.force_login(support)
    for model in ("patient", "order", "study"):
        assert client.get(f"/admin/imaging/{model}/add/").status_code == 403, model
    # a study's patient and order are not fields: a posted value is ignored
    page = client.get(f"/admin/imaging/study/{study.pk}/change/")
    assert {"patient", "order", "facility"}.isdisjoint(page.context["adminform"].form.fields)
    order = Order.objects.get(patient=quinlan)
    page = client.get(f"/admin/imaging/order/{order.pk}/change/")
    assert {"patient", "facility"}.isdisjoint(page.context["adminform"].form.fields)


def test_only_support_reaches_the_patient_admin(client, ops_omar, admin_chicago, quinlan):
    # staff of other roles (operations, a facility's admin) have no patient-record permission
    for user in (ops_omar, admin_chicago):
        client.force_login(user)
        assert client.get(_url(quinlan)).status_code == 403, user
        assert client.post(_url(quinlan), {"mrn": "X", "reason": "x"}).status_code == 403, user
    assert Patient.objects.get(pk=quinlan.pk).mrn == "MRN5001"
    client.logout()
    assert client.get(_url(quinlan)).status_code == 302  # anonymous: to the login page
