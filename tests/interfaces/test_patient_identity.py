"""One patient per identity (issue #13, docs/orders.md): an MRN is unique within the facility's
identity domain, and the images' Issuer of Patient ID (0010,0021) and the order's PID-3.4 name that
domain through the facility's configuration. Real images through dcmtk storescu, real orders and
ADT^A40 merges over MLLP."""

from __future__ import annotations

import dataclasses
import random
import shutil
from pathlib import Path

import pytest
from auditlog.models import LogEntry
from django.apps import apps

from imaging.models import Order, Patient, Study
from interfaces.simulator import exam_random, series_datasets
from tests import hl7_data
from tests.interfaces.test_dicom_scp import dcmtk
from tests.interfaces.test_hl7_listener import exchange, msa

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed"),
]


def _images(tmp_path: Path, *, mrn: str, issuer: str = "", accession: str = "", seed: int = 7) -> str:
    """Two CT slices of one exam as the modality writes them; the study's UID."""
    exam = exam_random(random.Random(seed), "CHI-L1", stroke_rate=0.0)
    exam = dataclasses.replace(exam, mrn=mrn, accession=accession or exam.accession)
    for ds in series_datasets(exam, slices=2, size=64):
        ds.IssuerOfPatientID = issuer
        ds.save_as(tmp_path / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return exam.study_uid


def _store(dicom_scp, tmp_path: Path) -> None:
    host, port, aet = dicom_scp
    files = sorted(map(str, tmp_path.glob("*.dcm")))
    result = dcmtk("storescu", "-aet", "LAKESHORE_CT1", "-aec", aet, host, str(port), *files)
    assert result.returncode == 0, result.stderr


def test_images_before_their_order_land_on_the_orders_patient(dicom_scp, hl7_listener, tmp_path):
    # given images that came first, with the modality's empty Issuer of Patient ID
    study_uid = _images(tmp_path, mrn="MRN5150", accession="A5150")
    _store(dicom_scp, tmp_path)
    assert Patient.objects.get(mrn="MRN5150").assigning_authority == "LAKESHORE"
    # when the order comes with PID-3.4 = LAKESHORE (the hospital's MSH-4)
    (ack,) = exchange(hl7_listener, hl7_data.orm(accession="A5150", mrn="MRN5150"))
    assert msa(ack)[0] == "AA"
    # then images and order resolve to one patient: no orphan left behind
    study = Study.objects.get(study_instance_uid=study_uid)
    order = Order.objects.get(accession_number="A5150")
    assert Patient.objects.filter(mrn="MRN5150").count() == 1
    assert study.patient == order.patient == Patient.objects.get(mrn="MRN5150")
    assert (order.patient.family_name, order.patient.assigning_authority) == ("QUINLAN", "LAKESHORE")


def test_configured_issuers_are_one_domain_and_others_stay_apart(dicom_scp, hl7_listener, tmp_path, chicago):
    # given the PACS writes its own issuer name, which onboarding lists as the hospital's
    chicago.patient_id_issuers = ["LKS_PACS"]
    chicago.save()
    exchange(hl7_listener, hl7_data.orm(accession="A5151", mrn="MRN5151"))
    # when images come with that issuer, and another exam with another hospital's MRN 5151
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ours = _images(tmp_path / "a", mrn="MRN5151", issuer="lks_pacs", accession="X1", seed=8)
    theirs = _images(tmp_path / "b", mrn="MRN5151", issuer="ST_ELSEWHERE", accession="X2", seed=9)
    _store(dicom_scp, tmp_path / "a")
    _store(dicom_scp, tmp_path / "b")
    # then ours joins the order's patient; the other authority's identifier is another person
    order = Order.objects.get(accession_number="A5151")
    assert Study.objects.get(study_instance_uid=ours).patient == order.patient
    other = Study.objects.get(study_instance_uid=theirs).patient
    assert other != order.patient and other.assigning_authority == "ST_ELSEWHERE"


def test_a40_links_the_merged_identity_and_both_identifiers_find_the_patient(
    dicom_scp, hl7_listener, tmp_path
):
    # given two records of one person, each with an order
    exchange(hl7_listener, hl7_data.orm(accession="A5201", mrn="MRN5201"))
    exchange(hl7_listener, hl7_data.orm(accession="A5202", placer="P5202", filler="F5202", mrn="MRN5202"))
    # when the EMR merges MRN5202 (MRG-1, no issuer: the hospital's own) into MRN5201, and an MRN we
    # never saw (MRN5299) into it as well
    a40 = hl7_data.adt_a40(surviving="MRN5201", prior="MRN5202").replace("MRN5202^^^LAKESHORE^MR", "MRN5202")
    never_seen = hl7_data.adt_a40(surviving="MRN5201", prior="MRN5299")
    assert [msa(a)[0] for a in exchange(hl7_listener, a40, never_seen)] == ["AA", "AA"]
    # then the prior's order moved, and each merged identity is a link to the survivor
    survivor = Patient.objects.get(mrn="MRN5201")
    assert Order.objects.get(accession_number="A5202").patient == survivor
    assert Patient.objects.get(mrn="MRN5202").merged_into == survivor
    assert Patient.objects.get(mrn="MRN5299").merged_into == survivor
    # and images that still carry an old MRN, and a later order with it, land on the survivor
    study_uid = _images(tmp_path, mrn="MRN5299", accession="A5203")
    _store(dicom_scp, tmp_path)
    assert Study.objects.get(study_instance_uid=study_uid).patient == survivor
    exchange(hl7_listener, hl7_data.orm(accession="A5204", placer="P5204", filler="F5204", mrn="MRN5202"))
    assert Order.objects.get(accession_number="A5204").patient == survivor
    assert Patient.objects.filter(merged_into=None, mrn__startswith="MRN52").count() == 1


def test_the_data_migration_merges_the_duplicates_made_before(chicago_interfaces):
    """imaging 0013's merge, run on duplicates as the old code made them (the images' record under
    the facility code, the order's under PID-3.4)."""
    from importlib import import_module

    migration = import_module("imaging.migrations.0013_patient_identity_domains_merge_duplicates")
    chicago = chicago_interfaces
    from_images = Patient.objects.create(facility=chicago, mrn="MRN6001", assigning_authority="CHI-L1")
    from_order = Patient.objects.create(
        facility=chicago, mrn="MRN6001", assigning_authority="LAKESHORE", family_name="QUINLAN"
    )
    foreign = Patient.objects.create(facility=chicago, mrn="MRN6001", assigning_authority="ST_ELSEWHERE")
    lonely = Patient.objects.create(facility=chicago, mrn="MRN6002", assigning_authority="CHI-L1")
    order = Order.objects.create(
        facility=chicago, patient=from_order, accession_number="A6001", procedure_code="X"
    )
    study = Study.objects.create(
        facility=chicago,
        patient=from_images,
        order=order,
        study_instance_uid="1.2.3.6001",
        accession_number="A6001",
    )
    # when the migration runs
    migration.merge_duplicates(apps, None)
    # then the images' record is merged into the order's, its study moved, and each move audited
    study.refresh_from_db()
    from_images.refresh_from_db()
    assert study.patient == from_order and from_images.merged_into == from_order
    assert LogEntry.objects.get_for_object(study).filter(changes_text__contains="identity domain").exists()
    assert LogEntry.objects.get_for_object(from_images).filter(changes__icontains="merged_into").exists()
    # a single record is re-keyed under the domain's authority; another authority's is left alone
    lonely.refresh_from_db()
    foreign.refresh_from_db()
    assert lonely.assigning_authority == "LAKESHORE" and lonely.merged_into is None
    assert foreign.merged_into is None and foreign.assigning_authority == "ST_ELSEWHERE"
    # and running it again changes nothing
    before = LogEntry.objects.count()
    migration.merge_duplicates(apps, None)
    assert LogEntry.objects.count() == before


def test_every_name_of_the_domain_finds_the_patient_through_the_apis(chicago_interfaces, lakeview, ops_omar):
    """REST ``issuer=`` and FHIR ``identifier=system|value`` take any name of the facility's
    domain (the PACS's issuer finds the patient kept under the EMR's PID-3.4); another facility's
    patient with the same MRN is found only by its own issuer."""
    from fhir.resources.R4B.bundle import Bundle

    from tests.api_records import token_client

    chicago = chicago_interfaces
    chicago.patient_id_issuers = ["LKS_PACS"]
    chicago.save()
    ours = Patient.objects.create(facility=chicago, mrn="MRN9001", assigning_authority="LAKESHORE")
    theirs = Patient.objects.create(facility=lakeview, mrn="MRN9001", assigning_authority="WI-LAKEVIEW")
    study = Study.objects.create(
        facility=chicago, patient=ours, study_instance_uid="1.2.3.9001", accession_number="A9001"
    )
    other = Study.objects.create(
        facility=lakeview, patient=theirs, study_instance_uid="1.2.3.9002", accession_number="A9002"
    )
    api = token_client(ops_omar)

    def study_ids(issuer: str) -> set[int]:
        body = api.get(f"/api/v1/studies/?mrn=MRN9001&issuer={issuer}").json()
        return {row["id"] for row in body.get("results", body)}

    assert study_ids("lks_pacs") == study_ids("CHI-L1") == study_ids("LAKESHORE") == {study.pk}
    assert study_ids("WI-LAKEVIEW") == {other.pk}
    assert study_ids("ST_ELSEWHERE") == set()
    bundle = api.get(
        "/fhir/r4/Patient?identifier=LKS_PACS|MRN9001", HTTP_ACCEPT="application/fhir+json"
    ).json()
    Bundle.model_validate(bundle)
    assert [e["resource"]["id"] for e in bundle.get("entry", [])] == [str(ours.pk)]
