"""IHE MRRT: export a version as an HTML5 template and read it back to the same content; import a
RadReport-style template; refuse what ReadRoom cannot represent, saying what and where."""

from pathlib import Path

import pytest

from reports.models import ReportTemplate
from reports.mrrt import (
    MrrtInvalid,
    mrrt_parse,
    mrrt_template_import,
    mrrt_version_import,
    template_mrrt_export,
)

SAMPLE = Path(__file__).parent / "data" / "radreport_ct_head_trauma.html"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name", ["CT head without contrast (code stroke)", "Screening mammogram", "MRI knee without contrast"]
)
def test_export_then_import_gives_the_same_template(name):
    # given a shipped template's current version
    template = ReportTemplate.objects.get(facility__isnull=True, name=name)
    version = template.current_version()

    # when it is exported as MRRT and read back
    html = template_mrrt_export(version)
    imported = mrrt_parse(html)

    # then the content and what chooses the template are unchanged
    assert imported.content == version.content
    assert (imported.title, imported.procedure_codes) == (template.name, template.procedure_codes)
    assert (imported.modality, imported.body_part, imported.variant) == (
        template.modality,
        template.body_part,
        template.variant,
    )
    assert imported.warnings == []


@pytest.mark.django_db
def test_every_shipped_template_round_trips():
    for template in ReportTemplate.objects.filter(facility__isnull=True):
        version = template.current_version()
        assert mrrt_parse(template_mrrt_export(version)).content == version.content, template.name


@pytest.mark.django_db
def test_the_export_is_an_mrrt_document():
    version = ReportTemplate.objects.get(
        facility__isnull=True, name="CT head without contrast (code stroke)"
    ).current_version()

    html = template_mrrt_export(version)

    assert html.startswith("<!DOCTYPE html>")
    assert '<meta name="dcterms.title" content="CT head without contrast (code stroke)"/>' in html
    assert '<meta name="dcterms.type" content="IMAGE_REPORT_TEMPLATE"/>' in html
    assert '<script type="text/xml">' in html and "<status>ACTIVE</status>" in html
    assert '<code meaning="CT head without contrast (code stroke)" value="70450" scheme="CPT4"/>' in html
    assert '<section id="section_findings" class="level1" data-section-name="Findings">' in html
    assert (
        '<input type="number" id="field_aspects" name="aspects" data-field-completion-action="PROHIBIT" '
        'required data-field-type="NUMERIC" min="0" max="10" step="any" value=""/>'
    ) in html
    assert 'data-field-merge-flag="true" data-field-merge-identifier="Comparison Studies"' in html


def test_a_radreport_style_template_is_imported():
    imported = mrrt_parse(SAMPLE.read_bytes())

    assert imported.title == "CT Head Trauma"
    assert imported.identifier == "http://www.radreport.org/template/0009999"
    assert imported.procedure_codes == ["70450"]
    sections = {s["key"]: s for s in imported.content["sections"]}
    assert list(sections) == ["clinical_information", "procedure", "comparison", "findings", "impression"]
    # the RIS merge field becomes ReadRoom's {{reason}}
    assert sections["clinical_information"]["fields"][0]["default"] == "{{reason}}"
    findings = {f["key"]: f for f in sections["findings"]["fields"]}
    assert findings["intracranial_hemorrhage"] == {
        "key": "intracranial_hemorrhage",
        "label": "Intracranial hemorrhage",
        "kind": "choice",
        "required": True,
        "choices": ["None", "Epidural hematoma", "Subdural hematoma", "Subarachnoid hemorrhage"],
        "default": "None",
    }
    assert findings["midline_shift"] == {
        "key": "midline_shift",
        "label": "Midline shift (mm)",
        "kind": "number",
        "min": 0,
        "max": 30,
        "default": "0",
    }
    assert findings["skull_fracture"] == {"key": "skull_fracture", "label": "Skull fracture", "kind": "yesno"}
    # a required section of fixed text becomes one required text field holding it
    assert sections["impression"]["fields"] == [
        {
            "key": "impression",
            "label": "Impression",
            "kind": "text",
            "required": True,
            "default": "No acute intracranial abnormality.",
        }
    ]
    assert imported.warnings == ["“Time of scan”: a time field was imported as free text"]


@pytest.mark.parametrize(
    ("html", "problem"),
    [
        (
            "<html><body><section data-section-name='A'><script>alert(1)</script>"
            "<input name='a'></section></body></html>",
            '<script>: scripts are not imported (only <script type="text/xml">)',
        ),
        (
            "<html><body><section data-section-name='A'><input type='radio' name='side' id='r1'>"
            "</section></body></html>",
            '<input id="r1" name="side">: input type “radio” is not supported '
            "(use a <select> for a pick-list)",
        ),
        (
            "<html><body><p><input name='loose'></p></body></html>",
            '<input name="loose">: a field outside any <section>',
        ),
        (
            "<html><body><section data-section-name='Findings'><label for='n'>Size</label>"
            "<input type='number' id='n' name='size' min='ten'></section></body></html>",
            'section “Findings”, field “Size” <input id="n" name="size">.min: not a number',
        ),
        ("just some text", "not an HTML template: no <html> element"),
        (b"<html>\xff\xfe</html>", "not UTF-8 text (byte 6): MRRT templates are UTF-8"),
    ],
)
def test_unsupported_content_is_refused_saying_what_and_where(html, problem):
    with pytest.raises(MrrtInvalid) as invalid:
        mrrt_parse(html)
    assert problem in invalid.value.problems


@pytest.mark.django_db
def test_import_makes_a_facility_template_and_then_a_new_version(chicago, admin_chicago):
    # when the admin imports the RadReport file, then re-imports it as a new version
    template, warnings = mrrt_template_import(facility=chicago, data=SAMPLE.read_bytes(), user=admin_chicago)
    version, _ = mrrt_version_import(template=template, data=SAMPLE.read_bytes(), user=admin_chicago)

    # then
    assert (template.facility, template.name, template.procedure_codes) == (
        chicago,
        "CT Head Trauma",
        ["70450"],
    )
    assert warnings == ["“Time of scan”: a time field was imported as free text"]
    assert version.number == 2
    assert version.change_note == "Imported from MRRT http://www.radreport.org/template/0009999"
    assert version.content == template.versions.get(number=1).content
