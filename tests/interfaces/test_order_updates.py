"""A hospital's order sequence over real MLLP (issue #13): NW with a full PID, XO with only a new date,
CA with a bare PID, A08 with "" in the middle name. Every field keeps or changes exactly as HL7 v2's
rule says (v2.5.1 Ch. 2.5.3), checked through the FHIR API, the ORU and what the reader sees."""

from __future__ import annotations

import pytest
from django.utils import timezone
from fhir.resources.R4B.patient import Patient as FhirPatient
from fhir.resources.R4B.servicerequest import ServiceRequest

from imaging.facts import InstanceHeader
from imaging.models import Order, OrderMatch, Patient, Study
from imaging.services import _study_for
from interfaces.hl7.oru import oru_build
from reports.delivery import report_message
from reports.merge import merge_context
from reports.models import Report, ReportTemplate, TemplateVersion
from tests import hl7_data
from tests.api_records import session_client, token_client
from tests.interfaces.test_hl7_listener import exchange, msa
from tests.reports.conftest import CT_HEAD

pytestmark = pytest.mark.django_db(transaction=True)

S = hl7_data.segment
PID_FULL = "PID|1||MRN4242^^^LAKESHORE^MR||QUINLAN^JANE^MARIE||19580214|F"
PID_BARE = "PID|1||MRN4242^^^LAKESHORE^MR"
STROKE_HISTORY = "LKW 02:10 by husband. On apixaban 5 mg BID"


def _order(control: str, pid: str, obr: dict[int, str], *, pv1: str = "", extra: tuple[str, ...] = ()) -> str:
    orc = {1: control, 2: "PL-4242^RIS_ACME", 3: "FL-4242^PACS_ACME"}
    if control == "NW":
        orc[12] = "1234567^WELBY^MARCUS^J^JR^DR^MD^^NPI"
    base = {1: "1", 2: "PL-4242^RIS_ACME", 4: "70450^CT HEAD W/O CONTRAST^C4", 18: "A4242"}
    segments = [hl7_data.msh("ORM^O01", version="2.5.1"), pid, *([pv1] if pv1 else [])]
    segments += [S("ORC", orc), S("OBR", {**base, **obr}), *extra]
    return "\r".join(segments) + "\r"


NW = _order(
    "NW",
    PID_FULL,
    {
        5: "S",
        13: STROKE_HISTORY,
        27: "^^^20261128031500^^S",
        31: "I63.9^Cerebral infarction, unspecified^I10~R47.01^Aphasia^I10",
    },
    pv1="PV1|1|E|ED^BAY4^1^LAKESHORE||||||||||||||||V-99812^^^LAKESHORE",
    extra=("NTE|1||Patient is on apixaban, last dose 21:00",),
)
XO_DATE_ONLY = _order("XO", PID_BARE, {27: "^^^20261128041500"})
CA_BARE_PID = _order("CA", PID_BARE, {})
A08_NO_MIDDLE = "\r".join(
    [
        hl7_data.msh("ADT^A08^ADT_A01"),
        "EVN|A08|20261128050000",
        'PID|1||MRN4242^^^LAKESHORE^MR||^^""',
        "PV1|1|E",
    ]
)


def _oru_fields(study: Study, signer) -> dict[str, list[str]]:
    """The ORU that goes back for ``study``'s final report (as delivery builds it), by segment."""
    report = Report.objects.filter(study=study).first()
    if report is None:
        template = ReportTemplate.objects.create(facility=study.facility, name="CT head", procedure_codes=[])
        version = TemplateVersion.objects.create(template=template, number=1, content=CT_HEAD)
        report = Report.objects.create(
            study=study,
            template_version=version,
            author=signer,
            status="final",
            signed_by=signer,
            signed_at=timezone.now(),
            values={"impression": "No acute intracranial abnormality."},
        )
    study = Study.objects.select_related("facility", "patient", "order").get(pk=study.pk)
    report.study = study
    text = oru_build(report_message(report, "final"))
    return {line.split("|")[0]: line.split("|") for line in text.split("\r") if line}


