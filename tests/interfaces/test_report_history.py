"""The RIS's report history (docs/priors.md, "Historical reports from the RIS"), over real MLLP to the
listener: a facility that takes it has its ORU^R01 kept read-only as prior reports of the patient
(text encrypted at rest), shown on the reading screen beside the reports ReadRoom signed, with the
source named; a corrected result replaces the shown text and keeps the earlier one; matching is by
MRN and issuer, never by name; another facility's users get 404; bad ones get AE/AR with ERR; and an
AI node's ORU still goes to the AI path."""

# ruff: noqa: F811 -- the reading-screen fixtures are imported from tests/reports and tests/worklist
from __future__ import annotations

import shutil

import pytest
from django.test import Client

from facilities.models import Hl7Sender
from imaging.models import AiResult, HistoricalReport, Patient, Study
from imaging.prior_reports import prior_documents
from imaging.storage import storage_root
from interfaces.models import InboundMessage, InboundStatus
from tests.ai.test_ai_sr_scp import storescu, wait_for, write
from tests.ai_data import ai_oru
from tests.conftest import enrol_totp
from tests.dicom_data import ct_series
from tests.interfaces.test_hl7_listener import err_code, exchange, msa
from tests.reports.conftest import claimed_head_ct, ct_head_template  # noqa: F401
from tests.worklist.conftest import make_eligible, neuro_reader  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

# Both listener modes (the embedded inbox thread, and the command's inline inbox) are run by the
# first test(s) here and by tests/interfaces/test_hl7_listener.py; the rest of this module runs the
# deployed one only (``manage.py hl7_listener``): the same path twice cost ~1 min of the suite.
ONE_LISTENER_MODE = pytest.mark.parametrize("hl7_listener", ["inline"], indirect=True)

FINDINGS = "FINDINGS: 6 mm nodule in the right upper lobe."
IMPRESSION = "IMPRESSION: Follow-up CT in 6 months."


def history_oru(
    *,
    mrn: str,
    issuer: str = "LAKESHORE",
    accession: str = "H-2025-001",
    status: str = "F",
    lines: tuple[str, ...] = (FINDINGS, IMPRESSION),
    control_id: str = "HIST-1",
    app: str = "EPIC_RAD",
    facility: str = "LAKESHORE",
    name: str = "RIVERA^ANA",
    kind: str = "TX",
    study_uid: str = "",
) -> str:
    """A RIS's historical report: OBR-32 the reading radiologist, OBR-25 the result status, one TX
    OBX per line of the report (as Epic and Meditech send them)."""
    obr = ["OBR", "1", "", accession, "71250^CT CHEST WO CONTRAST^C4", "", "", "20250301101500"]
    obr += [""] * (32 - len(obr) + 1)
    obr[18], obr[22], obr[25] = accession, "20250301113000", status
    obr[32] = "1234567&HALE&MARTIN&J&&DR&MD"
    segments = [
        f"MSH|^~\\&|{app}|{facility}|READROOM|READROOM|20250301113500||ORU^R01|{control_id}|P|2.5.1",
        f"PID|1||{mrn}^^^{issuer}^MR||{name}||19580601|F",
        "|".join(obr),
        *([f"ZDS|{study_uid}^READROOM^Application^DICOM"] if study_uid else []),
        *(f"OBX|{n}|{kind}|18782-3^Radiology Study observation^LN||{line}||||||{status}" for n, line in
          enumerate(lines, start=1)),
    ]  # fmt: skip
    return "\r".join(segments) + "\r"


@pytest.fixture
def takes_history(chicago_interfaces, image_store):
    chicago_interfaces.hl7_report_history = True
    chicago_interfaces.save(update_fields=["hl7_report_history"])
    return chicago_interfaces


def applied(control_id: str) -> InboundMessage:
    return wait_for(
        lambda: (
            InboundMessage.objects.filter(control_id=control_id)
            .exclude(status=InboundStatus.RECEIVED)
            .first()
        )
    )


