"""ReadRoom as a Modality Worklist SCP (PS3.4 Annex K) with dcmtk's ``findscu -W`` as the scanner, over
a real association to the one SCP port: the calling AE's facility's open orders with the patient, the
accession, the requested procedure and the scheduled step; never another facility's; a cancelled order
is gone; PS3.4 matching on the step's modality, date range and station; return keys as asked."""

from __future__ import annotations

import shutil

import pytest
from auditlog.models import LogEntry

from imaging.models import Order, OrderStatus
from imaging.services import order_message_apply
from interfaces.hl7.parse import parse
from tests import hl7_data
from tests.interfaces.test_dicom_qr import DCMTK_PATH, find

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        shutil.which("findscu", path=DCMTK_PATH) is None, reason="dcmtk not installed (apt-get install dcmtk)"
    ),
]

STEP = "ScheduledProcedureStepSequence"
ASKED = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
    "StudyInstanceUID", "RequestedProcedureID", "RequestedProcedureDescription",
    "RequestedProcedureCodeSequence", "ReferringPhysicianName",
    f"{STEP}[0].Modality", f"{STEP}[0].ScheduledStationAETitle", f"{STEP}[0].ScheduledProcedureStepStartDate",
    f"{STEP}[0].ScheduledProcedureStepStartTime", f"{STEP}[0].ScheduledProcedureStepDescription",
    f"{STEP}[0].ScheduledProcedureStepID", f"{STEP}[0].ScheduledProcedureStepStatus",
)  # fmt: skip


def order(facility, control: str = "NW", **fields) -> None:
    message = parse(hl7_data.orm(control, **fields).encode()).content
    order_message_apply(facility=facility, message=message)


@pytest.fixture
def worklists(dicom_scp, lakeview_interfaces, chicago_interfaces):
    # given: two open Lakeshore orders and a Lakeview order of a namesake with the same MRN
    order(chicago_interfaces, accession="A1001", filler="F1001", placer="P1001")
    order(
        chicago_interfaces, accession="A1002", filler="F1002", placer="P1002", mrn="MRN2002",
        code="74177", text="CT ABD PELVIS W CONTRAST",
    )  # fmt: skip
    order(lakeview_interfaces, accession="L3001", filler="F3001", placer="P3001")
    assert Order.objects.count() == 3
    return chicago_interfaces, lakeview_interfaces


def worklist(dicom_scp, tmp_path, calling: str, name: str, *keys: str) -> list:
    return find(dicom_scp, calling, tmp_path / name, *keys, model="-W")


def test_the_calling_aes_facility_sees_its_open_orders_with_the_patient_and_the_step(
    dicom_scp, tmp_path, worklists
):
    # when: Lakeshore's CT asks for its whole worklist
    found = worklist(dicom_scp, tmp_path, "LAKESHORE_CT1", "all", *ASKED)
    # then: Lakeshore's two orders, never Lakeview's
    assert sorted(str(r.AccessionNumber) for r in found) == ["A1001", "A1002"]
    head = next(r for r in found if r.AccessionNumber == "A1001")
    assert (str(head.PatientName), head.PatientID, head.IssuerOfPatientID) == (
        "QUINLAN^JANE^M",
        "MRN1001",
        "LAKESHORE",
    )
    assert (head.PatientBirthDate, head.PatientSex) == ("19580214", "F")
    assert (head.RequestedProcedureID, head.RequestedProcedureDescription) == (
        "RPA1001",
        "CT HEAD W/O CONTRAST",
    )
    [code] = head.RequestedProcedureCodeSequence
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
        "70450",
        "C4",
        "CT HEAD W/O CONTRAST",
    )
    assert str(head.ReferringPhysicianName) == "WELBY^MARCUS"
    assert head.StudyInstanceUID  # Type 1: one derived from the accession, the same at every query
    [step] = head.ScheduledProcedureStepSequence
    assert (step.Modality, step.ScheduledStationAETitle, step.ScheduledProcedureStepStatus) == (
        "CT", "LAKESHORE_CT1", "SCHEDULED",
    )  # fmt: skip
    # TQ1/ORC-7.4 20261128031500, the facility's local time, as the scanner shows it
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == (
        "20261128",
        "031500",
    )
    assert (step.ScheduledProcedureStepID, step.ScheduledProcedureStepDescription) == (
        "SPSA1001", "CT HEAD W/O CONTRAST",
    )  # fmt: skip
    again = worklist(
        dicom_scp, tmp_path, "LAKESHORE_CT1", "again", "AccessionNumber=A1001", "StudyInstanceUID"
    )
    assert [r.StudyInstanceUID for r in again] == [head.StudyInstanceUID]
    # and Lakeview's scanner, with the same query, sees only its own
    theirs = worklist(dicom_scp, tmp_path, "LAKEVIEW_MR", "lv", *ASKED)
    assert [str(r.AccessionNumber) for r in theirs] == ["L3001"]
    # every worklist query is an audited search from that AE
    searches = LogEntry.objects.filter(object_repr__startswith="DICOM MWL C-FIND search")
    assert searches.count() == 3


