"""The template administration pages: a facility admin keeps their own facility's templates and
macros, and nobody else's; radiologists and credentialing staff do not get these pages at all."""

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from reports.models import Macro, ReportTemplate, TemplateVersion
from reports.template_services import macro_create, template_create, template_version_add
from tests.reports.test_templates import CHEST, with_pneumothorax

SAMPLE = Path(__file__).parent / "data" / "radreport_ct_head_trauma.html"


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def chicago_chest(chicago, admin_chicago) -> ReportTemplate:
    template = template_create(
        facility=chicago, name="Lakeshore chest", content=CHEST, user=admin_chicago, procedure_codes=["71046"]
    )
    template_version_add(
        template=template, content=with_pneumothorax(), change_note="ptx", user=admin_chicago
    )
    return template


@pytest.fixture
def chicago_macro(chicago, admin_chicago) -> Macro:
    return macro_create(facility=chicago, name="Normal chest", text="Lungs clear.", user=admin_chicago)


def edit_form(template: ReportTemplate, content: dict, **extra) -> dict:
    return {
        "name": template.name,
        "procedure_codes": " ".join(template.procedure_codes),
        "modality": template.modality,
        "body_part": template.body_part,
        "variant": template.variant,
        "is_active": "on",
        "content": json.dumps(content),
        "change_note": "",
        **extra,
    }


@pytest.mark.django_db
def test_admin_creates_edits_compares_previews_and_exports_their_template(chicago, lakeview, admin_chicago):
    client = signed_in(admin_chicago)
    lakeview_tpl = template_create(
        facility=lakeview, name="Lakeview knee", content=CHEST, user=None, procedure_codes=["73721"]
    )

    # when the admin creates a template for Lakeshore
    response = client.post(
        "/reports/templates/new/",
        {
            "facility": chicago.pk,
            "name": "Lakeshore chest",
            "procedure_codes": "71046, 71045",
            "modality": "dx",
            "body_part": "",
            "variant": "",
            "content": json.dumps(CHEST),
        },
    )
    template = ReportTemplate.objects.get(facility=chicago, name="Lakeshore chest")
    assert response.status_code == 302 and response["Location"] == f"/reports/templates/{template.pk}/"
    assert (template.procedure_codes, template.modality) == (["71046", "71045"], "DX")

    # and edits its content: version 2, version 1 untouched
    response = client.post(
        f"/reports/templates/{template.pk}/edit/",
        edit_form(template, with_pneumothorax(), change_note="add pneumothorax"),
    )
    assert response.status_code == 302
    assert list(template.versions.values_list("number", "change_note")) == [
        (1, "Created"),
        (2, "add pneumothorax"),
    ]
    assert template.versions.get(number=1).content == CHEST

    # then the list shows it and the shipped templates, not Lakeview's
    listing = client.get("/reports/templates/").content.decode()
    assert "Lakeshore chest" in listing and "Screening mammogram" in listing
    assert lakeview_tpl.name not in listing
    # the diff names the change, the preview fills the sample patient, the export is MRRT
    diff = client.get(f"/reports/templates/{template.pk}/diff/?a=1&b=2").content.decode()
    assert "findings.pneumothorax added" in diff
    preview = client.get(f"/reports/templates/{template.pk}/v2/").content.decode()
    assert "Sudden left-sided weakness" in preview
    export = client.get(f"/reports/templates/{template.pk}/v2/mrrt/")
    assert export["Content-Disposition"] == 'attachment; filename="lakeshore-chest-v2.html"'
    assert b'<input type="checkbox" id="field_pneumothorax"' in export.content


@pytest.mark.django_db
def test_edit_shows_content_problems_and_saves_nothing(chicago_chest, admin_chicago):
    client = signed_in(admin_chicago)
    bad = {"sections": [{"key": "Findings", "fields": [{"key": "x", "kind": "slider"}]}]}

    response = client.post(f"/reports/templates/{chicago_chest.pk}/edit/", edit_form(chicago_chest, bad))

    assert response.status_code == 200
    assert "sections[0].fields[0].kind: one of text, choice, number, yesno, date (got “slider”)" in (
        response.content.decode()
    )
    assert chicago_chest.versions.count() == 2
    # and an unchanged save makes no version
    client.post(f"/reports/templates/{chicago_chest.pk}/edit/", edit_form(chicago_chest, with_pneumothorax()))
    assert chicago_chest.versions.count() == 2


@pytest.mark.django_db
def test_live_preview_shows_sample_data_or_the_problems(admin_chicago):
    client = signed_in(admin_chicago)

    good = client.post("/reports/templates/preview/", {"content": json.dumps(CHEST)}).content.decode()
    broken = client.post("/reports/templates/preview/", {"content": '{"sections": ['}).content.decode()

    assert "Sudden left-sided weakness" in good
    assert "CLINICAL HISTORY:\nSudden left-sided weakness" in good
    assert "Not valid JSON at line 1, column 15" in broken


