"""Forms of the template administration pages. Every field has a label; content is edited as JSON
beside a field-by-field preview (docs/reports.md describes the format)."""

from __future__ import annotations

import json
import re

from django import forms

from facilities.models import Facility
from reports.template_services import VARIANTS

VARIANT_CHOICES = [(v, v.capitalize() if v else "Standard") for v in VARIANTS]


def codes_split(text: str) -> list[str]:
    return [c for c in re.split(r"[\s,;]+", text or "") if c]


class FacilityChoice(forms.ModelChoiceField):
    def label_from_instance(self, obj: Facility) -> str:
        return obj.name


class TemplateSelectionForm(forms.Form):
    """What chooses the template for a study."""

    name = forms.CharField(label="Name", max_length=200)
    procedure_codes = forms.CharField(
        label="Procedure codes",
        required=False,
        help_text="CPT or the facility's codes, separated by spaces or commas, e.g. 70450",
    )
    modality = forms.CharField(
        label="Modality", max_length=16, required=False, help_text="Used when no code matches, e.g. CT"
    )
    body_part = forms.CharField(
        label="Body part", max_length=32, required=False, help_text="With modality, e.g. HEAD"
    )
    variant = forms.ChoiceField(
        label="Variant",
        choices=VARIANT_CHOICES,
        required=False,
        help_text="Stroke: used for code-stroke studies of these procedures",
    )

    def clean_procedure_codes(self) -> list[str]:
        return codes_split(self.cleaned_data["procedure_codes"])


class ContentField(forms.CharField):
    widget = forms.Textarea(attrs={"rows": 24, "spellcheck": "false", "class": "code"})

    def to_python(self, value):
        value = super().to_python(value)
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise forms.ValidationError(
                f"Not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
            ) from error


class TemplateCreateForm(TemplateSelectionForm):
    facility = FacilityChoice(label="Facility", queryset=Facility.objects.none(), empty_label=None)
    content = ContentField(label="Content (JSON)")
    field_order = ["facility", "name", "procedure_codes", "modality", "body_part", "variant", "content"]

    def __init__(self, *args, facilities, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["facility"].queryset = facilities


class TemplateEditForm(TemplateSelectionForm):
    is_active = forms.BooleanField(label="Active (used for new reports)", required=False)
    content = ContentField(label="Content (JSON)")
    change_note = forms.CharField(
        label="What changed", max_length=300, required=False, help_text="Kept with the new version"
    )


class CopyForm(forms.Form):
    facility = FacilityChoice(label="Copy to facility", queryset=Facility.objects.none(), empty_label=None)
    name = forms.CharField(label="Name of the copy", max_length=200)

    def __init__(self, *args, facilities, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["facility"].queryset = facilities


class ImportForm(forms.Form):
    file = forms.FileField(label="MRRT template (HTML5 file)")


class ImportTemplateForm(ImportForm):
    facility = FacilityChoice(label="Facility", queryset=Facility.objects.none(), empty_label=None)
    name = forms.CharField(label="Name", max_length=200, required=False, help_text="Empty: the file's title")
    procedure_codes = forms.CharField(
        label="Procedure codes", required=False, help_text="Empty: the codes in the file, if any"
    )
    modality = forms.CharField(label="Modality", max_length=16, required=False)
    body_part = forms.CharField(label="Body part", max_length=32, required=False)

    def __init__(self, *args, facilities, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["facility"].queryset = facilities


class ImportVersionForm(ImportForm):
    change_note = forms.CharField(label="What changed", max_length=300, required=False)


class MacroForm(forms.Form):
    name = forms.CharField(label="Name", max_length=80)
    text = forms.CharField(label="Text", widget=forms.Textarea(attrs={"rows": 4}))


# --- the field-by-field editor -------------------------------------------------------------------
# The content as one plain HTML form (no JavaScript): a row per field with its properties, one blank
# row per section to add a field, one blank section to add a section, an order number to move things
# and a remove box. Posting it rebuilds the content JSON, which is then checked and saved like the
# JSON editor's.


def _slug_key(text: str) -> str:
    key = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60]
    return key if key[:1].isalpha() else f"f_{key}" if key else ""


def _order(value: str, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def content_from_fields_post(post) -> dict:
    """The posted field-by-field form → content (unchecked: the services check it)."""
    sections = []
    for i in range(int(post.get("section_count") or 0) + 1):
        prefix = f"s{i}"
        title, key = post.get(f"{prefix}-title", "").strip(), post.get(f"{prefix}-key", "").strip()
        fields = _fields_from_post(post, prefix)
        if post.get(f"{prefix}-remove") or not (title or key or fields):
            continue
        section = {
            "key": key or _slug_key(title),
            "title": title or key,
            "fields": [f for _, f in sorted(fields)],
        }
        sections.append((_order(post.get(f"{prefix}-order"), i + 1), i, section))
    return {"sections": [section for _, _, section in sorted(sections, key=lambda s: (s[0], s[1]))]}


def _fields_from_post(post, prefix: str) -> list[tuple[tuple[float, int], dict]]:
    fields = []
    for j in range(int(post.get(f"{prefix}-field_count") or 0) + 1):
        name = f"{prefix}-f{j}"
        label, key = post.get(f"{name}-label", "").strip(), post.get(f"{name}-key", "").strip()
        if post.get(f"{name}-remove") or not (label or key):
            continue
        data: dict = {
            "key": key or _slug_key(label),
            "label": label or key,
            "kind": post.get(f"{name}-kind", "text"),
        }
        if post.get(f"{name}-required"):
            data["required"] = True
        choices = [c.strip() for c in post.get(f"{name}-choices", "").splitlines() if c.strip()]
        if choices:
            data["choices"] = choices
        for bound in ("min", "max"):
            if post.get(f"{name}-{bound}", "").strip():
                data[bound] = post[f"{name}-{bound}"].strip()
        if post.get(f"{name}-default", "").strip():
            data["default"] = post[f"{name}-default"].strip()
        fields.append(((_order(post.get(f"{name}-order"), j + 1), j), data))
    return fields


def problem_described(content: dict, problem: str) -> str:
    """``sections[1].fields[2].min: …`` → ``Findings › ASPECTS (min): …`` for the form editor."""
    match = re.match(r"^sections\[(\d+)\](?:\.fields\[(\d+)\])?\.?([a-z_]*): (.*)$", problem)
    if not match:
        return problem
    try:
        section = content["sections"][int(match.group(1))]
        where = section.get("title") or section.get("key") or f"section {int(match.group(1)) + 1}"
        if match.group(2) is not None:
            f = section["fields"][int(match.group(2))]
            where += f" › {f.get('label') or f.get('key')}"
    except (IndexError, KeyError, TypeError):
        return problem
    what = f" ({match.group(3)})" if match.group(3) else ""
    return f"{where}{what}: {match.group(4)}"