def test_a_cancelled_order_is_gone_from_the_worklist(dicom_scp, tmp_path, worklists):
    chicago, _ = worklists
    assert len(worklist(dicom_scp, tmp_path, "LAKESHORE_CT1", "before", "AccessionNumber")) == 2
    # when: the RIS cancels the head CT
    order(chicago, "CA", accession="A1001", filler="F1001", placer="P1001", control_id="CA-1")
    assert Order.objects.get(accession_number="A1001").status == OrderStatus.CANCELLED
    # then: the scanner no longer sees it
    found = worklist(dicom_scp, tmp_path, "LAKESHORE_CT1", "after", "AccessionNumber")
    assert [str(r.AccessionNumber) for r in found] == ["A1002"]


def test_worklist_matching_on_the_step_and_the_patient(dicom_scp, tmp_path, worklists):
    def accessions(name: str, *keys: str) -> list[str]:
        found = worklist(dicom_scp, tmp_path, "LAKESHORE_CT1", name, "AccessionNumber", *keys)
        return sorted(str(r.AccessionNumber) for r in found)

    # the step's date: single value, range, and a day with nothing scheduled
    assert accessions("day", f"{STEP}[0].ScheduledProcedureStepStartDate=20261128") == ["A1001", "A1002"]
    assert accessions("range", f"{STEP}[0].ScheduledProcedureStepStartDate=20261127-20261129") == [
        "A1001",
        "A1002",
    ]
    assert accessions("empty-day", f"{STEP}[0].ScheduledProcedureStepStartDate=20261201") == []
    assert accessions("time", f"{STEP}[0].ScheduledProcedureStepStartTime=0300-0330") == ["A1001", "A1002"]
    assert accessions("late", f"{STEP}[0].ScheduledProcedureStepStartTime=1200-") == []
    # the modality and the station: this station's worklist, not another's
    assert accessions("mr", f"{STEP}[0].Modality=MR") == []
    assert accessions("ct", f"{STEP}[0].Modality=CT") == ["A1001", "A1002"]
    assert accessions("station", f"{STEP}[0].ScheduledStationAETitle=LAKESHORE_*") == ["A1001", "A1002"]
    assert accessions("other-station", f"{STEP}[0].ScheduledStationAETitle=LAKEVIEW_MR") == []
    # the patient: MRN, a name wildcard (case-insensitive), the issuer
    assert accessions("mrn", "PatientID=MRN2002") == ["A1002"]
    assert accessions("name", "PatientName=quin*") == ["A1001", "A1002"]
    assert accessions("issuer", "IssuerOfPatientID=ELSEWHERE") == []
    # return keys are the ones asked for, nothing more
    [answer] = worklist(dicom_scp, tmp_path, "LAKESHORE_CT1", "keys", "AccessionNumber=A1002", "PatientID")
    assert {e.keyword for e in answer} == {"AccessionNumber", "PatientID", "SpecificCharacterSet"}


def test_an_order_whose_images_arrived_is_gone(dicom_scp, tmp_path, worklists):
    from imaging.models import Study

    chicago, _ = worklists
    head = Order.objects.get(accession_number="A1001")
    Study.objects.create(
        facility=chicago, patient=head.patient, order=head, study_instance_uid="1.2.3.4",
        accession_number="A1001", number_of_instances=12,
    )  # fmt: skip
    found = worklist(dicom_scp, tmp_path, "LAKESHORE_CT1", "done", "AccessionNumber")
    assert [str(r.AccessionNumber) for r in found] == ["A1002"]


def test_an_unknown_calling_ae_is_refused_the_association(dicom_scp, tmp_path, worklists):
    host, port, aet = dicom_scp
    from tests.interfaces.test_dicom_qr import dcmtk

    result = dcmtk("findscu", "-aet", "STRANGER", "-aec", aet, "-W", "-k", "AccessionNumber", host, str(port))
    assert result.returncode != 0 and "Association Rejected" in (result.stderr + result.stdout)
