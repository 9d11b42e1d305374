"""Template content: strict parsing with paths, value checks (ASPECTS 0–10), merge fields, and the
template a study is reported on."""

import pytest

from facilities.models import PriorityClass
from reports.models import ReportTemplate, TemplateVersion
from reports.schema import (
    TemplateInvalid,
    merge_fill,
    report_sections,
    template_content_dump,
    template_content_parse,
    values_problems,
)
from reports.selectors import template_for_study
from tests.worklist.conftest import make_study

STROKE_HEAD = {
    "sections": [
        {
            "key": "findings",
            "title": "Findings",
            "fields": [
                {
                    "key": "hemorrhage",
                    "label": "Hemorrhage",
                    "kind": "choice",
                    "choices": ["None", "Present"],
                },
                {
                    "key": "aspects",
                    "label": "ASPECTS",
                    "kind": "number",
                    "min": 0,
                    "max": 10,
                    "required": True,
                },
                {
                    "key": "text",
                    "label": "Findings",
                    "kind": "text",
                    "default": "{{patient_age}} {{procedure}}.",
                },
            ],
        },
        {
            "key": "impression",
            "title": "Impression",
            "fields": [{"key": "impression", "label": "Impression", "kind": "text"}],
        },
    ]
}


def test_content_round_trips_and_checks_values():
    content = template_content_parse(STROKE_HEAD)
    assert template_content_dump(content) == STROKE_HEAD
    assert values_problems(content, {"aspects": "11"}, signing=False) == ["ASPECTS: between 0 and 10"]
    assert values_problems(content, {"hemorrhage": "Maybe"}, signing=True) == [
        "Hemorrhage: choose one of None, Present",
        "ASPECTS: required to sign",
    ]
    values = {"aspects": "9", "text": merge_fill(content.fields()[2].default, {"patient_age": "67-year-old"})}
    assert report_sections(content, values) == [("Findings", "ASPECTS: 9\n67-year-old .")]


def test_organ_by_organ_text_fields_keep_their_labels_in_the_report():
    # given a findings section of free-text fields, one per organ, and a one-field impression
    content = template_content_parse(
        {
            "sections": [
                {
                    "key": "findings",
                    "title": "Findings",
                    "fields": [
                        {"key": "liver", "label": "Liver", "kind": "text"},
                        {"key": "spleen", "label": "Spleen", "kind": "text"},
                    ],
                },
                {
                    "key": "impression",
                    "title": "Impression",
                    "fields": [{"key": "impression", "label": "Conclusion", "kind": "text"}],
                },
            ]
        }
    )
    # when the report text is made
    sections = report_sections(content, {"liver": "Normal.", "spleen": "Normal.", "impression": "Normal."})
    # then each organ is named (not "Normal.\nNormal."), the lone narrative field is its text
    assert sections == [("Findings", "Liver: Normal.\nSpleen: Normal."), ("Impression", "Normal.")]


def test_invalid_content_names_each_problem_by_path():
    with pytest.raises(TemplateInvalid) as invalid:
        template_content_parse(
            {"sections": [{"key": "Findings", "fields": [{"key": "x", "kind": "slider"}]}]}
        )
    assert invalid.value.problems == [
        "sections[0].fields[0].kind: one of text, choice, number, yesno, date (got “slider”)",
        "sections[0].key: lower-case letters, digits and _ (got “Findings”)",
    ]


@pytest.mark.django_db
def test_facility_template_and_stroke_variant_win(chicago, prairie):
    # given only this test's templates (not the ones ReadRoom ships, reports.defaults)
    ReportTemplate.objects.filter(facility__isnull=True).delete()

    def template(facility, name, **kw):
        t = ReportTemplate.objects.create(facility=facility, name=name, **kw)
        TemplateVersion.objects.create(template=t, number=1, content=STROKE_HEAD)
        return t

    shipped = template(None, "CT head", procedure_codes=["70450"])
    stroke = template(None, "CT head stroke", procedure_codes=["70450"], variant="stroke")
    own = template(chicago, "Lakeshore CT head", procedure_codes=["70450"])
    template(None, "CT any", modality="CT")
    assert template_for_study(make_study(chicago, code="70450")).template == own
    assert template_for_study(make_study(prairie, code="70450")).template == shipped
    code_stroke = make_study(prairie, code="70450", priority=PriorityClass.STROKE)
    assert template_for_study(code_stroke).template == stroke
    assert template_for_study(make_study(prairie, code="74177")).template.name == "CT any"
    assert template_for_study(make_study(prairie, code="73721", modalities="MR")) is None
