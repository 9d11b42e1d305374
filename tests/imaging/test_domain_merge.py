"""Duplicates found after an issuer joins a facility's MRN domain later (issue #13, docs/orders.md):
the PACS's records and the EMR's of one MRN become one patient, as migration imaging/0013 did for the
first domains — by ``manage.py patients_domain_merge`` or an onboarding re-apply, audited."""

from __future__ import annotations

from io import StringIO

import pytest
from auditlog.models import LogEntry
from django.core.management import call_command

from facilities.models import Facility
from imaging.facts import PatientIdentifier
from imaging.models import Order, Patient, Study
from imaging.services import DOMAIN_MERGE_REASON, patient_find
from tests.facilities.test_onboarding import EXAMPLE, example, onboard, write
from tests.worklist.conftest import make_study

pytestmark = pytest.mark.django_db


def _records(facility, authority: str, pacs: str) -> tuple[Patient, Patient, Study]:
    """The EMR's patient (with the order) and the PACS's (with the images) for one MRN."""
    emr = Patient.objects.create(facility=facility, mrn="MRN5001", assigning_authority=authority)
    Order.objects.create(facility=facility, patient=emr, accession_number="A5001", procedure_code="70450")
    images = Patient.objects.create(facility=facility, mrn="MRN5001", assigning_authority=pacs)
    study = make_study(facility)
    Study.objects.filter(pk=study.pk).update(patient=images)
    return emr, images, study


def _merge(*args: str) -> str:
    out = StringIO()
    call_command("patients_domain_merge", *args, stdout=out)
    return out.getvalue()


def test_the_command_merges_what_a_later_issuer_made_one_person(chicago, ops_omar):
    # given the EMR's and the PACS's records of MRN5001, and another authority's MRN5001
    chicago.patient_id_authority = "LAKESHORE"
    chicago.save()
    emr, images, study = _records(chicago, "LAKESHORE", "LS_PACS")
    other = Patient.objects.create(facility=chicago, mrn="MRN5001", assigning_authority="ST_ELSEWHERE")
    assert _merge() == "No duplicates.\n"  # the PACS is not part of the domain yet
    # when the interface analyst names the PACS's issuer part of the domain (in the admin)
    chicago.patient_id_issuers = ["LS_PACS"]
    chicago.save()
    # then a dry run lists the merge and writes nothing
    assert _merge("--dry-run") == (
        f"CHI-L1: would merge MRN MRN5001: {images.pk} (LS_PACS) into {emr.pk}\n1 patient would merge.\n"
    )
    assert Study.objects.get(pk=study.pk).patient_id == images.pk
    # and the merge moves the images to the EMR's patient and leaves the PACS record as a link
    output = _merge("--facility", "CHI-L1", "--actor", ops_omar.username)
    assert output.endswith("1 patient merged.\n")
    assert Study.objects.get(pk=study.pk).patient_id == emr.pk
    assert Patient.objects.get(pk=images.pk).merged_into_id == emr.pk
    assert Patient.objects.get(pk=other.pk).merged_into_id is None  # another hospital's MRN stays
    # and the PACS's identifier finds the one patient from now on
    found = patient_find(facility=chicago, identifier=PatientIdentifier("MRN5001", "ls_pacs"))
    assert found == emr
    # and every move is audited with the reason and the operator
    moved = LogEntry.objects.get_for_object(Study.objects.get(pk=study.pk)).latest("timestamp")
    assert (moved.actor, moved.changes_text) == (ops_omar, DOMAIN_MERGE_REASON)
    assert [str(v) for v in moved.changes_dict["patient"]] == [str(images.pk), str(emr.pk)]
    link = LogEntry.objects.get_for_object(Patient.objects.get(pk=images.pk)).latest("timestamp")
    assert link.changes_text == DOMAIN_MERGE_REASON and "merged_into" in link.changes_dict
    # and it is idempotent
    assert _merge() == "No duplicates.\n"


def test_an_onboarding_re_apply_that_adds_an_issuer_merges_and_says_so(tmp_path):
    # given Birch Lake onboarded, with an old RIS's records (BLMH_OLD_RIS) beside the EMR's
    onboard(EXAMPLE)
    birch = Facility.objects.get(code="WI-BIRCHLAKE")
    emr, old, study = _records(birch, "BLMH", "BLMH_OLD_RIS")
    # when the file is re-applied naming the old RIS part of the MRN domain
    data = example()
    data["patients"]["issuers"] = [*data["patients"]["issuers"], "BLMH_OLD_RIS"]
    output = onboard(write(tmp_path, data))
    # then the change and the merge it caused are listed, and the records are one patient
    assert "patients.issuers:" in output
    assert f"patients: merged MRN MRN5001 (BLMH_OLD_RIS) into patient {emr.pk}" in output
    assert Study.objects.get(pk=study.pk).patient_id == emr.pk
    assert Patient.objects.get(pk=old.pk).merged_into_id == emr.pk
    # and a re-apply that changes nothing merges nothing
    assert "unchanged" in onboard(write(tmp_path, data))


