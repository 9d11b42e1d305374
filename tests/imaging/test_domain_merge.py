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
