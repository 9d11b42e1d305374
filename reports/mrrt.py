"""IHE MRRT (Management of Radiology Report Templates) import and export.

An MRRT template is an HTML5 document (IHE RAD TF supplement MRRT, Rev 1.6; RSNA RadReport publishes
its library in this form): ``<meta name="dcterms.*">`` in the head, a ``<script type="text/xml">``
holding ``<template_attributes>`` (status, coding schemes, procedure codes, coded content), and a body
of ``<section data-section-name>`` elements whose form controls are the template's fields. docs/reports.md
gives the mapping to ``reports.schema`` field by field.

Parsing uses the standard library's ``html.parser`` (no lxml/html5lib in the stack): it is forgiving,
as it must be — RadReport's templates write ``<code …>`` without closing it inside the XML comment and
leave ``<input>`` unclosed. What ReadRoom cannot represent is refused with a message naming the element
(scripts, embedded templates, radio buttons, file inputs, fields outside a section); what it can
represent only approximately (time fields, multiple selection, text between fields) is imported with a
warning the admin sees."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import escape
from html.parser import HTMLParser

from django.db import transaction

from facilities.models import Facility
from reports.models import ReportTemplate, TemplateVersion
from reports.schema import (
    YES_NO,
    TemplateField,
    TemplateInvalid,
    merge_field_names,
    template_content_dump,
    template_content_parse,
)
from reports.template_services import (
    decimal_text,
    template_content_validate,
    template_create,
    template_version_add,
)

MAX_BYTES = 2 * 1024 * 1024
CPT_OID = "2.16.840.1.113883.6.12"

# ReadRoom merge field ↔ MRRT data-field-merge-identifier (pre-filled from the RIS/order). "RIS Reason
# For Exam" is RadReport's spelling; the others are ReadRoom's names for its own exports.
MERGE_IDENTIFIERS = {
    "reason": "RIS Reason For Exam",
    "patient_age": "Patient Age",
    "patient_sex": "Patient Sex",
    "procedure": "RIS Procedure Description",
    "ordering_provider": "Ordering Provider",
    "study_date": "Study Date",
    "comparison": "Comparison Studies",
    "contrast": "Contrast Agent",
    "facility": "Institution Name",
}
_MERGE_BY_IDENTIFIER = {v.lower(): k for k, v in MERGE_IDENTIFIERS.items()}
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_TRUE = {"y", "yes", "true", "1"}


class MrrtInvalid(ValueError):
    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


# --- export --------------------------------------------------------------------------------------


def template_mrrt_export(version: TemplateVersion) -> str:
    """``version`` as an MRRT HTML5 template (what ``mrrt_parse`` reads back to the same content)."""
    template = version.template
    content = template_content_parse(version.content)
    metas = {
        "dcterms.title": template.name,
        "dcterms.description": version.change_note,
        "dcterms.identifier": f"urn:readroom:template:{template.pk}:{version.number}",
        "dcterms.type": "IMAGE_REPORT_TEMPLATE",
        "dcterms.language": "en",
        "dcterms.publisher": template.facility.name if template.facility else "ReadRoom",
        "dcterms.date": version.created_at.date().isoformat(),
        "dcterms.creator": str(version.created_by or "ReadRoom"),
        # Not MRRT: how ReadRoom chooses the template when no procedure code matches.
        "readroom.modality": template.modality,
        "readroom.body-part": template.body_part,
        "readroom.variant": template.variant,
    }
    head = ['<meta charset="UTF-8"/>']
    head += [f'<meta name="{n}" content="{escape(v)}"/>' for n, v in metas.items() if v]
    head += [_template_attributes(template), f"<title>{escape(template.name)}</title>"]
    body = [_section_html(section) for section in content.sections]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n'
        + "\n".join(head)
        + "\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _template_attributes(template: ReportTemplate) -> str:
    codes = "".join(
        f'<term><code meaning="{escape(template.name)}" value="{escape(c)}" scheme="CPT4"/></term>'
        for c in template.procedure_codes or ()
    )
    return (
        '<script type="text/xml">\n<!--\n<template_attributes>\n'
        "<top-level-flag>true</top-level-flag>\n<status>ACTIVE</status>\n"
        f'<coding_schemes><coding_scheme name="CPT4" designator="{CPT_OID}"/></coding_schemes>\n'
        f"<procedure-code-list>{codes}</procedure-code-list>\n"
        "</template_attributes>\n-->\n</script>"
    )


def _section_html(section) -> str:
    title = escape(section.title)
    lines = [
        f'<section id="section_{section.key}" class="level1" data-section-name="{title}">',
        f'<header class="level1">{title}</header>',
    ]
    lines += [f"<p>{_field_html(f)}</p>" for f in section.fields]
    lines.append("</section>")
    return "\n".join(lines)


def _field_html(f: TemplateField) -> str:
    ident = f"field_{f.key}"
    attrs = f'id="{ident}" name="{f.key}"'
    if f.required:  # MRRT: the report cannot be completed without it
        attrs += ' data-field-completion-action="PROHIBIT"'
        # HTML's own flag too, except on a checkbox, where it would mean "must be ticked"
        attrs += " required" if f.kind != "yesno" else ""
    merge = merge_field_names(f.default)
    if len(merge) == 1 and f.default.strip() == f"{{{{{merge[0]}}}}}" and merge[0] in MERGE_IDENTIFIERS:
        attrs += f' data-field-merge-flag="true" data-field-merge-identifier="{MERGE_IDENTIFIERS[merge[0]]}"'
    label = f'<label for="{ident}">{escape(f.label)}</label>'
    default = escape(f.default)
    if f.kind == "text":
        return f'{label}<textarea {attrs} data-field-type="TEXT">{default}</textarea>'
    if f.kind == "choice":
        options = [] if f.default in f.choices else ['<option value=""></option>']
        options += [
            f'<option value="{escape(c)}"{" selected" if c == f.default else ""}>{escape(c)}</option>'
            for c in f.choices
        ]
        return f'{label}<select {attrs} data-field-type="SELECTION_LIST">{"".join(options)}</select>'
    if f.kind == "number":
        bounds = "".join(
            f' {name}="{decimal_text(value)}"'
            for name, value in (("min", f.minimum), ("max", f.maximum))
            if value is not None
        )
        number = f'type="number" {attrs} data-field-type="NUMERIC"{bounds} step="any"'
        return f'{label}<input {number} value="{default}"/>'
    if f.kind == "yesno":
        state = " checked" if f.default == "yes" else ""
        explicit = f' data-field-default-value="{default}"' if f.default else ""
        return (
            f'<input type="checkbox" {attrs} data-field-type="CHECKBOX" value="yes"{explicit}{state}/>{label}'
        )
    return f'{label}<input type="date" {attrs} data-field-type="DATE" value="{default}"/>'


# --- parse ---------------------------------------------------------------------------------------


@dataclass
class _RawField:
    tag: str
    attrs: dict[str, str | None]
    section: int
    options: list[tuple[str, str, bool]] = field(default_factory=list)  # value, text, selected
    text: str = ""


@dataclass
class _RawSection:
    attrs: dict[str, str | None]
    header: str = ""
    static: list[str] = field(default_factory=list)


REFUSED_TAGS = {
    "iframe": "embedded frames",
    "object": "embedded objects",
    "embed": "embedded content",
    "frame": "frames",
    "applet": "applets",
}
REFUSED_INPUTS = {
    "radio",
    "file",
    "range",
    "color",
    "hidden",
    "password",
    "submit",
    "button",
    "image",
    "reset",
}


class _MrrtParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.metas: dict[str, list[str]] = {}
        self.title = ""
        self.xml = ""
        self.sections: list[_RawSection] = []
        self.fields: list[_RawField] = []
        self.labels: dict[str, str] = {}
        self.problems: list[str] = []
        self._open_sections: list[int] = []
        self._capture: str | None = None  # what the current text belongs to
        self._buffer: list[str] = []
        self._label_for: str | None = None
        self._field: _RawField | None = None
        self._option: dict | None = None
        self._in_body = False

    # elements
    def handle_starttag(self, tag: str, attrs_list) -> None:
        attrs = {k.lower(): v for k, v in attrs_list}
        if tag == "body":
            self._in_body = True
        elif tag == "meta" and attrs.get("name"):
            self.metas.setdefault(attrs["name"].lower(), []).append((attrs.get("content") or "").strip())
        elif tag == "title":
            self._start_capture("title")
        elif tag == "script":
            kind = (attrs.get("type") or "").lower()
            if kind not in ("text/xml", "application/xml"):
                self.problems.append('<script>: scripts are not imported (only <script type="text/xml">)')
            self._start_capture("script")
        elif tag in REFUSED_TAGS:
            self.problems.append(f"<{tag}>: {REFUSED_TAGS[tag]} are not supported")
        elif tag == "link" and (attrs.get("rel") or "").lower() == "import":
            self.problems.append("<link rel=import>: embedded (linked) templates are not supported")
        elif tag == "section":
            self.sections.append(_RawSection(attrs=attrs))
            self._open_sections.append(len(self.sections) - 1)
        elif tag == "header" and self._open_sections:
            self._start_capture("header")
        elif tag == "label":
            self._label_for = attrs.get("for")
            self._start_capture("label")
        elif tag == "input":
            self._field_start("input", attrs)
            self._field = None  # void element
        elif tag in ("select", "textarea"):
            self._field_start(tag, attrs)
            if tag == "textarea":
                self._start_capture("textarea")
        elif tag == "option" and self._field is not None:
            self._option_end()  # </option> is optional in HTML
            self._option = {"value": attrs.get("value"), "selected": "selected" in attrs}
            self._start_capture("option")

    def handle_startendtag(self, tag: str, attrs_list) -> None:
        self.handle_starttag(tag, attrs_list)
        if tag not in ("input", "meta", "br", "link", "img", "hr"):
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._capture == "title":
            self.title = self._end_capture()
        elif tag == "script" and self._capture == "script":
            self.xml += self._end_capture()
        elif tag == "section" and self._open_sections:
            self._open_sections.pop()
        elif tag == "header" and self._capture == "header":
            section = self.sections[self._open_sections[-1]]
            section.header = section.header or self._end_capture()
        elif tag == "label" and self._capture == "label":
            text = self._end_capture()
            if self._label_for:
                self.labels[self._label_for] = text
        elif tag == "option":
            self._option_end()
        elif tag == "textarea" and self._field is not None:
            self._field.text = self._end_capture()
            self._field = None
        elif tag == "select":
            self._option_end()
            self._field = None

    def handle_data(self, data: str) -> None:
        if self._capture is not None:
            self._buffer.append(data)
        elif self._in_body and self._open_sections and data.strip():
            self.sections[self._open_sections[-1]].static.append(" ".join(data.split()))

    # helpers
    def _option_end(self) -> None:
        if self._option is None or self._field is None:
            return
        text = self._end_capture()
        value = self._option["value"]
        self._field.options.append((text if value is None else value.strip(), text, self._option["selected"]))
        self._option = None

    def _start_capture(self, what: str) -> None:
        self._capture, self._buffer = what, []

    def _end_capture(self) -> str:
        text = "".join(self._buffer)
        self._capture, self._buffer = None, []
        return text if self._field is not None and self._option is None else " ".join(text.split())

    def _field_start(self, tag: str, attrs: dict) -> None:
        where = _describe(tag, attrs)
        if not self._open_sections:
            self.problems.append(f"{where}: a field outside any <section>")
            return
        kind = (attrs.get("type") or "text").lower()
        if tag == "input" and kind in REFUSED_INPUTS:
            hint = " (use a <select> for a pick-list)" if kind == "radio" else ""
            self.problems.append(f"{where}: input type “{kind}” is not supported{hint}")
            return
        self._field = _RawField(tag=tag, attrs=attrs, section=self._open_sections[-1])
        self.fields.append(self._field)


def _describe(tag: str, attrs: dict) -> str:
    names = [f'{a}="{attrs[a]}"' for a in ("id", "name") if attrs.get(a)]
    return f"<{tag}{' ' + ' '.join(names) if names else ''}>"


@dataclass
class MrrtImport:
    """What an MRRT file says: the content for a version and the template's metadata."""

    content: dict
    title: str
    identifier: str = ""
    description: str = ""
    procedure_codes: list[str] = field(default_factory=list)
    modality: str = ""
    body_part: str = ""
    variant: str = ""
    warnings: list[str] = field(default_factory=list)


