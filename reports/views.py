"""The report pages (issue 6, DESIGN.md §4 step 5–6, §8): the editor beside the viewer, the signed
report with its addenda, the PDF, and the monthly charges CSV.

Each view fetches through a permission-checked selector (``access_study_for_report``: 404 for a study
the user may not see, an audit row for one they may) and calls one service; refusals are shown on
the page with what to do."""

from __future__ import annotations

import csv
from datetime import datetime

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from accounts.audit import ReadKind
from facilities.times import iso_text
from imaging.measurements import study_measurements
from imaging.models import Study
from imaging.prior_reports import prior_documents
from imaging.priors import prior_status_text
from imaging.views import _banner as study_banner  # the viewer's patient banner, the same on both pages
from imaging.views import cross_origin_isolated
from reports import services
from reports.ai_verdicts import study_ai_findings, verdicts_posted
from reports.models import AiVerdictChoice, CommunicationMethod, Report, ReportStatus
from reports.pdf import report_pdf
from reports.schema import TemplateContent
from reports.selectors import (
    access_study_for_report,
    charges_for,
    prior_reports,
    report_content,
    report_of_study,
    study_claimant_id,
)
from reports.signals import report_screen
from reports.template_selectors import macros_for
from worklist.selectors import next_held_study

SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("Tab / Shift+Tab", "next / previous field"),
    ("Alt+M", "insert a macro into the text field you are in"),
    ("Ctrl+Enter", "sign (asks for your password or authenticator code)"),
    ("?", "show or hide this list"),
    ("Esc", "close a dialog or this list"),
)

# Where neither the reader nor the facility has macros yet, the editor offers these common phrases.
DEFAULT_MACROS: tuple[dict[str, str], ...] = (
    {"name": "No acute intracranial abnormality", "text": "No acute intracranial abnormality."},
    {"name": "No acute cardiopulmonary process", "text": "No acute cardiopulmonary process."},
    {"name": "Comparison: none", "text": "No prior studies available for comparison."},
    {"name": "Clinical correlation", "text": "Correlation with clinical findings is recommended."},
    {"name": "Follow-up CT", "text": "Follow-up CT in 3 months is recommended."},
)

_STATUS = {
    services.NotClaimant: 403,
    services.NotEligibleToSign: 403,
    services.ReportFinal: 409,
    services.SigningLocked: 429,
}


def _status_for(error: services.ReportError) -> int:
    return next((code for kind, code in _STATUS.items() if isinstance(error, kind)), 400)


def macros_for_editor(user, facility) -> list[dict[str, str]]:
    """The reader's own macros, then the facility's (``macros_for``)."""
    macros = [{"name": m.name, "text": m.text} for m in macros_for(user, facility)]
    return macros or list(DEFAULT_MACROS)


def _field_rows(content: TemplateContent, values: dict) -> list[dict]:
    return [
        {
            "key": section.key,
            "title": section.title,
            "fields": [{"field": f, "value": values.get(f.key, "")} for f in section.fields],
        }
        for section in content.sections
    ]


def _page(request: HttpRequest, study, report: Report, *, status: int = 200, **extra) -> HttpResponse:
    editable = report.status != ReportStatus.FINAL and study_claimant_id(study.pk) == request.user.pk
    content = report_content(report)
    context = {
        "study": study,
        "report": report,
        "banner": study_banner(study),
        "editable": editable,
        "sections": _field_rows(content, report.values),
        "priors": prior_reports(study),
        "prior_status": prior_status_text(study),
        "prior_documents": prior_documents(request.user, study),
        "measurements": study_measurements(study),
        "ai_findings": study_ai_findings(study),
        "ai_verdict_required": study.facility.ai_verdict_required,
        "ai_verdict_choices": AiVerdictChoice.choices,
        "addenda": list(report.addenda.select_related("author")),
        "communications": list(report.communications.all()),
        "methods": CommunicationMethod.choices,
        "macros": macros_for_editor(request.user, study.facility) if editable else [],
        "shortcuts": SHORTCUTS,
        "accepts_preliminary": study.facility.accepts_preliminary,
        "now_local": timezone.now().astimezone(study.facility.zone).strftime("%Y-%m-%dT%H:%M"),
        "theme": "dark",  # a reading-room page (DESIGN.md §8)
        **extra,
    }
    # Cross-origin isolated (docs/viewer.md "Cross-origin isolation"), as OHIF's page is: OHIF in
    # the images pane then gets SharedArrayBuffer (volume/MPR at full speed), and the two-window
    # viewer stays in the editor's browsing-context group (its window name and BroadcastChannel kept).
    return cross_origin_isolated(render(request, "reports/report.html", context, status=status))


