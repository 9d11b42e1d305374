"""Reads for reports: which template a study is reported on."""

from __future__ import annotations

from django.db.models import Q

from credentialing.eligibility import image_modalities
from facilities.models import PriorityClass
from reports.models import ReportTemplate, TemplateVersion


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
