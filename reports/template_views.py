"""Pages for facility admins (and operations): report templates, their versions, diff, preview, MRRT
import/export, and facility macros. Every view fetches through ``reports.template_selectors`` (which
decides scope: another facility's template is a 404) and calls one service."""

from __future__ import annotations

import json

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.text import slugify
from django.views.decorators.http import require_POST

from accounts.decorators import role_required
from facilities.selectors import facilities_administered_by
from reports import template_forms as tf
from reports import template_services
from reports.mrrt import MrrtInvalid, mrrt_template_import, mrrt_version_import, template_mrrt_export
from reports.schema import FIELD_KINDS, MERGE_FIELDS, TemplateInvalid
from reports.template_selectors import (
    access_administered_facility,
    access_facility_macro,
    access_template,
    access_version,
    can_administer_templates,
    facility_macros,
    template_is_editable_by,
    template_rows,
)
from reports.template_services import (
    macro_create,
    macro_delete,
    macro_update,
    template_copy,
    template_create,
    template_preview,
    template_version_diff,
)

REFUSED = "Report templates are kept by facility admins and operations."


template_admin = role_required(can_administer_templates, REFUSED)


def _errors_to_form(
    form, error: ValidationError | TemplateInvalid | MrrtInvalid, content_field: str = "content"
):
    if isinstance(error, TemplateInvalid | MrrtInvalid):
        for problem in error.problems:
            form.add_error(content_field, problem)
    elif hasattr(error, "error_dict"):
        for name, errors in error.message_dict.items():
            form.add_error(name if name in form.fields else None, errors)
    else:
        form.add_error(None, error.messages)


def _pretty(content: dict) -> str:
    return json.dumps(content, indent=2, ensure_ascii=False)


HELP = {"kinds": FIELD_KINDS, "merge_fields": MERGE_FIELDS}


# --- templates -----------------------------------------------------------------------------------


@template_admin
def template_list(request: HttpRequest) -> HttpResponse:
    facilities = facilities_administered_by(request.user).order_by("name")
    code = request.GET.get("facility")
    facility = access_administered_facility(request.user, code) if code else None
    rows = template_rows(request.user, facility)
    context = {"rows": rows, "facilities": facilities, "facility": facility}
    return render(request, "reports/template_list.html", context)


