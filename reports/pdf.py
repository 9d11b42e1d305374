"""The signed report as a PDF (WeasyPrint) on the facility's letterhead: patient, exam, the signed
text exactly as signed, the signature line with its SHA-256, and every addendum."""

from __future__ import annotations

from datetime import datetime

from django.template.loader import render_to_string

from radiology.pdf import html_to_pdf
from reports.merge import exam_instant
from reports.models import Report


def report_pdf_context(*, report: Report, at: datetime) -> dict:
    study = report.study
    zone = study.facility.zone
    patient = study.patient if study.patient_id else None
    return {
        "report": report,
        "study": study,
        "facility": study.facility,
        "patient": patient,
        "order": study.order if study.order_id else None,
        "exam_local": exam_instant(study).astimezone(zone),
        "signed_local": report.signed_at.astimezone(zone) if report.signed_at else None,
        "addenda": [
            (addendum, addendum.signed_at.astimezone(zone))
            for addendum in report.addenda.select_related("author")
        ],
        "generated_local": at.astimezone(zone),
    }


def report_pdf(*, report: Report, at: datetime) -> bytes:
    return html_to_pdf(render_to_string("reports/report_pdf.html", report_pdf_context(report=report, at=at)))
