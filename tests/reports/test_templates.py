"""Template administration: versions that never change, diff, preview with sample data, the shipped
defaults, copies, and macros."""

import pytest
from auditlog.models import LogEntry
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction

from facilities.models import PriorityClass
from reports.defaults import SHIPPED, shipped_templates_ensure
from reports.models import Macro, ReportTemplate, TemplateVersion
from reports.schema import TemplateInvalid, template_content_parse, values_problems
from reports.selectors import template_for_study
from reports.template_selectors import macros_for
from reports.template_services import (
    macro_create,
    template_copy,
    template_create,
    template_preview,
    template_version_add,
    template_version_diff,
)
from tests.worklist.conftest import make_study

CHEST = {
    "sections": [
        {
            "key": "history",
            "title": "Clinical history",
            "fields": [{"key": "history", "label": "History", "kind": "text", "default": "{{reason}}"}],
        },
        {
            "key": "findings",
            "title": "Findings",
            "fields": [
                {"key": "lungs", "label": "Lungs", "kind": "text", "default": "Clear."},
                {
                    "key": "effusion",
                    "label": "Effusion",
                    "kind": "choice",
                    "choices": ["None", "Small", "Large"],
                },
            ],
        },
        {
            "key": "impression",
            "title": "Impression",
            "fields": [{"key": "impression", "label": "Impression", "kind": "text", "required": True}],
        },
    ]
}


def lakeshore_chest(chicago, admin_chicago) -> ReportTemplate:
    return template_create(
        facility=chicago,
        name="Lakeshore chest 2 views",
        content=CHEST,
        user=admin_chicago,
        procedure_codes=["71046"],
        modality="DX",
        body_part="CHEST",
    )


def with_pneumothorax() -> dict:
    sections = [dict(s, fields=list(s["fields"])) for s in CHEST["sections"]]
    sections[1]["fields"][1] = dict(sections[1]["fields"][1], required=True)
    sections[1]["fields"].append({"key": "pneumothorax", "label": "Pneumothorax", "kind": "yesno"})
    return {"sections": sections}


@pytest.mark.django_db
def test_an_edit_adds_a_version_and_leaves_the_old_one_as_it_was(chicago, admin_chicago):
    # given a facility template at version 1
    template = lakeshore_chest(chicago, admin_chicago)
    first = template.current_version()

    # when the admin edits its content
    second = template_version_add(
        template=template, content=with_pneumothorax(), change_note="pneumothorax", user=admin_chicago
    )

    # then there is a version 2 and version 1 reads exactly as before
    first.refresh_from_db()
    assert (first.number, second.number) == (1, 2)
    assert first.content == CHEST
    assert template.current_version() == second
    assert second.created_by == admin_chicago and second.change_note == "pneumothorax"
    # and the audit log names the facility of the new version
    entry = LogEntry.objects.get_for_object(second).get()
    assert entry.additional_data == {"facility_id": chicago.pk}


@pytest.mark.django_db
def test_the_database_refuses_to_update_a_version(chicago, admin_chicago):
    version = lakeshore_chest(chicago, admin_chicago).current_version()

    with pytest.raises(DatabaseError, match="never changes"), transaction.atomic():
        TemplateVersion.objects.filter(pk=version.pk).update(content={"sections": []})

    version.refresh_from_db()
    assert version.content == CHEST


@pytest.mark.django_db
def test_invalid_content_is_refused_with_every_problem_by_path(chicago, admin_chicago):
    template = lakeshore_chest(chicago, admin_chicago)
    bad = {
        "sections": [
            {
                "key": "findings",
                "fields": [
                    {"key": "aspects", "label": "ASPECTS", "kind": "number", "min": 10, "max": 0},
                    {
                        "key": "bleed",
                        "label": "Bleed",
                        "kind": "choice",
                        "choices": ["None"],
                        "default": "Some",
                    },
                    {"key": "history", "label": "History", "kind": "text", "default": "{{mood}}"},
                ],
            }
        ]
    }

    with pytest.raises(TemplateInvalid) as invalid:
        template_version_add(template=template, content=bad, change_note="", user=admin_chicago)

    assert invalid.value.problems == [
        "sections[0].fields[0].min: larger than max",
        "sections[0].fields[1].default: Bleed: choose one of None",
        "sections[0].fields[2].default: unknown merge field mood (known: patient_age, patient_sex, "
        "procedure, reason, ordering_provider, study_date, comparison, contrast, facility)",
    ]
    assert template.versions.count() == 1


@pytest.mark.django_db
def test_a_facility_cannot_have_two_templates_of_one_name(chicago, admin_chicago):
    lakeshore_chest(chicago, admin_chicago)
    with pytest.raises(ValidationError, match="already has a template"):
        lakeshore_chest(chicago, admin_chicago)


@pytest.mark.django_db
def test_diff_names_each_changed_field_and_gives_a_unified_diff(chicago, admin_chicago):
    # given versions 1 and 2, where 2 makes effusion required and adds pneumothorax
    template = lakeshore_chest(chicago, admin_chicago)
    template_version_add(template=template, content=with_pneumothorax(), change_note="", user=admin_chicago)
    first, second = template.versions.order_by("number")

    # when
    diff = template_version_diff(first, second)

    # then
    assert diff.changes == ["findings.effusion: required no → yes", "findings.pneumothorax added"]
    assert diff.unified[:2] == ["--- version 1", "+++ version 2"]
    assert "-  effusion · choice" in diff.unified
    assert "+  effusion · choice · required" in diff.unified
    assert "+  pneumothorax · yesno" in diff.unified
    assert template_version_diff(second, second).changes == []


