"""Signed reports as FHIR R4 ``DiagnosticReport``: ``GET /fhir/r4/DiagnosticReport/<report id>`` and
the search ``GET /fhir/r4/DiagnosticReport?…``.

Only signed reports exist for FHIR: a draft answers 404, like a report of a study the caller may not
see (``reports_visible_to`` / ``access_study`` decide, and the read is audited). Status:
``preliminary`` for a wet read, ``final``, and ``amended`` once an addendum is signed (FHIR R4:
"subsequent to being final, the report has been modified"). presentedForm carries the signed text (with
any addenda) and, on a read, the signed PDF; search results leave the PDF out (one rendering per entry
would make a page take minutes) and say so with the SUBSETTED tag."""

from __future__ import annotations

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from accounts.audit import ReadKind
from imaging.selectors import access_study
from interfaces.fhir.identifiers import facility_number_q
from interfaces.fhir.resources import DiagnosticReportSnapshot, ReportAuthor, diagnostic_report_resource
from interfaces.fhir.search import ResourceSearch, SearchParameter, date_q, id_parameter, standard
from interfaces.fhir.searches import code_q, patient_parameters
from interfaces.fhir.views import FhirView
from reports.merge import exam_instant, exam_instant_expression
from reports.models import Addendum, Report, ReportStatus
from reports.pdf import report_pdf
from reports.schema import report_sections
from reports.selectors import report_content, reports_visible_to

FHIR_STATUS = {ReportStatus.PRELIMINARY: "preliminary", ReportStatus.FINAL: "final"}


def report_snapshot(report: Report, *, with_pdf: bool = True) -> DiagnosticReportSnapshot:
    study = report.study
    addenda = sorted(report.addenda.all(), key=lambda a: a.sequence)  # prefetched in searches
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
        subsetted=not with_pdf,
    )


class DiagnosticReportView(FhirView):
    def get(self, request, report_id: int):
        # ``reports_visible_to``: a blinded reviewer's case is 404 here too (it names the signer)
        report = (
            reports_visible_to(request.user)
            .select_related("study", "signed_by", "template_version")
            .filter(pk=report_id, status__in=FHIR_STATUS)
            .first()
        )
        if report is None:
            raise Http404("No such report")
        report.study = access_study(request.user, report.study_id, kind=ReadKind.FHIR)  # 404 alike; audited
        return self.respond(diagnostic_report_resource(report_snapshot(report)))


# --- search --------------------------------------------------------------------------------------

_AMENDED = Q(amended=True)
# ``report_snapshot``'s status in SQL: an addendum makes any signed report amended.
REPORT_STATUSES = {
    "preliminary": Q(status=ReportStatus.PRELIMINARY) & ~_AMENDED,
    "final": Q(status=ReportStatus.FINAL) & ~_AMENDED,
    "amended": _AMENDED,
}


def reports_for_fhir(user) -> QuerySet:
    return (
        reports_visible_to(user)
        .filter(status__in=FHIR_STATUS)
        .select_related(
            "study__facility",
            "study__patient__facility",
            "study__order__facility",
            "signed_by__radiologist_profile",
            "template_version",
        )
        .prefetch_related("addenda")
        .annotate(
            exam_at=exam_instant_expression("study__"),
            amended=Exists(Addendum.objects.filter(report=OuterRef("pk"))),
        )
    )


DIAGNOSTIC_REPORT = ResourceSearch(
    type="DiagnosticReport",
    documentation="Signed reports (preliminary, final, amended) of the studies the caller may see. "
    "Search results carry the text but not the PDF (tagged SUBSETTED); a read carries both.",
    visible=reports_for_fhir,
    resource=lambda report: diagnostic_report_resource(report_snapshot(report, with_pdf=False)),
    parameters=(
        id_parameter("DiagnosticReport"),
        SearchParameter(
            "identifier",
            "token",
            lambda token, _: facility_number_q(
                token, {"accession": "study__accession_number"}, facility_path="study__facility"
            ),
            "The study's accession number (`value`, or `urn:readroom:facility:<code>:accession|value`)",
            definition=standard("clinical", "identifier"),
        ),
        *patient_parameters("DiagnosticReport", path="study__patient"),
        SearchParameter(
            "status",
            "token",
            lambda token, _: code_q(
                token, REPORT_STATUSES, system="http://hl7.org/fhir/diagnostic-report-status"
            ),
            "preliminary | final | amended (an addendum was signed)",
            definition=standard("DiagnosticReport", "status"),
        ),
        SearchParameter(
            "date",
            "date",
            lambda value, _: date_q(value, "exam_at", facility_path="study__facility"),
            "When the exam took place (effectiveDateTime), with prefixes; a value without a zone is "
            "the facility's local time",
            definition=standard("clinical", "date"),
        ),
    ),
    chains=("patient.identifier",),
)