def _admin_form(client, facility) -> dict:
    """The facility's admin change form as the page fills it (main form and the sender inlines)."""
    page = client.get(f"/admin/facilities/facility/{facility.pk}/change/")
    assert page.status_code == 200
    data = {}
    form = page.context["adminform"].form
    for name in form.fields:
        value = form[name].value()
        if value is None:
            continue
        data[name] = value  # as the page renders it (BoundField.value is prepared)
    for inline in page.context["inline_admin_formsets"]:
        formset = inline.formset
        for name, value in formset.management_form.initial.items():
            data[f"{formset.prefix}-{name}"] = value
        for sub in formset.forms:
            for name in sub.fields:
                value = sub[name].value()
                if value not in (None, False):
                    data[f"{sub.prefix}-{name}"] = value
    return data


def test_saving_the_domain_in_the_admin_merges_as_onboarding_does(client, chicago, ops_omar):
    # given the EMR's and the PACS's records of MRN5001, and another authority's
    chicago.patient_id_authority = "LAKESHORE"
    chicago.save()
    emr, images, study = _records(chicago, "LAKESHORE", "LS_PACS")
    other = Patient.objects.create(facility=chicago, mrn="MRN5001", assigning_authority="ST_ELSEWHERE")
    client.force_login(ops_omar)
    # when the interface analyst names the PACS's issuer in the admin and saves
    data = _admin_form(client, chicago)
    data["patient_id_issuers"] = '["LS_PACS"]'
    response = client.post(f"/admin/facilities/facility/{chicago.pk}/change/", data, follow=True)
    # then the save merged the two records of one person, and the admin says so
    assert response.status_code == 200
    assert Facility.objects.get(pk=chicago.pk).patient_id_issuers == ["LS_PACS"]
    assert Study.objects.get(pk=study.pk).patient_id == emr.pk
    assert Patient.objects.get(pk=images.pk).merged_into_id == emr.pk
    assert Patient.objects.get(pk=other.pk).merged_into_id is None
    shown = [str(m) for m in response.context["messages"]]
    assert f"patients: merged MRN MRN5001 (LS_PACS) into patient {emr.pk}" in shown
    # and every row it moved is audited under the analyst, with the reason
    moved = LogEntry.objects.get_for_object(Study.objects.get(pk=study.pk)).order_by("-timestamp").first()
    assert moved.actor == ops_omar and DOMAIN_MERGE_REASON in moved.changes_text
    # and a second save with the domain unchanged merges nothing more
    again = client.post(
        f"/admin/facilities/facility/{chicago.pk}/change/", _admin_form(client, chicago), follow=True
    )
    assert not [m for m in again.context["messages"] if "merged" in str(m)]


def test_an_hl7_sender_added_in_the_admin_joins_its_msh4_to_the_domain(client, chicago, django_user_model):
    # given records under a new RIS's MSH-4 (it puts its own name in PID-3.4) and the EMR's
    chicago.patient_id_authority = "LAKESHORE"  # the EMR's name stays the domain's own
    chicago.save()
    emr, ris, study = _records(chicago, "LAKESHORE", "NEW_RIS")
    root = django_user_model.objects.create_superuser("root", "root@example.org", "x")
    client.force_login(root)
    # when a superuser (the HL7 sender inlines are theirs) adds the RIS in the facility's inline
    data = _admin_form(client, chicago)
    prefix = "hl7_senders"
    n = int(data[f"{prefix}-TOTAL_FORMS"])
    data.update(
        {
            f"{prefix}-TOTAL_FORMS": n + 1,
            f"{prefix}-{n}-sending_application": "RIS",
            f"{prefix}-{n}-sending_facility": "NEW_RIS",
        }
    )
    response = client.post(f"/admin/facilities/facility/{chicago.pk}/change/", data)
    # then the MSH-4 is a name of the domain and the two records are one patient
    assert response.status_code == 302
    assert chicago.hl7_senders.filter(sending_facility="NEW_RIS").exists()
    # (the survivor is the record under the domain's own authority, the EMR's)
    assert Study.objects.get(pk=study.pk).patient_id == emr.pk
    assert Patient.objects.get(pk=ris.pk).merged_into_id == emr.pk


def test_a_facility_admin_cannot_change_the_domain_so_nothing_merges(client, chicago, admin_chicago):
    _emr, images, study = _records(chicago, chicago.patient_id_domain()[0], "LS_PACS")
    client.force_login(admin_chicago)
    data = _admin_form(client, chicago)
    data["patient_id_issuers"] = '["LS_PACS"]'  # read-only for them: ignored
    assert client.post(f"/admin/facilities/facility/{chicago.pk}/change/", data).status_code == 302
    assert "patient_id_issuers" not in _admin_form(client, chicago)  # not a field they may post
    assert Facility.objects.get(pk=chicago.pk).patient_id_issuers == []
    assert Study.objects.get(pk=study.pk).patient_id == images.pk
