"""The identity rules hold in the database itself, where concurrent ingest cannot slip past them."""

import pytest
from django.db import IntegrityError, transaction

from imaging.models import Instance, Order, Patient, Series, Study

pytestmark = pytest.mark.django_db


@pytest.fixture
def patient(chicago) -> Patient:
    return Patient.objects.create(
        facility=chicago, mrn="000123", assigning_authority="LAKESHORE", family_name="Doe"
    )


def _order(facility, patient, accession):
    return Order.objects.create(
        facility=facility, patient=patient, accession_number=accession, procedure_code="70450"
    )


def test_mrn_unique_per_assigning_authority(chicago, patient):
    with pytest.raises(IntegrityError), transaction.atomic():
        Patient.objects.create(facility=chicago, mrn="000123", assigning_authority="LAKESHORE")
    # the same MRN from another authority is another patient
    Patient.objects.create(facility=chicago, mrn="000123", assigning_authority="LAKESHORE-PEDS")


def test_accession_unique_per_facility(chicago, lakeview, patient):
    _order(chicago, patient, "ACC1001")
    with pytest.raises(IntegrityError), transaction.atomic():
        _order(chicago, patient, "ACC1001")
    other = Patient.objects.create(facility=lakeview, mrn="9", assigning_authority="LV")
    _order(lakeview, other, "ACC1001")  # another facility may reuse the number


def test_study_uid_unique_and_study_accession_unique_per_facility(chicago, lakeview):
    Study.objects.create(facility=chicago, study_instance_uid="1.2.3.4", accession_number="ACC1")
    with pytest.raises(IntegrityError), transaction.atomic():
        Study.objects.create(facility=lakeview, study_instance_uid="1.2.3.4")
    with pytest.raises(IntegrityError), transaction.atomic():
        Study.objects.create(facility=chicago, study_instance_uid="1.2.3.5", accession_number="ACC1")
    # studies that arrived without an accession do not collide with each other
    Study.objects.create(facility=chicago, study_instance_uid="1.2.3.6", accession_number="")
    Study.objects.create(facility=chicago, study_instance_uid="1.2.3.7", accession_number="")


def test_sop_instance_uid_unique(chicago):
    study = Study.objects.create(facility=chicago, study_instance_uid="1.2.9")
    series = Series.objects.create(study=study, series_instance_uid="1.2.9.1")
    fields = dict(
        series=series,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        storage_path="x",
        storage_key_id="k1",
    )
    from django.utils import timezone

    Instance.objects.create(sop_instance_uid="1.2.9.1.1", received_at=timezone.now(), **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        Instance.objects.create(sop_instance_uid="1.2.9.1.1", received_at=timezone.now(), **fields)


def test_facility_sla_target_defaults_and_override(chicago, lakeview):
    from datetime import timedelta

    assert chicago.sla_target("STROKE") == timedelta(minutes=20)
    assert chicago.sla_target("ROUTINE") == timedelta(hours=24)
    lakeview.sla_routine_minutes = 48 * 60
    assert lakeview.sla_target("ROUTINE") == timedelta(hours=48)


def test_facility_refuses_non_iana_timezone(chicago):
    from django.core.exceptions import ValidationError

    chicago.timezone = "Central Time"
    with pytest.raises(ValidationError, match="IANA"):
        chicago.full_clean()


def test_patient_age(chicago):
    from datetime import date

    p = Patient(facility=chicago, mrn="1", assigning_authority="A", birth_date=date(1960, 3, 1))
    assert p.age_on(date(2026, 2, 28)) == 65
    assert p.age_on(date(2026, 3, 1)) == 66