def test_the_hospital_sequence_keeps_and_changes_exactly_what_was_sent(
    hl7_listener, chicago, ops_omar, dr_neuro_il
):
    # when the hospital sends the NW and the XO that only moves the date
    acks = exchange(hl7_listener, NW, XO_DATE_ONLY)
    assert [msa(a)[0] for a in acks] == ["AA", "AA"]
    order = Order.objects.get(facility=chicago, accession_number="A4242")
    # then the whole order is kept, and the XO changed the date alone
    assert order.scheduled_at.astimezone(chicago.zone).strftime("%Y-%m-%d %H:%M") == "2026-11-28 04:15"
    assert order.clinical_information == STROKE_HISTORY
    assert [r["code"] for r in order.reasons_for_study] == ["I63.9", "R47.01"]
    assert order.notes == ["Patient is on apixaban, last dose 21:00"]
    assert (order.visit_number, order.patient_class) == ("V-99812", "E")
    assert order.patient_location == "ED^BAY4^1^LAKESHORE"
    assert (order.placer_order_issuer, order.filler_order_issuer) == ("RIS_ACME", "PACS_ACME")
    assert order.ordering_provider_xcn["middle"] == "J" and order.ordering_provider_id == "1234567"
    assert order.priority == "STAT"
    client = token_client(ops_omar)
    request = client.get(f"/fhir/r4/ServiceRequest/{order.pk}").json()
    ServiceRequest.model_validate(request)
    assert request["status"] == "active" and request["priority"] == "stat"
    assert [c["coding"][0]["system"] for c in request["reasonCode"]] == [
        "http://hl7.org/fhir/sid/icd-10-cm"
    ] * 2
    assert [n["text"] for n in request["note"]] == [STROKE_HISTORY, "Patient is on apixaban, last dose 21:00"]
    assert request["requester"]["identifier"]["value"] == "1234567"
    # and the ORU that goes back for the exam's report carries what the XO did not touch
    header = InstanceHeader(
        sop_instance_uid="1.2.3.4242.1.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        study_instance_uid="1.2.826.0.1.3680043.8.498.42420",
        series_instance_uid="1.2.3.4242.1",
        accession_number="A4242",
    )
    study, _ = _study_for(chicago, header, timezone.now())
    Study.objects.filter(pk=study.pk).update(status="final")  # read: a CA leaves it as it is
    oru = _oru_fields(study, dr_neuro_il)
    assert oru["ORC"][2:4] == ["PL-4242^RIS_ACME", "FL-4242^PACS_ACME"]  # with their namespaces
    assert oru["ORC"][12].startswith("1234567^WELBY^MARCUS^J^JR^DR^MD")  # the ordering provider, whole
    assert oru["OBR"][16] == oru["ORC"][12]
    assert (oru["PV1"][2], oru["PV1"][19]) == ("E", "V-99812")  # the order's visit
    assert (oru["PID"][5], oru["PID"][8]) == ("QUINLAN^JANE^MARIE", "F")
    # when it is cancelled with a bare PID, then the middle name is cleared with ""
    acks = exchange(hl7_listener, CA_BARE_PID, A08_NO_MIDDLE)
    assert [msa(a)[0] for a in acks] == ["AA", "AA"]
    order.refresh_from_db()
    patient = Patient.objects.get(mrn="MRN4242")
    # then the cancel changed the status only; the A08 cleared the middle name only
    assert order.status == "cancelled"
    assert (
        order.ordering_provider_name == "DR MARCUS J WELBY JR"
        and order.clinical_information == STROKE_HISTORY
    )
    assert (patient.family_name, patient.given_name, patient.middle_name) == ("QUINLAN", "JANE", "")
    assert (patient.sex, patient.birth_date.isoformat()) == ("F", "1958-02-14")
    request = client.get(f"/fhir/r4/ServiceRequest/{order.pk}").json()
    assert request["status"] == "revoked" and len(request["reasonCode"]) == 2
    fhir_patient = client.get(f"/fhir/r4/Patient/{patient.pk}").json()
    FhirPatient.model_validate(fhir_patient)
    assert (fhir_patient["gender"], fhir_patient["birthDate"]) == ("female", "1958-02-14")
    assert fhir_patient["name"][0]["given"] == ["JANE"]
    # and the ORU (an addendum's, say) still has the sex, the provider and the visit; no middle name
    oru = _oru_fields(study, dr_neuro_il)
    assert (oru["PID"][5], oru["PID"][8]) == ("QUINLAN^JANE", "F")
    assert oru["ORC"][12].startswith("1234567^WELBY^MARCUS^J") and oru["PV1"][19] == "V-99812"