def _report_for(request: HttpRequest, study_id: int, *, kind: ReadKind = ReadKind.REPORT):
    study = access_study_for_report(request.user, study_id, kind=kind)
    report = report_of_study(study)
    claimant = study_claimant_id(study.pk) == request.user.pk
    if report is None or (report.status == ReportStatus.DRAFT and not claimant):
        raise Http404("No report yet")
    return study, report


@login_required
@require_GET
def report_page(request: HttpRequest, study_id: int) -> HttpResponse:
    """The editor for the claimant; the signed report (read-only, with addenda) for other readers."""
    study = access_study_for_report(request.user, study_id)
    report = report_of_study(study)
    if study_claimant_id(study.pk) == request.user.pk and (
        report is None or report.status == ReportStatus.DRAFT
    ):
        try:
            report = services.report_start(study_id=study.pk, user=request.user, at=timezone.now())
        except services.ReportError as error:
            return render(
                request,
                "reports/unavailable.html",
                {"study": study, "message": error.message, "theme": "dark"},
                status=_status_for(error),
            )
    if report is None or (report.status == ReportStatus.DRAFT and report.author_id != request.user.pk):
        raise Http404("No report yet")
    if report.status != ReportStatus.FINAL and study_claimant_id(study.pk) == request.user.pk:
        _report_screen(request, study, report, "opened")
    return _page(request, study, report)


def _report_screen(request: HttpRequest, study, report: Report, action: str) -> None:
    """Tell the session's FHIRcast subscribers (reports.signals.report_screen)."""
    session_key = getattr(request.session, "session_key", None) or ""
    report_screen.send(
        sender=Report, report=report, study=study, user=request.user, session_key=session_key, action=action
    )


@login_required
@require_GET
def report_prior_status(request: HttpRequest, study_id: int) -> HttpResponse:
    """The priors line and the priors' own reports (docs/priors.md): the reading screen asks for
    them again when the live channel says a retrieval moved on. The same check as the page: the
    claimant or whoever may see the study; anyone else gets 404."""
    study = access_study_for_report(request.user, study_id, kind=ReadKind.PRIORS)
    context = {
        "study": study,
        "prior_status": prior_status_text(study),
        "prior_documents": prior_documents(request.user, study),
    }
    return render(request, "reports/_priors_fragment.html", context)


def _posted_values(request: HttpRequest, report: Report) -> dict[str, str]:
    keys = [f.key for f in report_content(report).fields()]
    return {key: request.POST.get(f"value-{key}", "") for key in keys if f"value-{key}" in request.POST}


@login_required
@require_POST
def report_autosave(request: HttpRequest, study_id: int) -> HttpResponse:
    """HTMX autosave: the status line (saved at … / what to fix)."""
    study, report = _report_for(request, study_id)
    context = {"study": study}
    try:
        services.report_draft_save(
            report_id=report.pk, user=request.user, values=_posted_values(request, report), at=timezone.now()
        )
    except services.ReportError as error:
        context.update(error=error.message, problems=error.problems)
        return render(request, "reports/_autosave.html", context, status=_status_for(error))
    context["saved_at"] = timezone.now()
    return render(request, "reports/_autosave.html", context)


@login_required
@require_POST
def report_sign_view(request: HttpRequest, study_id: int) -> HttpResponse:
    study, report = _report_for(request, study_id)
    now = timezone.now()
    values = None
    try:
        if report.status != ReportStatus.FINAL and study_claimant_id(study.pk) == request.user.pk:
            # What is on the screen is what is signed (report_sign saves it again under its lock);
            # saved first on its own too, so a refused signature keeps what the reader typed.
            values = _posted_values(request, report)
            services.report_draft_save(report_id=report.pk, user=request.user, values=values, at=now)
        services.report_sign(
            report_id=report.pk,
            user=request.user,
            secret=request.POST.get("secret", ""),
            at=now,
            final=request.POST.get("kind", "final") != "preliminary",
            address=request.META.get("REMOTE_ADDR"),
            ai_verdicts=verdicts_posted(request.POST),
            values=values,
        )
    except services.ReportError as error:
        report.refresh_from_db()
        return _page(request, study, report, status=_status_for(error), sign_error=error, open_sign=True)
    report.refresh_from_db()
    _report_screen(request, study, report, "signed")
    if request.POST.get("then") == "next":
        return _sign_and_next(request, study, now)
    return redirect("reports:report", study_id=study.pk)