def fragment(user, study, *, verified=None):
    client = verified(user) if verified else Client()
    if not verified:
        client.force_login(user)
    return client.get(f"/studies/{study.pk}/report/priors/")


def test_a_historical_report_is_kept_encrypted_and_shown_beside_the_editor_with_its_source(
    hl7_listener,
    takes_history,
    claimed_head_ct,
    neuro_reader,
    verified_client,
    admin_lakeview,
    dr_msk_wi,
    lakeview_interfaces,
):
    current = claimed_head_ct
    patient = current.patient
    # when the RIS sends the hospital's report of the patient's chest CT last year
    [ack] = exchange(hl7_listener, history_oru(mrn=patient.mrn, issuer=patient.assigning_authority))
    # then it is accepted and kept as the patient's historical report
    assert msa(ack) == ("AA", "HIST-1")
    assert applied("HIST-1").status == InboundStatus.PROCESSED
    report = HistoricalReport.objects.get()
    assert (report.patient_id, report.facility_id, report.result_status) == (
        patient.pk,
        current.facility_id,
        "F",
    )
    assert (report.radiologist_name, report.source) == ("DR MARTIN J HALE, MD", "EPIC_RAD^LAKESHORE")
    # its text is in the encrypted store, never in the clear
    stored = (storage_root() / report.storage_path).read_bytes()
    assert b"nodule" not in stored and b"IMPRESSION" not in stored
    # and the claimant's reading screen shows it, with the source and the reader named
    page = fragment(neuro_reader, current, verified=verified_client)
    assert page.status_code == 200
    body = page.content.decode()
    assert FINDINGS in body and IMPRESSION in body
    assert "from the RIS, EPIC_RAD^LAKESHORE" in body and "Read by DR MARTIN J HALE, MD" in body
    assert "CT CHEST WO CONTRAST · H-2025-001" in body and "2025-03-01" in body
    # another facility's reader (on shift there) and admin get 404 for the page and the fragment
    enrol_totp(dr_msk_wi)
    make_eligible(dr_msk_wi, lakeview_interfaces)
    elsewhere = verified_client(dr_msk_wi)
    assert elsewhere.get(f"/studies/{current.pk}/report/priors/").status_code == 404
    assert elsewhere.get(f"/studies/{current.pk}/report/").status_code == 404
    assert fragment(admin_lakeview, current).status_code == 404


@ONE_LISTENER_MODE
def test_a_corrected_result_replaces_the_shown_text_and_keeps_the_earlier(
    hl7_listener, takes_history, claimed_head_ct, admin_chicago
):
    patient = claimed_head_ct.patient
    final = history_oru(mrn=patient.mrn, issuer=patient.assigning_authority)
    corrected = history_oru(
        mrn=patient.mrn,
        issuer=patient.assigning_authority,
        status="C",
        control_id="HIST-2",
        lines=(FINDINGS, "IMPRESSION: Follow-up CT in 3 months (corrected)."),
    )
    acks = exchange(hl7_listener, final, corrected)
    assert [msa(a)[0] for a in acks] == ["AA", "AA"]
    assert applied("HIST-2").status == InboundStatus.PROCESSED
    # then one version is shown — the corrected one — and the final is kept beside it, marked
    [document] = prior_documents(admin_chicago, claimed_head_ct)
    assert "3 months (corrected)" in document.text and "6 months" not in document.text
    assert document.title == "Corrected report, replaces 1 earlier version"
    [earlier] = document.earlier
    assert earlier.label.startswith("Replaced: Final, received ") and IMPRESSION in earlier.text
    rows = HistoricalReport.objects.order_by("pk")
    assert [(r.result_status, r.superseded_at is None) for r in rows] == [("F", False), ("C", True)]
    assert rows[1].supersedes_id == rows[0].pk
    # the same correction again changes nothing; a final after its correction is refused, kept
    resent = corrected.replace("HIST-2", "HIST-3")
    stale = final.replace("HIST-1", "HIST-4").replace("6 months", "12 months")
    acks = exchange(hl7_listener, resent, stale)
    assert [msa(a)[0] for a in acks] == ["AA", "AA"]
    assert "nothing changed" in applied("HIST-3").error
    refused = applied("HIST-4")
    assert refused.status == InboundStatus.FAILED and "corrected text stays" in refused.error
    assert HistoricalReport.objects.count() == 2


