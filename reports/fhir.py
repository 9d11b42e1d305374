"""A signed report as FHIR R4 ``DiagnosticReport`` (``GET /fhir/r4/DiagnosticReport/<report id>``).

Only signed reports exist for FHIR: a draft answers 404, like a report of a study the caller may not
see (``access_study`` decides, and writes the PHI audit row). Status: ``preliminary`` for a wet read,
``final``, and ``amended`` once an addendum is signed (FHIR R4: "subsequent to being final, the report
has been modified"). presentedForm carries the signed text (with any addenda) and the signed PDF."""

from __future__ import annotations

from django.http import Http404
from django.utils import timezone

from imaging.selectors import access_study
from interfaces.fhir.resources import DiagnosticReportSnapshot, ReportAuthor, diagnostic_report_resource
from interfaces.fhir.views import FhirView, fhir_response
from reports.merge import exam_instant
from reports.models import Report, ReportStatus
from reports.pdf import report_pdf
from reports.schema import report_sections
from reports.selectors import report_content

FHIR_STATUS = {ReportStatus.PRELIMINARY: "preliminary", ReportStatus.FINAL: "final"}


def report_snapshot(report: Report, *, with_pdf: bool = True) -> DiagnosticReportSnapshot:
    study = report.study
    addenda = list(report.addenda.order_by("sequence"))
    text = report.signed_text + "".join(f"\n\nAddendum {a.sequence}:\n{a.text}" for a in addenda)
    impression = next(
        (
            body
            for title, body in report_sections(report_content(report), report.values)
            if "impression" in title.lower()
        ),
        "",
    )
    signer = report.signed_by
    profile = getattr(signer, "radiologist_profile", None)
    procedure = (study.order.procedure_text if study.order_id else "") or study.description
    status = "amended" if addenda else FHIR_STATUS[report.status]
    return DiagnosticReportSnapshot(
        id=str(report.pk),
        status=status,
        study=study,
        effective_at=exam_instant(study),
        issued=addenda[-1].signed_at if addenda else report.signed_at,
        performer=ReportAuthor(display=f"{signer}", npi=profile.npi if profile else ""),
        conclusion=impression,
        text=text,
        title=f"{procedure} — {status} report",
        pdf=report_pdf(report=report, at=timezone.now()) if with_pdf else None,
    )


class DiagnosticReportView(FhirView):
    def get(self, request, report_id: int):
        report = (
            Report.objects.select_related("study", "signed_by", "template_version")
            .filter(pk=report_id, status__in=FHIR_STATUS)
            .first()
        )
        if report is None:
            raise Http404("No such report")
        report.study = access_study(request.user, report.study_id)  # 404 alike; audited
        return fhir_response(diagnostic_report_resource(report_snapshot(report)))