def _sign_and_next(request: HttpRequest, signed: Study, at) -> HttpResponse:
    """After Sign & next: the next study the reader holds, in its editor, else their worklist."""
    following = next_held_study(request.user, after=signed.pk, at=at)
    if following is None:
        messages.success(request, "Signed. You hold no other study: here is your worklist.")
        return redirect("worklist:reader")
    messages.success(request, f"Signed {signed.accession_number}. Next: {following.accession_number}.")
    return redirect("reports:report", study_id=following.pk)


@login_required
@require_POST
def report_critical_view(request: HttpRequest, study_id: int) -> HttpResponse:
    """Mark/unmark critical, or record the communication of the critical result."""
    study, report = _report_for(request, study_id)
    now = timezone.now()
    try:
        if request.POST.get("action") == "communicate":
            services.critical_communication_record(
                report_id=report.pk,
                user=request.user,
                person_notified=request.POST.get("person_notified", ""),
                role=request.POST.get("role", ""),
                method=request.POST.get("method", ""),
                communicated_at=_local_datetime(
                    request.POST.get("communicated_at", ""), study.facility.zone, now
                ),
                read_back_confirmed=request.POST.get("read_back_confirmed") == "on",
                at=now,
            )
        else:
            services.report_critical_mark(
                report_id=report.pk, user=request.user, critical=request.POST.get("critical") == "on", at=now
            )
    except services.ReportError as error:
        report.refresh_from_db()
        return _page(request, study, report, status=_status_for(error), critical_error=error)
    return redirect("reports:report", study_id=study.pk)


def _local_datetime(value: str, zone, default: datetime) -> datetime:
    """A ``datetime-local`` input (the facility's wall clock) → an aware instant; empty → now."""
    if not value:
        return default
    try:
        return datetime.fromisoformat(value).replace(tzinfo=zone)
    except ValueError:
        raise services.ReportError("Communicated at: a date and time such as 2026-03-01T14:05") from None


@login_required
@require_POST
def report_addendum_view(request: HttpRequest, study_id: int) -> HttpResponse:
    study, report = _report_for(request, study_id)
    try:
        services.addendum_sign(
            report_id=report.pk,
            user=request.user,
            text=request.POST.get("text", ""),
            secret=request.POST.get("secret", ""),
            at=timezone.now(),
            address=request.META.get("REMOTE_ADDR"),
            ai_verdicts=verdicts_posted(request.POST),
        )
    except services.ReportError as error:
        return _page(
            request,
            study,
            report,
            status=_status_for(error),
            addendum_error=error,
            addendum_text=request.POST.get("text", ""),
        )
    return redirect("reports:report", study_id=study.pk)


@login_required
@require_GET
def report_pdf_view(request: HttpRequest, study_id: int) -> HttpResponse:
    """The signed report as a PDF with the facility's letterhead; a draft has none."""
    study, report = _report_for(request, study_id, kind=ReadKind.PDF)
    if report.status == ReportStatus.DRAFT:
        raise Http404("The report is not signed yet")
    response = HttpResponse(report_pdf(report=report, at=timezone.now()), content_type="application/pdf")
    name = study.accession_number or f"study-{study.pk}"
    response["Content-Disposition"] = f'inline; filename="report-{name}.pdf"'
    return response


CSV_COLUMNS = (
    "signed_at_local",
    "accession",
    "procedure_code",
    "rvu",
    "rate",
    "amount",
    "radiologist",
    "radiologist_npi",
    # corrections are rows of their own (charges are append-only): the original's and the
    # reversal's amounts sum to nothing, the correction's is what is owed
    "charge_id",
    "kind",
    "corrects_charge_id",
    "reason",
    "posted_at_local",
)


@login_required
@require_GET
def charges_csv(request: HttpRequest, facility_code: str, month: str) -> HttpResponse:
    """One facility's charges for one month (facility-local), for operations and its admins."""
    try:
        facility, charges = charges_for(request.user, facility_code=facility_code, month=month)
    except ValueError:
        return HttpResponse("Month: YYYY-MM, e.g. 2026-03", status=400, content_type="text/plain")
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="charges-{facility.code}-{month}.csv"'
    writer = csv.writer(response)
    writer.writerow(CSV_COLUMNS)
    for charge in charges:
        profile = getattr(charge.radiologist, "radiologist_profile", None)
        writer.writerow(
            [
                iso_text(charge.signed_at, facility.zone),
                charge.study.accession_number,
                charge.procedure_code,
                charge.rvu,
                charge.rate,
                charge.amount,
                str(charge.radiologist),
                profile.npi if profile else "",
                charge.pk,
                charge.kind,
                charge.corrects_id or "",
                charge.reason,
                iso_text(charge.posted_at, facility.zone),
            ]
        )
    return response