@ONE_LISTENER_MODE
def test_matching_is_by_mrn_and_issuer_never_by_name(
    hl7_listener, takes_history, claimed_head_ct, admin_chicago
):
    patient = claimed_head_ct.patient  # Ana Rivera
    # the same name and birth date under another MRN; the same MRN under another hospital's issuer
    namesake = history_oru(
        mrn="MRN-OTHER", issuer=patient.assigning_authority, control_id="H-N", accession="H-N"
    )
    other_issuer = history_oru(mrn=patient.mrn, issuer="ST_ELSEWHERE", control_id="H-I", accession="H-I")
    acks = exchange(hl7_listener, namesake, other_issuer)
    assert [msa(a)[0] for a in acks] == ["AA", "AA"]
    applied("H-N"), applied("H-I")
    # then neither is this patient's: each belongs to the patient its MRN and issuer name
    assert prior_documents(admin_chicago, claimed_head_ct) == []
    held = {r.accession_number: r.patient for r in HistoricalReport.objects.select_related("patient")}
    assert (held["H-N"].mrn, held["H-N"].pk != patient.pk) == ("MRN-OTHER", True)
    assert (held["H-I"].mrn, held["H-I"].assigning_authority) == (patient.mrn, "ST_ELSEWHERE")
    # and the history of a known patient never rewrites their demographics
    patient.refresh_from_db()
    assert (patient.family_name, patient.given_name) == ("Rivera", "Ana")


@ONE_LISTENER_MODE
def test_a_known_patients_demographics_are_not_changed_by_an_old_report(
    hl7_listener, takes_history, claimed_head_ct
):
    patient = claimed_head_ct.patient
    old = history_oru(mrn=patient.mrn, issuer=patient.assigning_authority, name="GARCIA^ANA")
    [ack] = exchange(hl7_listener, old)
    assert msa(ack)[0] == "AA" and applied("HIST-1").status == InboundStatus.PROCESSED
    patient.refresh_from_db()
    assert patient.family_name == "Rivera"
    assert HistoricalReport.objects.get().patient_id == patient.pk


@ONE_LISTENER_MODE
def test_another_facilitys_history_never_reaches_this_facility(
    hl7_listener, takes_history, lakeview_interfaces, claimed_head_ct, admin_chicago
):
    lakeview_interfaces.hl7_report_history = True
    lakeview_interfaces.save(update_fields=["hl7_report_history"])
    patient = claimed_head_ct.patient
    # Lakeview's RIS sends a report naming the same MRN and issuer as Lakeshore's patient
    sent = history_oru(mrn=patient.mrn, issuer=patient.assigning_authority, app="RIS_LV", facility="LAKEVIEW")
    [ack] = exchange(hl7_listener, sent)
    assert msa(ack)[0] == "AA" and applied("HIST-1").status == InboundStatus.PROCESSED
    # then it is a Lakeview patient's, and Lakeshore's reading screen shows nothing of it
    report = HistoricalReport.objects.get()
    assert (
        report.facility_id == lakeview_interfaces.pk and report.patient.facility_id == lakeview_interfaces.pk
    )
    assert prior_documents(admin_chicago, claimed_head_ct) == []


