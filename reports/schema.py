"""The shape of a report template, as plain data (DESIGN.md §4 step 5, issue 6).

A template version's ``content`` is JSON::

    {"sections": [
        {"key": "findings", "title": "Findings", "fields": [
            {"key": "hemorrhage", "label": "Intracranial hemorrhage", "kind": "choice",
             "choices": ["None", "Intraparenchymal", "Subarachnoid"], "required": true, "default": "None"},
            {"key": "aspects", "label": "ASPECTS", "kind": "number", "min": 0, "max": 10, "required": true},
            {"key": "findings", "label": "Findings", "kind": "text",
             "default": "{{patient_age}} {{patient_sex}}, {{procedure}}."}
        ]}
    ]}

Field kinds: ``text`` (free text), ``choice`` (one of ``choices``), ``number`` (integer or decimal within
``min``/``max``), ``yesno`` and ``date`` (ISO ``YYYY-MM-DD``). ``required`` fields must be filled to sign
(a draft may be incomplete). ``default`` may hold merge fields ``{{name}}`` (``MERGE_FIELDS``) that are
filled from the order and the DICOM header when a report is started.

Parsing is strict and names the path of each problem ("sections[1].fields[0].kind: …") so a facility
admin editing a template, or an MRRT import, gets an answer they can act on."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation

FIELD_KINDS = ("text", "choice", "number", "yesno", "date")
YES_NO = ("yes", "no")
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_MERGE = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")

MERGE_FIELDS = {
    "patient_age": "the patient's age at the exam, e.g. 67-year-old",
    "patient_sex": "female / male / other / unknown",
    "procedure": "the ordered procedure's description",
    "reason": "the clinical history: every reason for study (OBR-31), OBR-13 and the order's notes",
    "ordering_provider": "the ordering provider's name",
    "study_date": "the exam date at the facility",
    "comparison": "earlier studies of the patient at the facility",
    "contrast": "the contrast agent from the DICOM header, or none",
    "facility": "the facility's name",
}


class TemplateInvalid(ValueError):
    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class TemplateField:
    key: str
    label: str
    kind: str = "text"
    required: bool = False
    choices: tuple[str, ...] = ()
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    default: str = ""


@dataclass(frozen=True)
class TemplateSection:
    key: str
    title: str
    fields: tuple[TemplateField, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class TemplateContent:
    sections: tuple[TemplateSection, ...]

    def fields(self) -> list[TemplateField]:
        return [f for section in self.sections for f in section.fields]


def template_content_parse(data: object) -> TemplateContent:
    """``content`` JSON → TemplateContent, or ``TemplateInvalid`` listing every problem by path."""
    problems: list[str] = []
    if not isinstance(data, dict) or not isinstance(data.get("sections"), list) or not data["sections"]:
        raise TemplateInvalid(["content: needs a non-empty list of sections"])
    sections, keys = [], set()
    for s_index, raw in enumerate(data["sections"]):
        path = f"sections[{s_index}]"
        if not isinstance(raw, dict):
            problems.append(f"{path}: must be an object")
            continue
        fields = []
        for f_index, raw_field in enumerate(raw.get("fields") or []):
            parsed = _field_parse(raw_field, f"{path}.fields[{f_index}]", problems)
            if parsed is None:
                continue
            if parsed.key in keys:
                problems.append(f"{path}.fields[{f_index}].key: “{parsed.key}” is used twice")
            keys.add(parsed.key)
            fields.append(parsed)
        key = str(raw.get("key", ""))
        if not _KEY.match(key):
            problems.append(f"{path}.key: lower-case letters, digits and _ (got “{key}”)")
        sections.append(TemplateSection(key=key, title=str(raw.get("title") or key), fields=tuple(fields)))
    if problems:
        raise TemplateInvalid(problems)
    return TemplateContent(sections=tuple(sections))


def _field_parse(raw: object, path: str, problems: list[str]) -> TemplateField | None:
    if not isinstance(raw, dict):
        problems.append(f"{path}: must be an object")
        return None
    key, kind = str(raw.get("key", "")), raw.get("kind", "text")
    if not _KEY.match(key):
        problems.append(f"{path}.key: lower-case letters, digits and _ (got “{key}”)")
    if kind not in FIELD_KINDS:
        problems.append(f"{path}.kind: one of {', '.join(FIELD_KINDS)} (got “{kind}”)")
    choices = tuple(str(c) for c in raw.get("choices") or ())
    if kind == "choice" and not choices:
        problems.append(f"{path}.choices: a choice field needs at least one choice")
    bounds = []
    for name in ("min", "max"):
        value = raw.get(name)
        try:
            bounds.append(None if value is None else Decimal(str(value)))
        except InvalidOperation:
            problems.append(f"{path}.{name}: not a number")
            bounds.append(None)
    return TemplateField(
        key=key,
        label=str(raw.get("label") or key),
        kind=kind,
        required=bool(raw.get("required", False)),
        choices=choices,
        minimum=bounds[0],
        maximum=bounds[1],
        default=str(raw.get("default", "")),
    )


def template_content_dump(content: TemplateContent) -> dict:
    """The inverse of ``template_content_parse`` (what is stored in ``TemplateVersion.content``)."""

    def field_dump(f: TemplateField) -> dict:
        data: dict[str, object] = {"key": f.key, "label": f.label, "kind": f.kind}
        if f.required:
            data["required"] = True
        if f.choices:
            data["choices"] = list(f.choices)
        for name, bound in (("min", f.minimum), ("max", f.maximum)):
            if bound is not None:
                data[name] = int(bound) if bound == bound.to_integral_value() else float(bound)
        if f.default:
            data["default"] = f.default
        return data

    return {
        "sections": [
            {"key": s.key, "title": s.title, "fields": [field_dump(f) for f in s.fields]}
            for s in content.sections
        ]
    }


# --- values --------------------------------------------------------------------------------------


def field_value_problem(f: TemplateField, value: str) -> str | None:
    """Why ``value`` does not fit ``f`` (None when it fits; an empty value always fits here)."""
    value = (value or "").strip()
    if not value:
        return None
    if f.kind == "choice" and value not in f.choices:
        return f"{f.label}: choose one of {', '.join(f.choices)}"
    if f.kind == "yesno" and value.lower() not in YES_NO:
        return f"{f.label}: yes or no"
    if f.kind == "number":
        try:
            number = Decimal(value)
        except InvalidOperation:
            return f"{f.label}: a number"
        if (f.minimum is not None and number < f.minimum) or (f.maximum is not None and number > f.maximum):
            return f"{f.label}: between {f.minimum} and {f.maximum}"
    if f.kind == "date":
        try:
            date.fromisoformat(value)
        except ValueError:
            return f"{f.label}: a date as YYYY-MM-DD"
    return None


def values_problems(content: TemplateContent, values: dict[str, str], *, signing: bool) -> list[str]:
    """Every problem with a report's field values; at signing, required fields must be filled too."""
    problems = []
    for f in content.fields():
        value = str(values.get(f.key, "") or "")
        if signing and f.required and not value.strip():
            problems.append(f"{f.label}: required to sign")
            continue
        problem = field_value_problem(f, value)
        if problem:
            problems.append(problem)
    return problems


def merge_fill(text: str, context: dict[str, str]) -> str:
    """Replace ``{{name}}`` merge fields; an unknown or empty one becomes an empty string."""
    return _MERGE.sub(lambda m: str(context.get(m.group(1), "") or ""), text)


def merge_field_names(text: str) -> list[str]:
    return _MERGE.findall(text)


def report_sections(content: TemplateContent, values: dict[str, str]) -> list[tuple[str, str]]:
    """The report as (section title, text) pairs, as the ORU OBX lines, the PDF and FHIR present it:
    a free-text field that is the section's narrative (its only field, or labelled as the section) is
    its text; any other filled field is "Label: value" (a findings section of organ-by-organ text
    fields would otherwise read "Normal. Normal. None."). Empty sections are left out."""
    sections = []
    for section in content.sections:
        lines = []
        for f in section.fields:
            value = str(values.get(f.key, "") or "").strip()
            if not value:
                continue
            narrative = f.kind == "text" and (len(section.fields) == 1 or f.label == section.title)
            lines.append(value if narrative else f"{f.label}: {value}")
        if lines:
            sections.append((section.title, "\n".join(lines)))
    return sections