def mrrt_parse(data: bytes | str) -> MrrtImport:
    """An MRRT HTML5 template → content (checked like an edit) + metadata, or ``MrrtInvalid``."""
    text = _decode(data)
    if "<html" not in text[:4096].lower() and "<section" not in text.lower():
        raise MrrtInvalid(["not an HTML template: no <html> element"])
    parser = _MrrtParser()
    parser.feed(text)
    parser.close()
    if not parser.sections:
        parser.problems.append("no <section> elements: an MRRT template's body is made of sections")
    if parser.problems:
        raise MrrtInvalid(parser.problems)
    warnings: list[str] = []
    content, places = _content(parser, warnings)
    try:
        template_content_validate(content)
    except TemplateInvalid as invalid:
        raise MrrtInvalid([_place(problem, places) for problem in invalid.problems]) from invalid
    meta = {name: values[0] for name, values in parser.metas.items() if values and values[0]}
    return MrrtImport(
        content=template_content_dump(template_content_parse(content)),
        title=meta.get("dcterms.title") or parser.title or "Imported template",
        identifier=meta.get("dcterms.identifier", ""),
        description=meta.get("dcterms.description", ""),
        procedure_codes=_procedure_codes(parser.xml),
        modality=meta.get("readroom.modality", ""),
        body_part=meta.get("readroom.body-part", ""),
        variant=meta.get("readroom.variant", ""),
        warnings=warnings,
    )