@pytest.mark.parametrize(
    ("change", "code", "where"),
    [
        (
            lambda m: m.replace("|F|||||||1234567", "|X|||||||1234567").replace("|||||F", "|||||X"),
            "103",
            "OBR",
        ),
        (lambda m: m.replace("\rOBX|1|", "\rZDS|1.2.NOT-A-UID^RIS^Application^DICOM\rOBX|1|"), "102", "ZDS"),
        (lambda m: m.replace("|TX|", "|CWE|"), "101", "OBX"),
        (lambda m: m.replace("PID|1||MRN-1^^^CHI-L1^MR", "PID|1||"), "101", "PID"),
        (lambda m: m.replace("||H-2025-001|", "|||").replace("||H-2025-001||", "||||"), "101", "OBR"),
    ],
    ids=["cancelled", "no-text", "no-mrn", "no-accession", "bad-study-uid"],
)
@ONE_LISTENER_MODE
def test_bad_history_gets_ae_with_err_and_is_kept(hl7_listener, takes_history, change, code, where):
    message = change(history_oru(mrn="MRN-1", issuer="CHI-L1"))
    [ack] = exchange(hl7_listener, message)
    assert msa(ack)[0] == "AE" and err_code(ack) == code
    assert str(ack.extract_field("ERR", 1, 2, 1, 1)) == where
    kept = InboundMessage.objects.get()
    assert kept.status == InboundStatus.REJECTED and kept.raw
    assert not HistoricalReport.objects.exists()


@ONE_LISTENER_MODE
def test_a_facility_that_does_not_take_history_refuses_it_with_ar_200(hl7_listener, chicago_interfaces):
    [ack] = exchange(hl7_listener, history_oru(mrn="MRN-1"))
    assert msa(ack)[0] == "AR" and err_code(ack) == "200"
    assert InboundMessage.objects.get().status == InboundStatus.REJECTED
    assert not HistoricalReport.objects.exists() and not Patient.objects.exists()


@ONE_LISTENER_MODE
def test_an_ai_nodes_oru_still_goes_to_the_ai_path_where_history_is_taken(
    hl7_listener, takes_history, claimed_head_ct
):
    Hl7Sender.objects.create(
        facility=takes_history, sending_application="AIDOC", sending_facility="LAKESHORE", ai_node=True
    )
    [ack] = exchange(hl7_listener, ai_oru(accession=claimed_head_ct.accession_number))
    assert msa(ack)[0] == "AA"
    wait_for(lambda: AiResult.objects.filter(study=claimed_head_ct).exists())
    assert not HistoricalReport.objects.exists()


@ONE_LISTENER_MODE
def test_ft_formatting_is_read_as_lines(hl7_listener, takes_history, claimed_head_ct, admin_chicago):
    patient = claimed_head_ct.patient
    text = "FINDINGS: Clear lungs.\\.br\\IMPRESSION: Normal \\T\\ stable."
    [ack] = exchange(
        hl7_listener,
        history_oru(mrn=patient.mrn, issuer=patient.assigning_authority, kind="FT", lines=(text,)),
    )
    assert msa(ack)[0] == "AA" and applied("HIST-1").status == InboundStatus.PROCESSED
    [document] = prior_documents(admin_chicago, claimed_head_ct)
    assert document.text == "FINDINGS: Clear lungs.\nIMPRESSION: Normal & stable."


@ONE_LISTENER_MODE
def test_a_preliminary_is_shown_marked_and_its_final_replaces_it_keeping_what_it_left_empty(
    hl7_listener, takes_history, claimed_head_ct, admin_chicago
):
    patient = claimed_head_ct.patient
    # given the RIS sends the preliminary report first
    preliminary = history_oru(mrn=patient.mrn, issuer=patient.assigning_authority, status="P")
    [ack] = exchange(hl7_listener, preliminary)
    assert msa(ack)[0] == "AA" and applied("HIST-1").status == InboundStatus.PROCESSED
    # then it is shown, marked as not final
    [document] = prior_documents(admin_chicago, claimed_head_ct)
    assert document.title == "Preliminary (not final) report" and IMPRESSION in document.text
    # when the final comes with OBR-4 and OBR-7 empty (no change) and OBR-32 "" (delete)
    final = history_oru(
        mrn=patient.mrn, issuer=patient.assigning_authority, control_id="HIST-2", lines=(FINDINGS, "Final.")
    )
    obr = final.split("\r")[2].split("|")
    obr[4], obr[7], obr[32] = "", "", '""'
    final = final.replace(final.split("\r")[2], "|".join(obr))
    [ack] = exchange(hl7_listener, final)
    assert msa(ack)[0] == "AA" and applied("HIST-2").status == InboundStatus.PROCESSED
    # then the final is shown, with the preliminary's procedure and exam time, and no reader
    [document] = prior_documents(admin_chicago, claimed_head_ct)
    assert document.title == "Final report, replaces 1 earlier version" and "Final." in document.text
    assert document.description == "CT CHEST WO CONTRAST · H-2025-001" and document.on is not None
    assert document.reader == ""
    [earlier] = document.earlier
    assert earlier.label.startswith("Replaced: Preliminary (not final), received ")
    # and a preliminary after its final is refused, kept: the final stays shown
    late = preliminary.replace("HIST-1", "HIST-3").replace("6 months", "2 months")
    [ack] = exchange(hl7_listener, late)
    refused = applied("HIST-3")
    assert refused.status == InboundStatus.FAILED and "final text stays" in refused.error
    assert HistoricalReport.objects.count() == 2