@pytest.mark.django_db
def test_admin_copies_a_shipped_template_and_cannot_edit_the_shipped_one(chicago, admin_chicago):
    client = signed_in(admin_chicago)
    shipped = ReportTemplate.objects.get(facility__isnull=True, name="Chest radiograph, 2 views")

    assert client.get(f"/reports/templates/{shipped.pk}/").status_code == 200
    assert client.get(f"/reports/templates/{shipped.pk}/edit/").status_code == 404
    assert client.get(f"/reports/templates/{shipped.pk}/fields/").status_code == 404
    assert client.post(f"/reports/templates/{shipped.pk}/import/", {}).status_code == 404

    response = client.post(
        f"/reports/templates/{shipped.pk}/copy/", {"facility": chicago.pk, "name": "Lakeshore chest"}
    )

    copy = ReportTemplate.objects.get(facility=chicago, name="Lakeshore chest")
    assert response["Location"] == f"/reports/templates/{copy.pk}/"
    assert shipped.versions.count() == 1


@pytest.mark.django_db
def test_admin_imports_an_mrrt_file_as_a_template_and_as_a_version(chicago, chicago_chest, admin_chicago):
    client = signed_in(admin_chicago)

    response = client.post(
        "/reports/templates/import/",
        {
            "facility": chicago.pk,
            "file": SimpleUploadedFile("ct.html", SAMPLE.read_bytes(), "text/html"),
            "name": "",
            "procedure_codes": "",
            "modality": "CT",
            "body_part": "HEAD",
        },
        follow=True,
    )
    imported = ReportTemplate.objects.get(facility=chicago, name="CT Head Trauma")
    assert "Check: “Time of scan”: a time field was imported as free text" in response.content.decode()
    assert imported.procedure_codes == ["70450"] and imported.modality == "CT"

    refused = client.post(
        f"/reports/templates/{chicago_chest.pk}/import/",
        {"file": SimpleUploadedFile("x.html", b"<html><body><p>nothing</p></body></html>", "text/html")},
    )
    assert "no &lt;section&gt; elements" in refused.content.decode()
    assert chicago_chest.versions.count() == 2

    client.post(
        f"/reports/templates/{chicago_chest.pk}/import/",
        {"file": SimpleUploadedFile("ct.html", SAMPLE.read_bytes(), "text/html"), "change_note": "RadReport"},
    )
    assert chicago_chest.current_version().number == 3


@pytest.mark.django_db
def test_admin_keeps_their_facility_macros(chicago, chicago_macro, admin_chicago):
    client = signed_in(admin_chicago)

    client.post("/reports/macros/CHI-L1/", {"name": "Normal head", "text": "No acute abnormality."})
    client.post(f"/reports/macros/edit/{chicago_macro.pk}/", {"name": "Normal chest", "text": "Clear lungs."})

    assert dict(Macro.objects.filter(facility=chicago).values_list("name", "text")) == {
        "Normal chest": "Clear lungs.",
        "Normal head": "No acute abnormality.",
    }
    client.post(f"/reports/macros/delete/{chicago_macro.pk}/")
    assert list(Macro.objects.values_list("name", flat=True)) == ["Normal head"]


@pytest.mark.django_db
def test_another_facilitys_admin_is_refused_everything_of_chicago(
    chicago, lakeview, chicago_chest, chicago_macro, admin_lakeview
):
    client = signed_in(admin_lakeview)
    pk = chicago_chest.pk
    upload = {"file": SimpleUploadedFile("ct.html", SAMPLE.read_bytes(), "text/html")}

    # every page and action on Chicago's template and macros answers 404, as for a missing one
    for url in (
        f"/reports/templates/{pk}/",
        f"/reports/templates/{pk}/edit/",
        f"/reports/templates/{pk}/fields/",
        f"/reports/templates/{pk}/v1/",
        f"/reports/templates/{pk}/v2/mrrt/",
        f"/reports/templates/{pk}/diff/?a=1&b=2",
        f"/reports/templates/{pk}/import/",
        "/reports/macros/CHI-L1/",
        f"/reports/macros/edit/{chicago_macro.pk}/",
    ):
        assert client.get(url).status_code == 404, url
    assert client.post(f"/reports/templates/{pk}/edit/", edit_form(chicago_chest, CHEST)).status_code == 404
    assert client.post(f"/reports/templates/{pk}/fields/", edit_form(chicago_chest, CHEST)).status_code == 404
    assert client.post(f"/reports/templates/{pk}/import/", upload).status_code == 404
    assert (
        client.post(f"/reports/templates/{pk}/copy/", {"facility": lakeview.pk, "name": "x"}).status_code
        == 404
    )
    assert client.post("/reports/macros/CHI-L1/", {"name": "Sneaky", "text": "x"}).status_code == 404
    assert client.post(f"/reports/macros/delete/{chicago_macro.pk}/").status_code == 404
    # nor can they create or import into Chicago by naming it in a form
    client.post(
        "/reports/templates/new/",
        {"facility": chicago.pk, "name": "Sneaky", "procedure_codes": "71046", "content": json.dumps(CHEST)},
    )
    client.post(
        "/reports/templates/import/",
        {"facility": chicago.pk, "file": SimpleUploadedFile("ct.html", SAMPLE.read_bytes(), "text/html")},
    )

    # then nothing of Chicago's changed
    assert TemplateVersion.objects.filter(template=chicago_chest).count() == 2
    assert ReportTemplate.objects.filter(facility=chicago).count() == 1
    assert list(Macro.objects.values_list("name", "text")) == [("Normal chest", "Lungs clear.")]
    assert "Lakeshore chest" not in client.get("/reports/templates/").content.decode()


