"""Reads for reports: which template a study is reported on; who may read or write which report;
prior reports; charges."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Q, QuerySet
from django.http import Http404

from accounts.audit import ReadKind, record_phi_access
from credentialing.eligibility import image_modalities
from facilities.models import Facility, PriorityClass
from reports.models import Charge, Report, ReportStatus, ReportTemplate, TemplateVersion
from reports.schema import TemplateContent, template_content_parse


def _body_part(study) -> str:
    """BodyPartExamined from the header, else the routing rule's body part."""
    if study.body_part:
        return study.body_part.upper()
    assignment = getattr(study, "assignment", None)
    rule = assignment.rule if assignment is not None and assignment.rule_id else None
    return (rule.body_part if rule else "").upper()


def template_for_study(study) -> TemplateVersion | None:
    """The current version of the template the facility reads this study on. Precedence: the
    facility's own before a shipped one; a procedure-code match before modality + body part; for a
    code stroke the *stroke* variant first, otherwise a template without a variant first."""
    code = study.order.procedure_code if study.order_id else ""
    modalities = set(image_modalities(study.modalities))
    body_part = _body_part(study)
    stroke = study.is_stroke or study.priority == PriorityClass.STROKE
    best: tuple | None = None
    best_template = None
    templates = ReportTemplate.objects.filter(is_active=True).filter(
        Q(facility_id=study.facility_id) | Q(facility__isnull=True)
    )
    for template in templates:
        if code and code in (template.procedure_codes or []):
            how = 0
        elif (
            template.modality
            and template.modality.upper() in modalities
            and (not template.body_part or template.body_part.upper() == body_part)
        ):
            how = 1 if template.body_part else 2
        else:
            continue
        variant_fit = 0 if (template.variant == "stroke") == stroke else 1
        rank = (template.facility_id is None, how, variant_fit, template.pk)
        if best is None or rank < best:
            best, best_template = rank, template
    return best_template.current_version() if best_template else None


# --- reports: who may read or write which ------------------------------------------------------------
#
# * the claimant of a study writes its report, and reads it in any state (even when their shift
#   ended a minute ago: signing then tells them why it is refused);
# * anyone who may see the study (``imaging.selectors.studies_visible_to``: operations, the medical
#   director, the facility's admins, radiologists eligible for it now) reads its *signed* report
#   (preliminary or final) — never another reader's draft;
# * everyone else: 404, the same answer as for a missing report.

SIGNED_STATUSES = (ReportStatus.PRELIMINARY, ReportStatus.FINAL)


def study_claimant_id(study_id: int) -> int | None:
    from worklist.models import StudyAssignment

    return StudyAssignment.objects.filter(study_id=study_id).values_list("claimed_by_id", flat=True).first()


def reports_visible_to(user, *, at: datetime | None = None) -> QuerySet[Report]:
    from imaging.selectors import studies_visible_to

    if not user.is_authenticated:
        return Report.objects.none()
    signed = Q(status__in=SIGNED_STATUSES, study__in=studies_visible_to(user, at=at).values("pk"))
    visible = Report.objects.filter(signed | Q(study__assignment__claimed_by=user))
    return visible.exclude(pk__in=_blinded_report_ids(user))


def _blinded_report_ids(user) -> QuerySet:
    # qa builds on reports; imported at call time to keep the dependency one-way at import
    from qa.selectors import blinded_reports_for

    return blinded_reports_for(user)


def access_report(user, report_id: int) -> Report:
    """Fetch a report the user may read and record the read in the audit log, or 404."""
    report = (
        reports_visible_to(user)
        .select_related("study", "study__facility", "study__patient", "study__order", "template_version")
        .filter(pk=report_id)
        .first()
    )
    if report is None:
        raise Http404("No such report")
    record_phi_access(report, kind=ReadKind.REPORT)
    return report


def access_study_for_report(user, study_id: int, *, kind: ReadKind = ReadKind.REPORT):
    """The study whose report page the user opens: its claimant always (whatever eligibility says
    now), otherwise whoever may see the study (``access_study``: 404 and an audit row)."""
    from imaging.models import Study
    from imaging.selectors import access_study

    if study_claimant_id(study_id) == user.pk:
        study = Study.objects.select_related("facility", "patient", "order").get(pk=study_id)
        record_phi_access(study, kind=kind)
        return study
    # a blinded reviewer sees the study's images, never its report page (it names the signer)
    if Report.objects.filter(study_id=study_id, pk__in=_blinded_report_ids(user)).exists():
        raise Http404("No such study")
    return access_study(user, study_id, kind=kind)


def report_of_study(study) -> Report | None:
    return Report.objects.select_related("template_version", "signed_by").filter(study=study).first()


def prior_reports(study) -> list[Report]:
    """Signed reports of the same patient's earlier studies at the same facility, newest first (what
    the editor shows beside the template). Signed text only: another reader's draft is not a report."""
    if not study.patient_id:
        return []
    return list(
        Report.objects.filter(
            study__facility_id=study.facility_id,
            study__patient_id=study.patient_id,
            status__in=SIGNED_STATUSES,
        )
        .exclude(study_id=study.pk)
        .select_related("study", "study__order", "signed_by")
        .prefetch_related("addenda")
        .order_by("-signed_at")[:10]
    )


# --- billing -----------------------------------------------------------------------------------------


def month_bounds(month: str, zone) -> tuple[datetime, datetime]:
    """``YYYY-MM`` → [first instant, first instant of the next month) in the facility's zone: a read
    signed at 23:30 on 31 March in Chicago belongs to March's invoice."""
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=zone)
    following = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return start, following


def charges_for(user, *, facility_code: str, month: str) -> tuple[Facility, QuerySet[Charge]]:
    """The facility's charges posted in ``month`` — a read's own row when it was signed, a
    correction's rows when they were posted — for operations and that facility's admins only
    (404 for anyone else, as for a missing facility). ``ValueError`` for a malformed month."""
    from facilities.selectors import facilities_administered_by

    facility = facilities_administered_by(user).filter(code=facility_code).first()
    if facility is None:
        raise Http404("No such facility")
    start, end = month_bounds(month, facility.zone)
    charges = (
        Charge.objects.filter(facility=facility, posted_at__gte=start, posted_at__lt=end)
        .select_related("study", "radiologist", "radiologist__radiologist_profile", "posted_by")
        .order_by("posted_at", "id")
    )
    return facility, charges


def report_content(report: Report) -> TemplateContent:
    """The template the report is written on, as parsed content (its version never changes)."""
    return template_content_parse(report.template_version.content)