@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed")
@ONE_LISTENER_MODE
def test_a_report_before_its_study_is_kept_and_linked_when_the_images_arrive_by_storescu(
    hl7_listener,
    dicom_scp,
    tmp_path,
    takes_history,
    lakeview_interfaces,
    claimed_head_ct,
    admin_chicago,
    admin_lakeview,
):
    lakeview_interfaces.hl7_report_history = True
    lakeview_interfaces.save(update_fields=["hl7_report_history"])
    patient = claimed_head_ct.patient
    prior = ct_series(count=2, accession="H-PRIOR-1", patient_id=patient.mrn, patient_name="RIVERA^ANA")
    for ds in prior.datasets:
        ds.IssuerOfPatientID = patient.assigning_authority
    # given the RIS sends two reports of a study ReadRoom does not hold: one by the accession the
    # images will carry, one by their Study Instance UID (ZDS) under the RIS's own accession
    identity = {"mrn": patient.mrn, "issuer": patient.assigning_authority}
    by_accession = history_oru(**identity, accession="H-PRIOR-1", control_id="H-ACC")
    by_uid = history_oru(**identity, accession="RIS-77", control_id="H-UID", study_uid=prior.study_uid)
    # and Lakeview's RIS names the same accession for its own patient of that MRN
    theirs = history_oru(
        **identity, accession="H-PRIOR-1", control_id="H-LV", app="RIS_LV", facility="LAKEVIEW"
    )
    acks = exchange(hl7_listener, by_accession, by_uid, theirs)
    assert [msa(a)[0] for a in acks] == ["AA", "AA", "AA"]
    assert {applied(c).status for c in ("H-ACC", "H-UID", "H-LV")} == {InboundStatus.PROCESSED}
    # then both are kept, unlinked, and already listed by patient
    assert not HistoricalReport.objects.filter(study__isnull=False).exists()
    assert len(prior_documents(admin_chicago, claimed_head_ct)) == 2
    # when the study's images arrive at Lakeshore by C-STORE
    assert storescu(dicom_scp, "LAKESHORE_CT1", *write(tmp_path, prior.datasets)).returncode == 0
    study = Study.objects.get(study_instance_uid=prior.study_uid)
    assert study.patient_id == patient.pk
    # then both of Lakeshore's reports are linked to it; Lakeview's never
    linked = wait_for(
        lambda: set(HistoricalReport.objects.filter(study=study).values_list("control_id", flat=True)) or None
    )
    assert linked == {"H-ACC", "H-UID"}
    assert HistoricalReport.objects.get(control_id="H-LV").study_id is None
    # and the reading screen's panel shows them with the linked study, for Lakeshore only
    documents = prior_documents(admin_chicago, claimed_head_ct)
    assert {d.study for d in documents} == {study}
    body = fragment(admin_chicago, claimed_head_ct).content.decode()
    assert "H-PRIOR-1" in body and "RIS-77" in body
    assert fragment(admin_lakeview, claimed_head_ct).status_code == 404