def test_a_code_strokes_history_reaches_the_viewer_header_and_the_merge_field(
    hl7_listener, chicago, ops_omar
):
    # given images that carry only the order's Study Instance UID (no accession), then the OMI
    study = Study.objects.create(facility=chicago, study_instance_uid="1.2.826.0.1.3680043.8.498.4242")
    omi = hl7_data.omi(accession="A4243", study_uid="1.2.826.0.1.3680043.8.498.4242", priority="S")
    omi = omi.replace("^ACUTE NEURO DEFICIT", "I63.9^Stroke^I10~Z79.01^On anticoagulants^I10")
    omi = omi.replace("\rIPC|", f"\rNTE|1||{STROKE_HISTORY}\rIPC|")
    assert msa(exchange(hl7_listener, omi)[0])[0] == "AA"
    # then the study is matched by the order's Study UID, takes its priority, and says how
    study.refresh_from_db()
    assert study.order.accession_number == "A4243"
    assert (study.order_match, study.priority, study.accession_number) == (
        OrderMatch.STUDY_UID,
        "STAT",
        "A4243",
    )
    # and the reader sees every reason and the note in the viewer header and the report's merge field
    page = session_client(ops_omar).get(f"/studies/{study.pk}/viewer/").content.decode()
    for text in ("Stroke (I63.9)", "On anticoagulants (Z79.01)", STROKE_HISTORY):
        assert text in page
        assert text in merge_context(study)["reason"]


def test_images_arriving_with_only_the_orders_study_uid_match_it(hl7_listener, chicago):
    # given the order first
    omi = hl7_data.omi(accession="A4244", study_uid="1.2.826.0.1.3680043.8.498.4244", priority="S")
    assert msa(exchange(hl7_listener, omi)[0])[0] == "AA"
    # when images come with that Study UID and no accession
    header = InstanceHeader(
        sop_instance_uid="1.2.3.4244.1.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        study_instance_uid="1.2.826.0.1.3680043.8.498.4244",
        series_instance_uid="1.2.3.4244.1",
    )
    study, created = _study_for(chicago, header, timezone.now())
    # then they answer the order, take its priority and accession, and record the match
    assert created and study.order.accession_number == "A4244"
    assert (study.order_match, study.priority, study.accession_number) == (
        OrderMatch.STUDY_UID,
        "STAT",
        "A4244",
    )