@pytest.mark.django_db
def test_preview_fills_the_merge_fields_with_a_sample_patient(chicago, admin_chicago):
    version = lakeshore_chest(chicago, admin_chicago).current_version()

    preview = template_preview(version)

    history = preview.sections[0][1][0]
    assert history.value.startswith("Sudden left-sided weakness")
    assert preview.text[0] == ("Clinical history", history.value)
    assert ("Findings", "Lungs: Clear.") in preview.text
    assert preview.context["facility"] == "Lakeshore Medical Center"


@pytest.mark.django_db
def test_shipped_defaults_are_loaded_once_and_each_parses():
    # given migrate has run (post_migrate loaded them); when it runs again
    shipped_templates_ensure()
    shipped_templates_ensure()

    # then one template of each, at version 1, each valid
    shipped = ReportTemplate.objects.filter(facility__isnull=True)
    assert sorted(shipped.values_list("name", flat=True)) == sorted(SHIPPED)
    for template in shipped:
        assert list(template.versions.values_list("number", flat=True)) == [1]
        content = template_content_parse(template.current_version().content)
        assert [s.key for s in content.sections] == [
            "clinical_history",
            "technique",
            "comparison",
            "findings",
            "impression",
        ]
        assert [f.required for f in content.sections[-1].fields] == [True]


@pytest.mark.django_db
def test_a_changed_shipped_template_gets_a_new_version_on_the_next_release(monkeypatch):
    name = "Chest radiograph, 2 views"
    codes, modality, body_part, variant, content = SHIPPED[name]
    newer = {"sections": [*content["sections"][:-1], {**content["sections"][-1], "title": "Conclusion"}]}
    monkeypatch.setitem(SHIPPED, name, (codes, modality, body_part, variant, newer))

    shipped_templates_ensure()
    shipped_templates_ensure()

    template = ReportTemplate.objects.get(facility__isnull=True, name=name)
    assert list(template.versions.values_list("number", flat=True)) == [1, 2]
    assert template.current_version().content["sections"][-1]["title"] == "Conclusion"


@pytest.mark.django_db
def test_studies_get_the_shipped_templates_and_the_stroke_variant_asks_for_aspects(chicago, prairie):
    # given no facility templates: the shipped ones apply everywhere
    stroke = make_study(prairie, code="70450", priority=PriorityClass.STROKE)
    routine = make_study(prairie, code="70450")
    mammo = make_study(chicago, code="77067", modalities="MG")
    knee_without_code = make_study(chicago, text="MRI KNEE", modalities="MR", body_part="KNEE")

    # when / then
    stroke_version = template_for_study(stroke)
    assert stroke_version.template.name == "CT head without contrast (code stroke)"
    assert template_for_study(routine).template.name == "CT head without contrast"
    assert template_for_study(knee_without_code).template.name == "MRI knee without contrast"
    content = template_content_parse(stroke_version.content)
    assert values_problems(content, {"aspects": "11"}, signing=True) == [
        "Intracranial hemorrhage: required to sign",
        "Hyperdense vessel sign: required to sign",
        "ASPECTS (0–10): between 0 and 10",
        "Impression: required to sign",
    ]
    birads = next(
        f for f in template_content_parse(template_for_study(mammo).content).fields() if f.key == "birads"
    )
    assert birads.required and len(birads.choices) == 7 and birads.choices[0].startswith("0 ")


@pytest.mark.django_db
def test_a_facility_copy_of_a_shipped_template_is_used_for_its_studies(chicago, prairie, admin_chicago):
    shipped = ReportTemplate.objects.get(facility__isnull=True, name="Pelvic ultrasound")

    copy = template_copy(template=shipped, facility=chicago, user=admin_chicago, name="Lakeshore pelvic US")

    assert copy.current_version().content == shipped.current_version().content
    assert copy.current_version().change_note == "Copied from “Pelvic ultrasound” version 1"
    assert template_for_study(make_study(chicago, code="76856", modalities="US")).template == copy
    assert template_for_study(make_study(prairie, code="76856", modalities="US")).template == shipped


@pytest.mark.django_db
def test_macros_for_a_radiologist_are_their_own_then_their_facilitys(
    chicago, lakeview, dr_neuro_il, admin_chicago
):
    # given macros of two facilities and of two radiologists
    macro_create(
        facility=chicago, name="Normal head", text="No acute intracranial abnormality.", user=admin_chicago
    )
    macro_create(facility=lakeview, name="Lakeview only", text="…", user=admin_chicago)
    macro_create(owner=dr_neuro_il, name="My stroke", text="No hemorrhage. ASPECTS 10.", user=dr_neuro_il)
    other = Macro.objects.create(owner=admin_chicago, name="Not yours", text="…")

    # when
    macros = list(macros_for(dr_neuro_il, chicago))

    # then
    assert [m.name for m in macros] == ["My stroke", "Normal head"]
    assert other not in macros
    with pytest.raises(ValidationError, match="already a macro"):
        macro_create(facility=chicago, name="Normal head", text="again", user=admin_chicago)
    with pytest.raises(ValidationError, match="facility or to one radiologist"):
        macro_create(facility=chicago, owner=dr_neuro_il, name="Both", text="x", user=admin_chicago)