def _decode(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    if len(data) > MAX_BYTES:
        raise MrrtInvalid([f"the file is larger than {MAX_BYTES // (1024 * 1024)} MB"])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise MrrtInvalid([f"not UTF-8 text (byte {error.start}): MRRT templates are UTF-8"]) from error


def _content(parser: _MrrtParser, warnings: list[str]) -> tuple[dict, dict[str, str]]:
    """Sections in document order (a nested section becomes a section of its own); ``places`` maps
    each field's schema path to where it is in the file, for error messages."""
    sections: list[dict] = []
    places: dict[str, str] = {}
    field_keys: set[str] = set()
    section_keys: set[str] = set()
    for index, raw in enumerate(parser.sections):
        title = _clean_label(raw.attrs.get("data-section-name") or raw.header) or f"Section {index + 1}"
        ident = raw.attrs.get("id") or ""
        key = ident[len("section_") :] if ident.startswith("section_") else ""
        key = _unique(key if _KEY.match(key) else _slug(title, "section"), section_keys)
        required = (raw.attrs.get("data-section-required") or "").lower() in _TRUE
        raws = [f for f in parser.fields if f.section == index]
        fields = []
        for raw_field in raws:
            path = f"sections[{len(sections)}].fields[{len(fields)}]"
            made = _field(raw_field, parser.labels, field_keys, warnings)
            places[path] = (
                f"section “{title}”, field “{made['label']}” {_describe(raw_field.tag, raw_field.attrs)}"
            )
            fields.append(made)
        static = " ".join(raw.static).strip()
        if not fields and static:
            # A section of fixed text (RadReport impressions often are): one text field holding it.
            fields.append(
                {"key": _unique(key, field_keys), "label": title, "kind": "text", "default": static}
            )
        elif static:
            warnings.append(f"section “{title}”: text between the fields is not kept (“{static[:60]}”)")
        if required:
            if len(fields) == 1:
                fields[0]["required"] = True
            elif fields:
                warnings.append(
                    f"section “{title}” is required: mark which of its fields must be filled to sign"
                )
        if not fields:
            warnings.append(f"section “{title}” has no fields or text and was left out")
            continue
        sections.append({"key": key, "title": title, "fields": fields})
    return {"sections": sections}, places


def _field(raw: _RawField, labels: dict[str, str], keys: set[str], warnings: list[str]) -> dict:
    attrs = raw.attrs
    ident, name = attrs.get("id") or "", (attrs.get("name") or "").strip()
    label = _clean_label(labels.get(ident) or attrs.get("title") or name or ident) or "Field"
    if _KEY.match(name):
        key = name
    elif ident.startswith("field_") and _KEY.match(ident[len("field_") :]):
        key = ident[len("field_") :]
    else:
        key = _slug(name or label or ident, "field")
    data: dict = {"key": _unique(key, keys), "label": label}
    data.update(_kind_and_default(raw, label, warnings))
    completion = {
        (attrs.get(a) or "").upper()
        for a in (
            "data-field-completion-action",
            "data-field-signature-latitude",
            "data-field-signature-lattitude",
        )
    }
    if "required" in attrs or "PROHIBIT" in completion:
        data["required"] = True
    _merge(data, attrs, label, warnings)
    return data


def _kind_and_default(raw: _RawField, label: str, warnings: list[str]) -> dict:
    attrs = raw.attrs
    declared = (attrs.get("data-field-type") or "").upper()
    if raw.tag == "textarea":
        return {"kind": "text", "default": raw.text.strip()}
    if raw.tag == "select":
        if "multiple" in attrs:
            warnings.append(f"“{label}”: a multiple selection was imported as a single choice")
        choices = [value for value, _text, _selected in raw.options if value]
        selected = [value for value, _text, chosen in raw.options if chosen and value]
        return {"kind": "choice", "choices": choices, "default": selected[0] if selected else ""}
    kind = (attrs.get("type") or "text").lower()
    value = (attrs.get("value") or "").strip()
    if kind == "checkbox" or declared == "CHECKBOX":
        explicit = (attrs.get("data-field-default-value") or "").lower()
        default = "yes" if "checked" in attrs else explicit if explicit in YES_NO else ""
        return {"kind": "yesno", "default": default}
    if kind == "number" or declared in ("NUMERIC", "NUMBER", "INTEGER"):
        data = {"kind": "number", "default": value}
        for bound in ("min", "max"):
            if attrs.get(bound) not in (None, ""):
                data[bound] = attrs[bound].strip()
        return data
    if kind == "date" or declared == "DATE":
        return {"kind": "date", "default": value}
    if kind == "time" or declared == "TIME":
        warnings.append(f"“{label}”: a time field was imported as free text")
    return {"kind": "text", "default": value}


def _merge(data: dict, attrs: dict, label: str, warnings: list[str]) -> None:
    """``data-field-merge-flag``: the RIS fills the field. ReadRoom's merge fields are ``{{name}}``."""
    if (attrs.get("data-field-merge-flag") or "").lower() not in _TRUE or "{{" in data.get("default", ""):
        return
    identifier = (attrs.get("data-field-merge-identifier") or "").strip()
    merge = _MERGE_BY_IDENTIFIER.get(identifier.lower())
    if merge is None:
        warnings.append(f"“{label}”: merge identifier “{identifier}” is unknown to ReadRoom; not pre-filled")
    else:
        data["default"] = f"{{{{{merge}}}}}"


def _procedure_codes(xml: str) -> list[str]:
    """CPT codes from ``<procedure-code-list>`` (``<code value=…>`` or the older ``<code_value>``)."""
    codes: list[str] = []
    for block in re.findall(r"<procedure-code-list>(.*?)</procedure-code-list>", xml, flags=re.S | re.I):
        for code in re.findall(r'\bvalue="([^"]+)"|<code_value>\s*([^<\s]+)\s*</code_value>', block):
            value = (code[0] or code[1]).strip()
            if value and value not in codes:
                codes.append(value)
    return codes


def _clean_label(text: str | None) -> str:
    return " ".join((text or "").split()).rstrip(":").strip()


def _slug(text: str, fallback: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60] or fallback
    return slug if slug[0].isalpha() else f"{fallback[0]}_{slug}"[:60]


def _unique(key: str, taken: set[str]) -> str:
    candidate, n = key, 2
    while candidate in taken:
        candidate, n = f"{key[:58]}_{n}", n + 1
    taken.add(candidate)
    return candidate


def _place(problem: str, places: dict[str, str]) -> str:
    match = re.match(r"^(sections\[\d+\]\.fields\[\d+\])(.*)$", problem)
    return f"{places[match.group(1)]}{match.group(2)}" if match and match.group(1) in places else problem


# --- import (writes) -----------------------------------------------------------------------------


@transaction.atomic
def mrrt_template_import(
    *,
    facility: Facility,
    data: bytes | str,
    user,
    name: str = "",
    procedure_codes=(),
    modality: str = "",
    body_part: str = "",
) -> tuple[ReportTemplate, list[str]]:
    """A new template of ``facility`` from an MRRT file; the form's name/codes/modality override the
    file's. Returns the template and the import's warnings."""
    imported = mrrt_parse(data)
    template = template_create(
        facility=facility,
        name=name or imported.title,
        content=imported.content,
        user=user,
        procedure_codes=list(procedure_codes) or imported.procedure_codes,
        modality=modality or imported.modality,
        body_part=body_part or imported.body_part,
        variant=imported.variant if imported.variant in ("", "stroke") else "",
        change_note=_note(imported),
    )
    return template, imported.warnings


@transaction.atomic
def mrrt_version_import(
    *, template: ReportTemplate, data: bytes | str, user, change_note: str = ""
) -> tuple[TemplateVersion, list[str]]:
    imported = mrrt_parse(data)
    version = template_version_add(
        template=template, content=imported.content, change_note=change_note or _note(imported), user=user
    )
    return version, imported.warnings


def _note(imported: MrrtImport) -> str:
    source = imported.identifier or imported.title
    return f"Imported from MRRT {source}"[:300]