def _raw_exchange(address, payload: bytes) -> bytes:
    """One frame over a plain socket, exactly as given (python-hl7's client always adds the CR)."""
    import socket

    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(payload)
        data = b""
        while not data.endswith(b"\x1c\r"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


def test_a_frame_without_its_trailing_cr_is_acked_and_a_v23_ack_has_no_structure(hl7_listener):
    # given a v2.3 ORM framed <VT> … <FS> with no <CR>
    message = hl7_data.orm(accession="A4245", version="2.3").encode()
    # when it is sent, then it is ACKed (AA) with MSH-9 ACK^O01: v2.3 has no message structure
    ack = _raw_exchange(hl7_listener, b"\x0b" + message + b"\x1c")
    text = ack.strip(b"\x0b\x1c\r").decode()
    msh = text.split("\r")[0].split("|")
    assert msh[8] == "ACK^O01" and msh[11] == "2.3"
    assert text.split("\r")[1].startswith("MSA|AA|")
    # and a v2.5.1 one keeps the structure component
    v251 = hl7_data.orm(accession="A4246", version="2.5.1").encode()
    ack = _raw_exchange(hl7_listener, b"\x0b" + v251 + b"\x1c\r").strip(b"\x0b\x1c\r").decode()
    assert ack.split("\r")[0].split("|")[8] == "ACK^O01^ACK"


def _images(accession: str, issuer: str, n: int) -> InstanceHeader:
    """The header ingest reads from a CT whose accession carries (0008,0051), or not."""
    from pydicom.dataset import Dataset

    from interfaces.dicom.header import _header_from

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", f"1.2.3.425{n}.1.1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = f"1.2.3.425{n}", f"1.2.3.425{n}.1"
    ds.AccessionNumber, ds.Modality = accession, "CT"
    if issuer:
        item = Dataset()
        item.LocalNamespaceEntityID = issuer
        ds.IssuerOfAccessionNumberSequence = [item]
    return _header_from(ds)


def test_an_accession_matches_with_its_issuer_and_another_authoritys_number_does_not(hl7_listener, chicago):
    # given two orders whose IPC-1 says the RIS numbered them (IPC-1.2 = RIS_ACME)
    for accession in ("A4250", "A4251", "A4252"):
        omi = hl7_data.omi(accession=accession, study_uid=f"2.25.{accession[1:]}")
        omi = omi.replace(f"\rIPC|{accession}|", f"\rIPC|{accession}^RIS_ACME|")
        assert msa(exchange(hl7_listener, omi)[0])[0] == "AA"
    assert Order.objects.get(accession_number="A4250").accession_issuer == "RIS_ACME"
    # when images come with the same accession and issuer, with none, and with another authority's
    same, _ = _study_for(chicago, _images("A4250", "ris_acme", 0), timezone.now())
    unsaid, _ = _study_for(chicago, _images("A4251", "", 1), timezone.now())
    other, _ = _study_for(chicago, _images("A4252", "ST_ELSEWHERE_PACS", 2), timezone.now())
    # then the first two answer their orders by accession; the other authority's number does not
    assert (same.order.accession_number, same.order_match) == ("A4250", OrderMatch.ACCESSION)
    assert (unsaid.order.accession_number, unsaid.order_match) == ("A4251", OrderMatch.ACCESSION)
    assert (other.order_id, other.order_match) == (None, OrderMatch.NONE)
    assert _images("A4252", "ST_ELSEWHERE_PACS", 2).issuer_of_accession == "ST_ELSEWHERE_PACS"


@pytest.mark.parametrize("numbering", ["filler", "placer"])
def test_the_facilitys_fallback_matches_images_numbered_by_the_ris(chicago, numbering):
    # given a RIS that writes its filler (or placer) number in the images' accession, and says so
    chicago.hl7_accession_fallback = numbering
    chicago.save(update_fields=["hl7_accession_fallback"])
    patient = Patient.objects.create(facility=chicago, mrn="MRN4260", assigning_authority="LAKESHORE")
    order = Order.objects.create(
        facility=chicago, patient=patient, accession_number="A4260", placer_order_number="PL-4260",
        filler_order_number="FL-4260", procedure_code="70450", priority="STAT",
    )  # fmt: skip
    # when images come with that number as their accession (and no Study UID the order knows)
    number = {"filler": "FL-4260", "placer": "PL-4260"}[numbering]
    study, _ = _study_for(chicago, _images(number, "", 9), timezone.now())
    # then they answer the order by the fallback, take its priority, and say how
    assert (study.order_id, study.order_match, study.priority) == (order.pk, OrderMatch.FALLBACK, "STAT")
    # and with the fallback off, the same images would wait for their order
    chicago.hl7_accession_fallback = "none"
    chicago.save(update_fields=["hl7_accession_fallback"])
    other, _ = _study_for(
        chicago, _images("FL-4260" if numbering == "placer" else "PL-4260", "", 8), timezone.now()
    )
    assert other.order_id is None