@pytest.mark.django_db
def test_radiologists_and_credentialing_staff_are_refused_the_admin_pages(
    chicago_chest, chicago_macro, dr_neuro_il, mso_mary, verified_client
):
    shipped = ReportTemplate.objects.filter(facility__isnull=True).first()
    urls = [
        "/reports/templates/",
        "/reports/templates/new/",
        "/reports/templates/import/",
        f"/reports/templates/{shipped.pk}/",
        f"/reports/templates/{chicago_chest.pk}/",
        f"/reports/templates/{chicago_chest.pk}/v1/mrrt/",
        "/reports/macros/CHI-L1/",
    ]
    for client in (verified_client(dr_neuro_il), signed_in(mso_mary)):
        for url in urls:
            response = client.get(url)
            assert response.status_code == 403, url
            assert "kept by facility admins and operations" in response.content.decode()
        assert client.post("/reports/macros/CHI-L1/", {"name": "x", "text": "y"}).status_code == 403
    assert Macro.objects.count() == 1


@pytest.mark.django_db
def test_the_menu_offers_templates_to_admins_and_operations_only(admin_chicago, ops_omar, mso_mary):
    assert "/reports/templates/" in signed_in(admin_chicago).get("/").content.decode()
    assert "/reports/templates/" in signed_in(ops_omar).get("/").content.decode()
    assert "/reports/templates/" not in signed_in(mso_mary).get("/").content.decode()


def fields_post(page: str) -> dict:
    """What a browser would post from the field-by-field editor as rendered: every input's value."""
    from html.parser import HTMLParser

    class Inputs(HTMLParser):
        def __init__(self):
            super().__init__()
            self.data, self._textarea, self._select = {}, None, None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "input" and a.get("name") and a.get("name") != "csrfmiddlewaretoken":
                if a.get("type") != "checkbox" or "checked" in a:
                    self.data[a["name"]] = a.get("value") or ("on" if a.get("type") == "checkbox" else "")
            elif tag == "textarea":
                self._textarea = a["name"]
                self.data[a["name"]] = ""
            elif tag == "select":
                self._select = a["name"]
            elif tag == "option" and self._select and "selected" in a:
                self.data[self._select] = a["value"]

        def handle_data(self, data):
            if self._textarea:
                self.data[self._textarea] += data

        def handle_endtag(self, tag):
            if tag == "textarea":
                self._textarea = None
            elif tag == "select":
                self._select = None

    parser = Inputs()
    parser.feed(page.split("<main>")[1])
    return parser.data


@pytest.mark.django_db
def test_field_by_field_editor_adds_moves_and_removes_fields(chicago_chest, admin_chicago):
    client = signed_in(admin_chicago)
    url = f"/reports/templates/{chicago_chest.pk}/fields/"
    data = fields_post(client.get(url).content.decode())
    # the page as rendered saves to the same content: no new version
    client.post(url, data)
    assert chicago_chest.versions.count() == 2

    # when the admin adds an ASPECTS-like number to Findings (its blank row), removes pneumothorax,
    # moves the impression section first and requires the history
    data.update(
        {
            "s1-f3-label": "Rib fractures",
            "s1-f3-kind": "number",
            "s1-f3-min": "0",
            "s1-f3-max": "24",
            "s1-f2-remove": "on",
            "s2-order": "0",
            "s0-f0-required": "on",
            "change_note": "rib count",
        }
    )
    response = client.post(url, data)

    # then version 3 has exactly that
    assert response.status_code == 302
    version = chicago_chest.current_version()
    assert (version.number, version.change_note) == (3, "rib count")
    assert [s["key"] for s in version.content["sections"]] == ["impression", "history", "findings"]
    history, findings = version.content["sections"][1], version.content["sections"][2]
    assert history["fields"][0]["required"] is True
    assert [f["key"] for f in findings["fields"]] == ["lungs", "effusion", "rib_fractures"]
    assert findings["fields"][2:] == [
        {"key": "rib_fractures", "label": "Rib fractures", "kind": "number", "min": 0, "max": 24}
    ]


@pytest.mark.django_db
def test_field_by_field_editor_names_problems_by_section_and_field(chicago_chest, admin_chicago):
    client = signed_in(admin_chicago)
    url = f"/reports/templates/{chicago_chest.pk}/fields/"
    data = fields_post(client.get(url).content.decode())
    data.update({"s1-f1-kind": "number", "s1-f1-min": "5", "s1-f1-max": "1"})

    response = client.post(url, data)

    page = response.content.decode()
    assert response.status_code == 200
    assert "Findings › Effusion (min): larger than max" in page
    assert "Findings › Effusion (choices): only a choice field has choices" in page
    assert chicago_chest.versions.count() == 2
