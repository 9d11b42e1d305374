"""Reads for template administration, and the one place that decides who may see or change a template.

* Facility admins administer the templates of the facilities they hold ``administer_facility`` on;
  operations (and superusers) every facility's (``facilities_administered_by``).
* Shipped templates (``facility`` NULL) are visible read-only to everyone who may open these pages:
  a facility changes one by copying it. Nobody edits them in the UI (``reports.defaults`` owns them).
* Anything else answers 404, the same as a missing template, so other clients' templates cannot be
  probed (docs/decisions.md)."""

from __future__ import annotations

from django.db.models import Case, IntegerField, Q, QuerySet, Value, When
from django.http import Http404

from facilities.models import Facility
from facilities.selectors import facilities_administered_by
from reports.models import Macro, ReportTemplate, TemplateVersion


def can_administer_templates(user) -> bool:
    """May open the template pages at all: administers at least one facility."""
    return facilities_administered_by(user).exists()


def templates_visible_to(user) -> QuerySet[ReportTemplate]:
    facilities = facilities_administered_by(user)
    return ReportTemplate.objects.filter(
        Q(facility__in=facilities) | Q(facility__isnull=True)
    ).select_related("facility")


def access_template(user, template_id: int, *, write: bool = False) -> ReportTemplate:
    """Fetch a template the user may see (``write``: may change), or 404."""
    template = templates_visible_to(user).filter(pk=template_id).first()
    if template is None or (write and not template_is_editable_by(user, template)):
        raise Http404("No such template")
    return template


def template_is_editable_by(user, template: ReportTemplate) -> bool:
    return (
        template.facility_id is not None
        and facilities_administered_by(user).filter(pk=template.facility_id).exists()
    )


def access_version(user, template_id: int, number: int) -> TemplateVersion:
    template = access_template(user, template_id)
    version = template.versions.filter(number=number).first()
    if version is None:
        raise Http404("No such version")
    return version


def access_administered_facility(user, code: str) -> Facility:
    facility = facilities_administered_by(user).filter(code=code).first()
    if facility is None:
        raise Http404("No such facility")
    return facility


def template_rows(
    user, facility: Facility | None = None
) -> list[tuple[ReportTemplate, TemplateVersion | None]]:
    """The list page: each template with its current version, facility templates first."""
    templates = templates_visible_to(user).prefetch_related("versions")
    if facility is not None:
        templates = templates.filter(Q(facility=facility) | Q(facility__isnull=True))
    rows = []
    for template in templates.order_by("facility__name", "name"):
        versions = sorted(template.versions.all(), key=lambda v: v.number)
        rows.append((template, versions[-1] if versions else None))
    return sorted(
        rows, key=lambda row: (row[0].facility_id is None, row[0].facility.name if row[0].facility else "")
    )


# --- macros --------------------------------------------------------------------------------------


def macros_for(user, facility: Facility) -> QuerySet[Macro]:
    """The macros a radiologist may insert while reporting at ``facility``: their own first, then the
    facility's. (The editor decides whether the user may report there; this only filters.)"""
    return (
        Macro.objects.filter(Q(owner=user) | Q(facility=facility))
        .annotate(scope=Case(When(owner=user, then=Value(0)), default=Value(1), output_field=IntegerField()))
        .order_by("scope", "name")
    )


def facility_macros(facility: Facility) -> QuerySet[Macro]:
    return Macro.objects.filter(facility=facility).order_by("name")


def access_facility_macro(user, macro_id: int) -> Macro:
    macro = Macro.objects.filter(pk=macro_id, facility__in=facilities_administered_by(user)).first()
    if macro is None:
        raise Http404("No such macro")
    return macro
