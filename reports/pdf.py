"""The signed report as a PDF (WeasyPrint) on the facility's letterhead: patient, exam, the signed
text exactly as signed, the signature line with its SHA-256, and every addendum."""

from __future__ import annotations

import logging
from datetime import datetime

from django.template.loader import render_to_string

from reports.merge import exam_instant
from reports.models import Report

logging.getLogger("weasyprint.progress").setLevel(logging.WARNING)


def _no_fetch(url: str, *args, **kwargs):
    # Self-contained document: no text a sender or reader typed can make the server fetch a URL.
    raise ValueError(f"the report PDF does not load external resources ({url[:60]})")


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
    from weasyprint import HTML  # imported on use: it loads pango, which most requests never need

    html = render_to_string("reports/report_pdf.html", report_pdf_context(report=report, at=at))
    return HTML(string=html, url_fetcher=_no_fetch).write_pdf()
