"""A signed report on its way to the facility's EMR (issue 6, DESIGN.md §4 step 7).

``report_delivery_enqueue`` is called **inside** the signing transaction (``reports.services``): the
ORU^R01 row in the outbox commits together with the signature, so a crash between the two cannot
sign a report that never leaves — "no report ever lost". The outbox (``interfaces.hl7.outbound``)
then delivers it in order per facility, with retries, dead letter and alarm.

What is sent: OBR-25 P for a preliminary read, F for the final read, C for the report re-sent with
an addendum (the whole report plus every addendum so far: an EMR replaces the result it holds)."""

from __future__ import annotations

from django.utils import timezone

from interfaces.hl7.oru import (
    AddendumNote,
    AiVerdictLine,
    OrderReference,
    PatientIdentity,
    Provider,
    ReportMessage,
    ResultStatus,
    control_id_new,
)
from interfaces.hl7.outbound import oru_enqueue, oru_receiver
from interfaces.models import OutboundMessage
from reports.merge import exam_instant
from reports.models import Addendum, Report
from reports.schema import report_sections
from reports.selectors import report_content

KIND_STATUS = {
    "preliminary": ResultStatus.PRELIMINARY,
    "final": ResultStatus.FINAL,
    "addendum": ResultStatus.CORRECTED,
}


def report_source(report: Report, kind: str, addendum: Addendum | None = None) -> str:
    """The outbox's reference back to what it carries (one per signature)."""
    suffix = f"addendum:{addendum.sequence}" if addendum else kind
    return f"report:{report.pk}:{suffix}"


def _signer(user) -> Provider:
    profile = getattr(user, "radiologist_profile", None)
    return Provider(
        id=(profile.npi if profile else "") or user.username,
        id_authority="NPI" if profile and profile.npi else "READROOM",
        family_name=user.last_name or str(user),
        given_name=user.first_name,
        degree="MD",
    )


def _ordering_provider(order) -> Provider | None:
    if order is None or not (order.ordering_provider_id or order.ordering_provider_name):
        return None
    xcn = order.ordering_provider_xcn or {}
    if not xcn.get("family"):
        # an order stored before its XCN was kept: the display name, whole, as the family component
        return Provider(id=order.ordering_provider_id, family_name=order.ordering_provider_name)
    # echoed the way the hospital sent it (ORC-12 / OBR-16), so the EMR matches its own provider
    return Provider(
        id=xcn.get("id", ""),
        family_name=xcn["family"],
        given_name=xcn.get("given", ""),
        middle_name=xcn.get("middle", ""),
        suffix=xcn.get("suffix", ""),
        prefix=xcn.get("prefix", ""),
        degree=xcn.get("degree", ""),
        id_authority=xcn.get("authority", ""),
    )


def report_message(report: Report, kind: str, addendum: Addendum | None = None) -> ReportMessage:
    study = report.study
    facility, patient, order = study.facility, study.patient, study.order
    application, receiving_facility = oru_receiver(facility)
    sections = list(report_sections(report_content(report), report.values))
    addenda: list[AddendumNote] = []
    if kind == "addendum":
        for each in report.addenda.select_related("author").order_by("sequence"):
            if facility.oru_addenda_as_nte:  # the facility's EMR shows result comments apart
                addenda.append(AddendumNote(each.sequence, each.text, _display(each.author), each.signed_at))
            else:
                sections.append((f"Addendum {each.sequence}", each.text))
    signer = addendum.author if addendum else report.signed_by
    return ReportMessage(
        control_id=control_id_new(),
        sent_at=timezone.now(),
        receiving_application=application,
        receiving_facility=receiving_facility,
        patient=PatientIdentity(
            mrn=patient.mrn if patient else "",
            assigning_authority=patient.assigning_authority if patient else facility.code,
            family_name=patient.family_name if patient else "",
            given_name=patient.given_name if patient else "",
            middle_name=patient.middle_name if patient else "",
            birth_date=patient.birth_date if patient else None,
            sex=patient.sex if patient else "U",
        ),
        order=OrderReference(
            placer_number=order.placer_order_number if order else "",
            filler_number=order.filler_order_number if order else "",
            accession_number=study.accession_number,
            procedure_code=order.procedure_code if order else "",
            procedure_text=(order.procedure_text if order else "") or study.description,
            procedure_coding_system=order.procedure_coding_system if order else "",
            ordering_provider=_ordering_provider(order),
            placer_namespace=order.placer_order_issuer if order else "",
            filler_namespace=order.filler_order_issuer if order else "",
        ),
        # PV1 echoes the order's visit (PV1-19) and patient class (PV1-2)
        visit_number=order.visit_number if order else "",
        patient_class=order.patient_class if order else "",
        status=KIND_STATUS[kind],
        observed_at=exam_instant(study),
        resulted_at=addendum.signed_at if addendum else report.signed_at,
        interpreter=_signer(signer),
        sections=tuple(sections),
        critical=report.is_critical,
        timezone=facility.timezone,
        ai_verdicts=_ai_verdict_lines(report) if facility.ai_verdict_in_oru else (),
        addenda=tuple(addenda),
    )


def _display(user) -> str:
    """An addendum signer as the note's heading names them: "Nadia Neuro" (OBR-32 has the NPI)."""
    return user.get_full_name() or user.username


def _ai_verdict_lines(report: Report) -> tuple[AiVerdictLine, ...]:
    """The reader's verdicts on the study's AI findings, for a facility that wants them in the ORU
    (``Facility.ai_verdict_in_oru``; otherwise they stay with the report only)."""
    return tuple(
        AiVerdictLine(
            finding_code=v.finding.code_value,
            finding_scheme=v.finding.coding_scheme,
            finding_meaning=v.finding.meaning or v.finding.code_value,
            present=v.finding.present,
            verdict=v.verdict,
            algorithm=v.finding.result.algorithm,
        )
        for v in report.ai_verdicts.select_related("finding__result")
    )


def report_delivery_enqueue(
    *, report: Report, kind: str, addendum: Addendum | None = None
) -> OutboundMessage:
    """Queue the ORU for this signature; call inside the signing transaction."""
    return oru_enqueue(
        facility=report.study.facility,
        report=report_message(report, kind, addendum),
        source=report_source(report, kind, addendum),
    )


def on_outbound_acknowledged(sender, source: str, acked_at, **kwargs) -> None:
    """The EMR accepted a final report's ORU: the study's "delivered" milestone (final → EMR ACK)."""
    from worklist.tat import study_milestone_record

    kind, _, rest = source.partition(":")
    report_id, _, what = rest.partition(":")
    if kind != "report" or what != "final" or not report_id.isdigit():
        return
    study_id = Report.objects.filter(pk=int(report_id)).values_list("study_id", flat=True).first()
    if study_id is not None:
        study_milestone_record(study_id=study_id, milestone="delivered", at=acked_at)
