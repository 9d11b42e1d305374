"""Writes to report templates and macros, and the pure helpers their pages need (diff, preview).

A template's content lives in numbered ``TemplateVersion`` rows that never change (a database trigger
refuses UPDATE, ``reports.setup``): every edit of the content adds the next version, so a
report keeps exactly the template it was written on. The template row itself holds what chooses it
(name, procedure codes, modality + body part, variant, active), which may change without a version."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from facilities.models import Facility
from reports.models import Macro, ReportTemplate, TemplateVersion
from reports.schema import (
    MERGE_FIELDS,
    TemplateContent,
    TemplateField,
    TemplateInvalid,
    field_value_problem,
    merge_field_names,
    merge_fill,
    report_sections,
    template_content_dump,
    template_content_parse,
)

VARIANTS = ("", "stroke")
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,15}$")


# --- content -------------------------------------------------------------------------------------


def template_content_validate(data: object) -> TemplateContent:
    """The schema's strict parse plus what only makes sense for a whole template: a default must fit
    its own field (a choice among the choices, a number within range) and may only use known merge
    fields; ``min`` ≤ ``max``. Every problem is named by its path, as the parser does."""
    content = template_content_parse(data)
    problems = []
    for s_index, section in enumerate(content.sections):
        for f_index, f in enumerate(section.fields):
            problems += _field_problems(f, f"sections[{s_index}].fields[{f_index}]")
    if problems:
        raise TemplateInvalid(problems)
    return content


def _field_problems(f: TemplateField, path: str) -> list[str]:
    problems = []
    unknown = sorted(set(merge_field_names(f.default)) - set(MERGE_FIELDS))
    if unknown:
        problems.append(
            f"{path}.default: unknown merge field {', '.join(unknown)} (known: {', '.join(MERGE_FIELDS)})"
        )
    if f.minimum is not None and f.maximum is not None and f.minimum > f.maximum:
        problems.append(f"{path}.min: larger than max")
    if (f.minimum is not None or f.maximum is not None) and f.kind != "number":
        problems.append(f"{path}: min/max only apply to a number field")
    if f.choices and f.kind != "choice":
        problems.append(f"{path}.choices: only a choice field has choices")
    if f.default and not merge_field_names(f.default):
        problem = field_value_problem(f, f.default)
        if problem:
            problems.append(f"{path}.default: {problem}")
    return problems


def template_content_canonical(content: object) -> dict:
    return template_content_dump(template_content_validate(content))


# --- templates -----------------------------------------------------------------------------------


def _codes_clean(procedure_codes) -> list[str]:
    codes = []
    for code in procedure_codes or ():
        code = str(code).strip()
        if not code:
            continue
        if not _CODE.match(code):
            raise ValidationError({"procedure_codes": f"“{code}” is not a procedure code (e.g. CPT 70450)"})
        if code not in codes:
            codes.append(code)
    return codes


def _selection_clean(*, name: str, procedure_codes, modality: str, body_part: str, variant: str) -> dict:
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "A template needs a name"})
    if variant not in VARIANTS:
        raise ValidationError({"variant": f"one of: none, {', '.join(v for v in VARIANTS if v)}"})
    codes = _codes_clean(procedure_codes)
    modality, body_part = (modality or "").strip().upper(), (body_part or "").strip().upper()
    if not codes and not modality:
        raise ValidationError(
            {"procedure_codes": "Give procedure codes or a modality: otherwise no study would use it"}
        )
    return {
        "name": name,
        "procedure_codes": codes,
        "modality": modality,
        "body_part": body_part,
        "variant": variant,
    }


def _name_taken(facility: Facility | None, name: str, exclude_pk: int | None = None) -> bool:
    others = ReportTemplate.objects.filter(facility=facility, name=name)
    return others.exclude(pk=exclude_pk).exists() if exclude_pk else others.exists()


@transaction.atomic
def template_create(
    *,
    facility: Facility | None,
    name: str,
    content: object,
    user,
    procedure_codes=(),
    modality: str = "",
    body_part: str = "",
    variant: str = "",
    change_note: str = "",
) -> ReportTemplate:
    """A new template with its version 1. ``facility`` None is a shipped template (``reports.defaults``)."""
    fields = _selection_clean(
        name=name, procedure_codes=procedure_codes, modality=modality, body_part=body_part, variant=variant
    )
    canonical = template_content_canonical(content)
    if _name_taken(facility, fields["name"]):
        raise ValidationError(
            {"name": f"{facility or 'ReadRoom'} already has a template named “{fields['name']}”"}
        )
    template = ReportTemplate.objects.create(facility=facility, **fields)
    TemplateVersion.objects.create(
        template=template, number=1, content=canonical, change_note=change_note or "Created", created_by=user
    )
    return template


@transaction.atomic
def template_update(
    *,
    template: ReportTemplate,
    user,
    name: str,
    procedure_codes,
    modality: str,
    body_part: str,
    variant: str,
    is_active: bool,
) -> ReportTemplate:
    """Change what chooses the template (not its content: that is ``template_version_add``)."""
    fields = _selection_clean(
        name=name, procedure_codes=procedure_codes, modality=modality, body_part=body_part, variant=variant
    )
    if _name_taken(template.facility, fields["name"], exclude_pk=template.pk):
        raise ValidationError({"name": f"another template is named “{fields['name']}”"})
    for attribute, value in {**fields, "is_active": is_active}.items():
        setattr(template, attribute, value)
    template.save()
    return template


@transaction.atomic
def template_version_add(
    *, template: ReportTemplate, content: object, change_note: str, user
) -> TemplateVersion:
    """The next version of ``template``. Earlier versions stay as they were (reports point at them)."""
    canonical = template_content_canonical(content)
    # Lock the template row so two admins saving at once get versions n+1 and n+2, not a clash on
    # the unique (template, number) constraint.
    ReportTemplate.objects.select_for_update().filter(pk=template.pk).first()
    last = template.versions.order_by("-number").values_list("number", flat=True).first() or 0
    try:
        with transaction.atomic():
            return TemplateVersion.objects.create(
                template=template,
                number=last + 1,
                content=canonical,
                change_note=(change_note or "").strip()[:300],
                created_by=user,
            )
    except IntegrityError as error:  # SQLite has no row locks: a concurrent save took the number
        raise ValidationError(
            "Someone saved this template at the same moment; reload and try again"
        ) from error


@transaction.atomic
def template_edit(
    *, template: ReportTemplate, user, content: object, change_note: str, **selection
) -> TemplateVersion | None:
    """The edit page's save: what chooses the template (``template_update``'s fields) and, when the
    content differs from the current version, a new version. Both or neither."""
    template_update(template=template, user=user, **selection)
    current = template.current_version()
    if current is not None and template_content_canonical(content) == current.content:
        return None
    return template_version_add(template=template, content=content, change_note=change_note, user=user)


@transaction.atomic
def template_copy(*, template: ReportTemplate, facility: Facility, user, name: str = "") -> ReportTemplate:
    """A facility's own copy of a (usually shipped) template: from then on the facility's copy is the
    one its studies are read on (``template_for_study`` prefers it) and its admins may edit it."""
    version = template.current_version()
    name = (name or template.name).strip()
    if _name_taken(facility, name):
        raise ValidationError({"name": f"{facility.name} already has a template named “{name}”"})
    return template_create(
        facility=facility,
        name=name,
        content=version.content,
        user=user,
        procedure_codes=template.procedure_codes,
        modality=template.modality,
        body_part=template.body_part,
        variant=template.variant,
        change_note=f"Copied from “{template.name}” version {version.number}",
    )


# --- diff ----------------------------------------------------------------------------------------


def _field_lines(f: TemplateField) -> list[str]:
    head = f"  {f.key} · {f.kind}{' · required' if f.required else ''}"
    lines = [head, f"    label: {f.label}"]
    if f.choices:
        lines.append(f"    choices: {' | '.join(f.choices)}")
    if f.minimum is not None or f.maximum is not None:
        lines.append(f"    range: {_number(f.minimum)} to {_number(f.maximum)}")
    if f.default:
        lines += [f"    default: {line}" for line in f.default.splitlines() or [""]]
    return lines


def decimal_text(value: Decimal) -> str:
    """10 not 1E+1, 0.5 not 0.50."""
    return f"{value.normalize():f}"


def _number(value: Decimal | None) -> str:
    return "—" if value is None else decimal_text(value)


def template_text(content: TemplateContent) -> list[str]:
    """One canonical line-per-fact rendering of a template: what the diff compares."""
    lines = []
    for section in content.sections:
        lines.append(f"[{section.key}] {section.title}")
        for f in section.fields:
            lines += _field_lines(f)
    return lines


@dataclass(frozen=True)
class TemplateDiff:
    changes: list[str]  # field by field: "findings.aspects: required no → yes"
    unified: list[str]  # unified diff of template_text


def template_version_diff(a: TemplateVersion, b: TemplateVersion) -> TemplateDiff:
    old, new = template_content_parse(a.content), template_content_parse(b.content)
    unified = list(
        difflib.unified_diff(
            template_text(old), template_text(new), f"version {a.number}", f"version {b.number}", lineterm=""
        )
    )
    return TemplateDiff(changes=_changes(old, new), unified=unified)


_COMPARED = ("label", "kind", "required", "choices", "minimum", "maximum", "default")


def _changes(old: TemplateContent, new: TemplateContent) -> list[str]:
    changes = []
    old_sections = {s.key: s for s in old.sections}
    new_sections = {s.key: s for s in new.sections}
    for key in new_sections.keys() - old_sections.keys():
        changes.append(f"section {key} added")
    for key in old_sections.keys() - new_sections.keys():
        changes.append(f"section {key} removed")
    for key in old_sections.keys() & new_sections.keys():
        if old_sections[key].title != new_sections[key].title:
            changes.append(f"section {key}: title “{old_sections[key].title}” → “{new_sections[key].title}”")
    if [k for k in (s.key for s in old.sections) if k in new_sections] != [
        k for k in (s.key for s in new.sections) if k in old_sections
    ]:
        changes.append("sections reordered")
    where_old = {f.key: (s.key, f) for s in old.sections for f in s.fields}
    where_new = {f.key: (s.key, f) for s in new.sections for f in s.fields}
    for key, (section, _f) in where_new.items():
        if key not in where_old:
            changes.append(f"{section}.{key} added")
    for key, (section, _f) in where_old.items():
        if key not in where_new:
            changes.append(f"{section}.{key} removed")
    for key in where_old.keys() & where_new.keys():
        (s_old, f_old), (s_new, f_new) = where_old[key], where_new[key]
        if s_old != s_new:
            changes.append(f"{key} moved from {s_old} to {s_new}")
        for attribute in _COMPARED:
            before, after = getattr(f_old, attribute), getattr(f_new, attribute)
            if before != after:
                changes.append(f"{s_new}.{key}: {attribute} {_show(before)} → {_show(after)}")
    return sorted(changes)


def _show(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return " | ".join(value) or "—"
    if isinstance(value, Decimal):
        return _number(value)
    return f"“{value}”" if value else "—"


# --- preview -------------------------------------------------------------------------------------

# A made-up patient and order, to show what a radiologist will see when a report is started.
SAMPLE_MERGE_CONTEXT = {
    "patient_age": "67-year-old",
    "patient_sex": "female",
    "reason": "Sudden left-sided weakness and slurred speech, last known well 40 minutes ago",
    "ordering_provider": "Dr Alex Sample (Emergency Medicine)",
    "comparison": "CT head without contrast, 2025-03-02",
    "contrast": "none",
}


@dataclass(frozen=True)
class PreviewField:
    field: TemplateField
    value: str


@dataclass(frozen=True)
class TemplatePreview:
    context: dict[str, str]
    sections: list[tuple[str, list[PreviewField]]]
    text: list[tuple[str, str]]  # the report as the EMR would get it, with the defaults filled in


def sample_merge_context(template: ReportTemplate | None) -> dict[str, str]:
    context = dict(SAMPLE_MERGE_CONTEXT)
    context["procedure"] = template.name if template else "CT head without contrast"
    context["facility"] = template.facility.name if template and template.facility else "Sample Hospital"
    context["study_date"] = timezone.localdate().isoformat()
    return context


def template_preview(version: TemplateVersion | None = None, *, content: object = None) -> TemplatePreview:
    """The template filled with sample data: every default's merge fields replaced as they would be
    when a radiologist starts a report. Pass a saved ``version`` or unsaved ``content`` (the editor's
    preview before saving; it raises TemplateInvalid like saving would)."""
    template = version.template if version is not None else None
    parsed = template_content_validate(version.content if version is not None else content)
    context = sample_merge_context(template)
    values = {f.key: merge_fill(f.default, context) for f in parsed.fields()}
    sections = [(s.title, [PreviewField(f, values[f.key]) for f in s.fields]) for s in parsed.sections]
    return TemplatePreview(context=context, sections=sections, text=report_sections(parsed, values))


# --- macros --------------------------------------------------------------------------------------


def _macro_clean(name: str, text: str) -> tuple[str, str]:
    name, text = (name or "").strip(), (text or "").strip()
    if not name:
        raise ValidationError({"name": "A macro needs a name"})
    if not text:
        raise ValidationError({"text": "A macro needs its text"})
    return name, text


@transaction.atomic
def macro_create(*, name: str, text: str, user, facility: Facility | None = None, owner=None) -> Macro:
    """A facility's macro (``facility``) or a radiologist's own (``owner``)."""
    if (facility is None) == (owner is None):
        raise ValidationError("A macro belongs to a facility or to one radiologist")
    name, text = _macro_clean(name, text)
    if Macro.objects.filter(facility=facility, owner=owner, name=name).exists():
        raise ValidationError({"name": f"There is already a macro named “{name}”"})
    return Macro.objects.create(facility=facility, owner=owner, name=name, text=text)


@transaction.atomic
def macro_update(*, macro: Macro, name: str, text: str, user) -> Macro:
    name, text = _macro_clean(name, text)
    if (
        Macro.objects.filter(facility=macro.facility, owner=macro.owner, name=name)
        .exclude(pk=macro.pk)
        .exists()
    ):
        raise ValidationError({"name": f"There is already a macro named “{name}”"})
    macro.name, macro.text = name, text
    macro.save(update_fields=["name", "text", "updated_at"])
    return macro


@transaction.atomic
def macro_delete(*, macro: Macro, user) -> None:
    macro.delete()