@template_admin
def template_new(request: HttpRequest) -> HttpResponse:
    facilities = facilities_administered_by(request.user).order_by("name")
    initial = {"content": _pretty(_starter_content())}
    form = tf.TemplateCreateForm(request.POST or None, facilities=facilities, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            template = template_create(
                facility=data["facility"],
                name=data["name"],
                content=data["content"],
                user=request.user,
                procedure_codes=data["procedure_codes"],
                modality=data["modality"],
                body_part=data["body_part"],
                variant=data["variant"],
            )
        except (ValidationError, TemplateInvalid) as error:
            _errors_to_form(form, error)
        else:
            messages.success(request, f"Template “{template.name}” created as version 1.")
            return redirect("reports:template_detail", template.pk)
    return render(request, "reports/template_form.html", {"form": form, "help": HELP, "template": None})


def _starter_content() -> dict:
    return {
        "sections": [
            {
                "key": "findings",
                "title": "Findings",
                "fields": [{"key": "findings", "label": "Findings", "kind": "text"}],
            },
            {
                "key": "impression",
                "title": "Impression",
                "fields": [{"key": "impression", "label": "Impression", "kind": "text", "required": True}],
            },
        ]
    }


@template_admin
def template_detail(request: HttpRequest, template_id: int) -> HttpResponse:
    template = access_template(request.user, template_id)
    versions = list(template.versions.select_related("created_by").order_by("-number"))
    facilities = facilities_administered_by(request.user).order_by("name")
    context = {
        "template": template,
        "versions": versions,
        "editable": template_is_editable_by(request.user, template),
        "copy_form": tf.CopyForm(facilities=facilities, initial={"name": template.name}),
        "import_form": tf.ImportVersionForm(),
    }
    return render(request, "reports/template_detail.html", context)


@template_admin
def template_edit(request: HttpRequest, template_id: int) -> HttpResponse:
    template = access_template(request.user, template_id, write=True)
    current = template.current_version()
    initial = {
        **_selection_initial(template),
        "is_active": template.is_active,
        "content": _pretty(current.content),
    }
    form = tf.TemplateEditForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            version = template_services.template_edit(
                template=template,
                user=request.user,
                name=data["name"],
                procedure_codes=data["procedure_codes"],
                modality=data["modality"],
                body_part=data["body_part"],
                variant=data["variant"],
                is_active=data["is_active"],
                content=data["content"],
                change_note=data["change_note"],
            )
        except (ValidationError, TemplateInvalid) as error:
            _errors_to_form(form, error)
        else:
            if version is None:
                messages.success(request, "Saved; the fields did not change, so there is no new version.")
            else:
                messages.success(request, f"Saved as version {version.number}.")
            return redirect("reports:template_detail", template.pk)
    context = {"form": form, "help": HELP, "template": template, "current": current}
    return render(request, "reports/template_form.html", context)


@template_admin
def template_fields_edit(request: HttpRequest, template_id: int) -> HttpResponse:
    """The friendlier editor: a row per field (no JSON); saving changed fields makes a new version."""
    template = access_template(request.user, template_id, write=True)
    current = template.current_version()
    form = tf.TemplateSelectionForm(request.POST or None, initial=_selection_initial(template))
    content, problems = current.content, []
    if request.method == "POST":
        content = tf.content_from_fields_post(request.POST)
        if form.is_valid():
            try:
                version = template_services.template_edit(
                    template=template,
                    user=request.user,
                    content=content,
                    change_note=request.POST.get("change_note", ""),
                    is_active=bool(request.POST.get("is_active")),
                    **form.cleaned_data,
                )
            except TemplateInvalid as invalid:
                problems = [tf.problem_described(content, p) for p in invalid.problems]
            except ValidationError as error:
                _errors_to_form(form, error)
            else:
                number = (
                    f"version {version.number}" if version else "no new version (the fields did not change)"
                )
                messages.success(request, f"Saved: {number}.")
                return redirect("reports:template_detail", template.pk)
    context = {
        "template": template,
        "current": current,
        "form": form,
        "sections": _editor_rows(content),
        "kinds": FIELD_KINDS,
        "problems": problems,
        "is_active": template.is_active if request.method != "POST" else bool(request.POST.get("is_active")),
        "change_note": request.POST.get("change_note", ""),
    }
    return render(request, "reports/template_fields.html", context)


def _selection_initial(template) -> dict:
    return {
        "name": template.name,
        "procedure_codes": " ".join(template.procedure_codes or []),
        "modality": template.modality,
        "body_part": template.body_part,
        "variant": template.variant,
    }


def _editor_rows(content: dict) -> list[dict]:
    """Sections and fields with their form indices, each with one blank row to add to it."""
    blank_field = {"key": "", "label": "", "kind": "text"}
    rows = []
    for i, section in enumerate([*content.get("sections", []), {"key": "", "title": "", "fields": []}]):
        fields = [*section.get("fields", []), blank_field]
        rows.append(
            {
                "index": i,
                "key": section.get("key", ""),
                "title": section.get("title", ""),
                "blank": i == len(content.get("sections", [])),
                "field_count": len(fields) - 1,
                "fields": [
                    {
                        **f,
                        "index": j,
                        "blank": j == len(fields) - 1,
                        "choices_text": "\n".join(f.get("choices", [])),
                    }
                    for j, f in enumerate(fields)
                ],
            }
        )
    return rows


@template_admin
@require_POST
def content_preview(request: HttpRequest) -> HttpResponse:
    """The editor's live preview (HTMX): the unsaved content filled with sample data, or its problems."""
    problems, preview = [], None
    try:
        preview = template_preview(content=json.loads(request.POST.get("content", "")))
    except json.JSONDecodeError as error:
        problems = [f"Not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}"]
    except TemplateInvalid as invalid:
        problems = invalid.problems
    return render(request, "reports/_preview.html", {"preview": preview, "problems": problems})


@template_admin
def version_detail(request: HttpRequest, template_id: int, number: int) -> HttpResponse:
    version = access_version(request.user, template_id, number)
    context = {
        "template": version.template,
        "version": version,
        "preview": template_preview(version),
        "content_json": _pretty(version.content),
    }
    return render(request, "reports/version_detail.html", context)


@template_admin
def template_diff(request: HttpRequest, template_id: int) -> HttpResponse:
    template = access_template(request.user, template_id)
    numbers = sorted(template.versions.values_list("number", flat=True))
    try:
        a = int(request.GET.get("a") or (numbers[-2] if len(numbers) > 1 else numbers[-1]))
        b = int(request.GET.get("b") or numbers[-1])
    except ValueError:
        a, b = numbers[0], numbers[-1]
    old, new = access_version(request.user, template_id, a), access_version(request.user, template_id, b)
    diff = template_version_diff(old, new)
    context = {"template": template, "old": old, "new": new, "diff": diff, "numbers": numbers}
    return render(request, "reports/template_diff.html", context)


@template_admin
def version_export(request: HttpRequest, template_id: int, number: int) -> HttpResponse:
    version = access_version(request.user, template_id, number)
    response = HttpResponse(template_mrrt_export(version), content_type="text/html; charset=utf-8")
    filename = f"{slugify(version.template.name) or 'template'}-v{version.number}.html"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@template_admin
@require_POST
def template_copy_view(request: HttpRequest, template_id: int) -> HttpResponse:
    template = access_template(request.user, template_id)
    facilities = facilities_administered_by(request.user).order_by("name")
    form = tf.CopyForm(request.POST, facilities=facilities)
    if form.is_valid():
        try:
            copy = template_copy(
                template=template,
                facility=form.cleaned_data["facility"],
                user=request.user,
                name=form.cleaned_data["name"],
            )
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            messages.success(request, f"Copied to {copy.facility.name}: its studies now use this copy.")
            return redirect("reports:template_detail", copy.pk)
    else:
        messages.error(request, "Choose a facility you administer and a name for the copy.")
    return redirect("reports:template_detail", template.pk)


@template_admin
def template_import(request: HttpRequest) -> HttpResponse:
    facilities = facilities_administered_by(request.user).order_by("name")
    form = tf.ImportTemplateForm(request.POST or None, request.FILES or None, facilities=facilities)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            template, warnings = mrrt_template_import(
                facility=data["facility"],
                data=data["file"].read(),
                user=request.user,
                name=data["name"],
                procedure_codes=tf.codes_split(data["procedure_codes"]),
                modality=data["modality"],
                body_part=data["body_part"],
            )
        except (ValidationError, TemplateInvalid, MrrtInvalid) as error:
            _errors_to_form(form, error, content_field="file")
        else:
            _import_messages(request, f"Imported “{template.name}” as version 1.", warnings)
            return redirect("reports:template_detail", template.pk)
    return render(request, "reports/template_import.html", {"form": form, "template": None})


@template_admin
def version_import(request: HttpRequest, template_id: int) -> HttpResponse:
    template = access_template(request.user, template_id, write=True)
    form = tf.ImportVersionForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            version, warnings = mrrt_version_import(
                template=template,
                data=form.cleaned_data["file"].read(),
                user=request.user,
                change_note=form.cleaned_data["change_note"],
            )
        except (ValidationError, TemplateInvalid, MrrtInvalid) as error:
            _errors_to_form(form, error, content_field="file")
        else:
            _import_messages(request, f"Imported as version {version.number}.", warnings)
            return redirect("reports:template_detail", template.pk)
    return render(request, "reports/template_import.html", {"form": form, "template": template}, status=200)


def _import_messages(request: HttpRequest, done: str, warnings: list[str]) -> None:
    messages.success(request, done)
    for warning in warnings:
        messages.warning(request, f"Check: {warning}")


# --- macros --------------------------------------------------------------------------------------


@template_admin
def macro_list(request: HttpRequest, code: str) -> HttpResponse:
    facility = access_administered_facility(request.user, code)
    form = tf.MacroForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            macro = macro_create(facility=facility, user=request.user, **form.cleaned_data)
        except ValidationError as error:
            _errors_to_form(form, error)
        else:
            messages.success(request, f"Macro “{macro.name}” added.")
            return redirect("reports:macro_list", facility.code)
    context = {"facility": facility, "macros": facility_macros(facility), "form": form}
    return render(request, "reports/macro_list.html", context)


@template_admin
def macro_edit(request: HttpRequest, macro_id: int) -> HttpResponse:
    macro = access_facility_macro(request.user, macro_id)
    form = tf.MacroForm(request.POST or None, initial={"name": macro.name, "text": macro.text})
    if request.method == "POST" and form.is_valid():
        try:
            macro_update(macro=macro, user=request.user, **form.cleaned_data)
        except ValidationError as error:
            _errors_to_form(form, error)
        else:
            messages.success(request, f"Macro “{macro.name}” saved.")
            return redirect("reports:macro_list", macro.facility.code)
    return render(request, "reports/macro_form.html", {"macro": macro, "form": form})


@template_admin
@require_POST
def macro_remove(request: HttpRequest, macro_id: int) -> HttpResponse:
    macro = access_facility_macro(request.user, macro_id)
    code, name = macro.facility.code, macro.name
    macro_delete(macro=macro, user=request.user)
    messages.success(request, f"Macro “{name}” deleted.")
    return redirect("reports:macro_list", code)
