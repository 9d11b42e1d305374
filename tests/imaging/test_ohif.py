"""OHIF on ReadRoom's origin (docs/viewer.md), without a browser: the install refuses a tarball that
is not the pin; the viewer's page, app-config.js and assets are served only to those who may read
images, with cross-origin isolation and the caching the bundles need; every DICOMweb URL OHIF uses
refuses another facility's reader, credentialing staff and anonymous callers; a reader's measurement
SR (an SR OHIF wrote, kept in tests/imaging/data) is stored through STOW-RS with the session and the
CSRF token, kept with the study without touching its images, and listed in the report editor."""

from __future__ import annotations

import gzip
import json
import re
from io import BytesIO
from pathlib import Path

import pytest
from auditlog.models import LogEntry
from django.core.cache import cache
from django.test import Client
from django.utils import timezone
from pydicom import dcmread

from imaging import ohif, storage
from imaging.measurements import study_measurements
from imaging.models import Instance, Series, Study
from imaging.selectors import ohif_viewer_url, study_priors
from interfaces.dicom.receive import dicom_instance_receive
from tests.conftest import enrol_totp
from tests.dicom_data import ct_series, part10_bytes
from tests.reports.conftest import ct_head_template, head_ct_study  # noqa: F401
from tests.worklist.conftest import make_eligible, neuro_reader  # noqa: F401
from worklist.services import study_claim

OHIF_SR = Path(__file__).parent / "data" / "ohif_length_sr.dcm"  # OHIF 3.13's "Create SR" of one length
FAILURE_REASON, FAILED_SOP_SEQUENCE = "00081197", "00081198"


@pytest.fixture(autouse=True)
def image_store(settings, tmp_path):
    settings.READROOM_STORAGE_DIR = tmp_path / "storage"
    settings.READROOM_STORAGE_FSYNC = False
    storage._keys.cache_clear()
    cache.clear()
    yield
    storage._keys.cache_clear()
    cache.clear()


@pytest.fixture
def ohif_dir(settings, tmp_path) -> Path:
    """An install laid out as ``ohif_install`` leaves it (a tiny page and one bundle, not OHIF)."""
    install = ohif.OhifInstall(tmp_path / "ohif")
    install.assets.mkdir(parents=True)
    install.index_html.write_text(
        f'<!doctype html><html><head><script>window.PUBLIC_URL="{ohif.ASSET_PREFIX}"</script>'
        f'<script src="{ohif.ASSET_PREFIX}app.bundle.js"></script>'
        '</head><body><div id="root"></div></body></html>'
    )
    bundle = install.assets / "app.bundle.0f6159c501addfe9.js"
    bundle.write_text("console.log('ohif');" * 200)
    (install.assets / (bundle.name + ".gz")).write_bytes(gzip.compress(bundle.read_bytes()))
    (install.assets / "0ddf166f7a343eda.wasm").write_bytes(b"\0asm" + b"\0" * 64)
    install.marker.write_text(json.dumps({"version": ohif.VERSION, "integrity": ohif.INTEGRITY}))
    settings.READROOM_OHIF_DIR = install.root
    return install.root


@pytest.fixture
def reader(neuro_reader):  # noqa: F811
    return neuro_reader


@pytest.fixture
def read_ct(reader, chicago, ct_head_template):  # noqa: F811
    """A claimed head CT at Lakeshore with three slices, and the reader who holds it."""
    study = head_ct_study(chicago)
    ct = ct_series(count=3, study_uid=study.study_instance_uid, accession=study.accession_number)
    for part10 in ct.part10():
        assert dicom_instance_receive(facility=chicago, part10=part10).ok
    study_claim(study_id=study.pk, user=reader, at=timezone.now())
    return Study.objects.get(pk=study.pk)


def reader_client(user) -> Client:
    """The reader's browser: session cookie, second factor done, CSRF enforced as in production."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from tests.conftest import current_totp

    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get("/account/verify/")
    token = client.cookies["csrftoken"].value
    device = TOTPDevice.objects.get(user=user, confirmed=True)
    response = client.post("/account/verify/", {"token": current_totp(device), "csrfmiddlewaretoken": token})
    assert response.status_code == 302, response.content
    return client


def csrf(client: Client) -> str:
    return client.cookies["csrftoken"].value


def ohif_sr_for(study: Study, *, sop_class: str | None = None) -> bytes:
    """OHIF's SR of a length, re-aimed at ``study``'s first slice (new SR UIDs)."""
    from pydicom.uid import generate_uid

    ds = dcmread(OHIF_SR)
    first = Instance.objects.filter(series__study=study).order_by("instance_number").first()
    ds.StudyInstanceUID = study.study_instance_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if sop_class:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class

    def aim(items):
        for item in items:
            if "ReferencedSOPSequence" in item:
                item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID = first.sop_instance_uid
            aim(item.get("ContentSequence", []))

    aim(ds.ContentSequence)
    return part10_bytes(ds)


def stow(client: Client, part10: bytes, **headers):
    body = b"--b0\r\nContent-Type: application/dicom\r\n\r\n" + part10 + b"\r\n--b0--\r\n"
    return client.generic(
        "POST",
        "/dicomweb/studies",
        body,
        content_type='multipart/related; type="application/dicom"; boundary="b0"',
        **headers,
    )


# --- install --------------------------------------------------------------------------------------


def test_the_install_refuses_a_tarball_that_is_not_the_pin(tmp_path):
    tarball = tmp_path / "ohif-app-3.13.2.tgz"
    tarball.write_bytes(b"not the package")
    with pytest.raises(ohif.OhifInstallError, match="does not match the pin"):
        ohif.ohif_install(root=tmp_path / "ohif", tarball=tarball)
    assert not (tmp_path / "ohif").exists()


def test_without_an_install_open_falls_back_to_the_built_in_viewer(
    settings, tmp_path, client, read_ct, ops_omar
):
    settings.READROOM_OHIF_DIR = tmp_path / "absent"
    assert ohif_viewer_url(read_ct) is None
    client.force_login(ops_omar)
    answer = client.get(f"/studies/{read_ct.pk}/open/")
    assert answer.status_code == 302 and answer["Location"] == f"/studies/{read_ct.pk}/viewer/"
    assert client.get("/ohif/app-config.js").status_code == 404


# --- the page, its config and its files -----------------------------------------------------------


def test_open_goes_to_ohif_with_the_patients_visible_priors_newest_first(
    ohif_dir, read_ct, ops_omar, chicago, client
):
    older = Study.objects.create(
        facility=chicago,
        patient=read_ct.patient,
        study_instance_uid="1.2.826.0.1.3680043.10.77.9001",
        study_datetime=timezone.now() - timezone.timedelta(days=400),
    )
    newer = Study.objects.create(
        facility=chicago,
        patient=read_ct.patient,
        study_instance_uid="1.2.826.0.1.3680043.10.77.9002",
        study_datetime=timezone.now() - timezone.timedelta(days=30),
    )
    assert study_priors(ops_omar, read_ct) == [newer, older]
    client.force_login(ops_omar)
    answer = client.get(f"/studies/{read_ct.pk}/open/")
    uids = ",".join([read_ct.study_instance_uid, newer.study_instance_uid, older.study_instance_uid])
    assert answer["Location"] == f"/ohif/viewer?StudyInstanceUIDs={uids.replace(',', '%2C')}"


def test_open_starts_ohif_at_the_ai_findings_flagged_series_and_image(ohif_dir, read_ct, reader, chicago):
    from urllib.parse import parse_qs, urlsplit

    from tests.ai_data import ai_sr

    # given a second series, whose middle slice an AI SR (ICH present) flags
    axial = ct_series(count=5, study_uid=read_ct.study_instance_uid, accession=read_ct.accession_number)
    for part10 in axial.part10():
        assert dicom_instance_receive(facility=chicago, part10=part10).ok
    assert dicom_instance_receive(facility=chicago, part10=part10_bytes(ai_sr(list(axial.datasets)))).ok
    # when the reader opens it
    client = reader_client(reader)
    answer = client.get(f"/studies/{read_ct.pk}/open/")
    # then OHIF's default hanging protocol is told the flagged series and image (docs/ai.md)
    query = parse_qs(urlsplit(answer["Location"]).query)
    assert query["StudyInstanceUIDs"] == [read_ct.study_instance_uid]
    assert query["initialSeriesInstanceUID"] == [axial.series_uid]
    assert query["initialSOPInstanceUID"] == [axial.sop_uids[2]]
    # and the page itself opens for those parameters (the UIDs are the only scope it checks)
    assert client.get(answer["Location"]).status_code == 200


def test_open_points_ohif_at_the_ai_segmentation_so_its_overlay_is_drawn(ohif_dir, read_ct, reader, chicago):
    from urllib.parse import parse_qs, urlsplit

    from imaging.ohif import app_config
    from tests.ai_data import ai_seg

    # given an AI SEG (ICH) of a second series' middle slice
    axial = ct_series(count=5, study_uid=read_ct.study_instance_uid, accession=read_ct.accession_number)
    for part10 in axial.part10():
        assert dicom_instance_receive(facility=chicago, part10=part10).ok
    seg = ai_seg(list(axial.datasets))
    assert dicom_instance_receive(facility=chicago, part10=part10_bytes(seg)).ok
    # when the reader opens the study
    answer = reader_client(reader).get(f"/studies/{read_ct.pk}/open/")
    # then OHIF opens the SEG's series (its viewport shows the segmented CT with the overlay) and
    # hydrates it without asking (docs/ai.md)
    query = parse_qs(urlsplit(answer["Location"]).query)
    assert query["initialSeriesInstanceUID"] == [seg.SeriesInstanceUID]
    assert "initialSOPInstanceUID" not in query  # OHIF looks it up in the SEG's own instances
    assert app_config()["disableConfirmationPrompts"] is True


def test_a_study_no_ai_flagged_opens_ohif_without_an_initial_image(ohif_dir, read_ct, reader):
    answer = reader_client(reader).get(f"/studies/{read_ct.pk}/open/")
    assert "initialSeriesInstanceUID" not in answer["Location"]


def test_the_viewer_page_is_isolated_audited_and_carries_the_csrf_token(ohif_dir, read_ct, reader):
    client = reader_client(reader)
    page = client.get("/ohif/viewer", {"StudyInstanceUIDs": read_ct.study_instance_uid})
    assert page.status_code == 200
    assert page["Cross-Origin-Opener-Policy"] == "same-origin"
    assert page["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert "no-store" in page["Cache-Control"]
    html = page.content.decode()
    assert '<meta name="csrf-token" content="' in html
    assert html.index("ohif_bridge.js") < html.index("app.bundle.js")  # the bridge runs first
    assert LogEntry.objects.filter(action=LogEntry.Action.ACCESS, object_pk=str(read_ct.pk)).exists()


def test_the_viewer_page_has_its_own_csp_whose_nonce_only_its_inline_scripts_carry(ohif_dir, read_ct, reader):
    client = reader_client(reader)
    first = client.get("/ohif/viewer", {"StudyInstanceUIDs": read_ct.study_instance_uid})
    second = client.get("/ohif/viewer", {"StudyInstanceUIDs": read_ct.study_instance_uid})
    policy = first["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([\w-]+)'", policy).group(1)
    assert nonce not in second["Content-Security-Policy"]  # a fresh nonce per response
    # framed only by this origin: the report editor's images pane (docs/viewer.md)
    assert "frame-ancestors 'self'" in policy and "object-src 'none'" in policy
    assert first["X-Frame-Options"] == "SAMEORIGIN"
    # 'unsafe-eval' on OHIF's page only: its SEG decoder (scijs ndarray) compiles with new Function
    # (docs/security.md); no 'unsafe-inline' for scripts, no other origin
    script_src = next(d for d in policy.split("; ") if d.startswith("script-src "))
    assert script_src == f"script-src 'self' 'nonce-{nonce}' 'unsafe-eval' 'wasm-unsafe-eval'"
    # and only there: the built-in viewer beside it (a ReadRoom page) keeps the site's policy
    builtin = client.get(f"/studies/{read_ct.pk}/viewer/")
    assert builtin.status_code == 200 and "unsafe-eval" not in builtin["Content-Security-Policy"]
    html = first.content.decode()
    inline = re.findall(r"<script(?![^>]*\bsrc=)([^>]*)>", html)
    assert inline and all(f'nonce="{nonce}"' in attributes for attributes in inline)


def test_app_config_has_one_dicomweb_source_and_nothing_else(ohif_dir, reader):
    config = ohif.app_config()
    assert [s["sourceName"] for s in config["dataSources"]] == ["readroom"]
    source = config["dataSources"][0]["configuration"]
    assert source["wadoRoot"] == source["qidoRoot"] == "/dicomweb"
    assert source["thumbnailRendering"] == "thumbnailDirect"  # an <img> on …/instances/{uid}/thumbnail
    assert config["showStudyList"] is False and config["investigationalUseDialog"] == {"option": "never"}
    assert "dangerouslyUseDynamicConfig" not in config and "customizationUrlPrefixes" not in config
    answer = reader_client(reader).get("/ohif/app-config.js")
    assert answer.status_code == 200 and answer["Content-Type"].startswith("text/javascript")
    assert b"window.config = " in answer.content and b"dicomlocal" not in answer.content


def test_bundles_are_immutable_gzipped_and_isolated(ohif_dir, reader):
    client = reader_client(reader)
    url = f"{ohif.ASSET_PREFIX}app.bundle.0f6159c501addfe9.js"
    zipped = client.get(url, HTTP_ACCEPT_ENCODING="gzip, br")
    assert zipped.status_code == 200 and zipped["Content-Encoding"] == "gzip"
    assert "immutable" in zipped["Cache-Control"] and zipped["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert gzip.decompress(b"".join(zipped.streaming_content)).startswith(b"console.log")
    plain = client.get(url)
    assert "Content-Encoding" not in plain and b"".join(plain.streaming_content).startswith(b"console.log")
    assert client.get(f"{ohif.ASSET_PREFIX}0ddf166f7a343eda.wasm")["Content-Type"] == "application/wasm"
    assert client.get(f"{ohif.ASSET_PREFIX}../installed.json").status_code == 404
    assert client.get(f"{ohif.ASSET_PREFIX}{'app.bundle.0f6159c501addfe9.js.gz'}").status_code == 404
    assert client.get("/ohif/3.0.0/app.bundle.0f6159c501addfe9.js").status_code == 404


# --- who is refused ------------------------------------------------------------------------------


def ohif_urls(study: Study) -> list[str]:
    """Every URL OHIF asks for when it opens ``study`` (QIDO, metadata, frames, rendered), and its page."""
    series = study.series.first()
    instance = series.instances.first()
    base = f"/dicomweb/studies/{study.study_instance_uid}"
    sop = f"{base}/series/{series.series_instance_uid}/instances/{instance.sop_instance_uid}"
    return [
        f"{base}/series",
        f"{base}/metadata",
        f"{base}/series/{series.series_instance_uid}/metadata",
        f"{base}/series/{series.series_instance_uid}/instances",
        f"{sop}/metadata",
        f"{sop}/frames/1",
        f"{sop}/rendered",
        f"{sop}/frames/1/rendered",
        f"/ohif/viewer?StudyInstanceUIDs={study.study_instance_uid}",
    ]


def test_another_facilitys_reader_an_mso_and_anonymous_get_nothing(
    ohif_dir, read_ct, dr_msk_wi, lakeview, mso_mary, client
):
    make_eligible(dr_msk_wi, lakeview)
    enrol_totp(dr_msk_wi)
    outsider = reader_client(dr_msk_wi)
    for url in ohif_urls(read_ct):
        assert outsider.get(url, HTTP_ACCEPT="*/*").status_code == 404, url
    qido = outsider.get("/dicomweb/studies", {"StudyInstanceUID": read_ct.study_instance_uid})
    assert qido.status_code in (200, 204) and not (qido.content and json.loads(qido.content))
    assert stow(outsider, ohif_sr_for(read_ct), HTTP_X_CSRFTOKEN=csrf(outsider)).status_code == 409

    client.force_login(mso_mary)
    for url in [
        *ohif_urls(read_ct),
        "/ohif/app-config.js",
        f"{ohif.ASSET_PREFIX}app.bundle.0f6159c501addfe9.js",
    ]:
        assert client.get(url, HTTP_ACCEPT="*/*").status_code == 403, url
    client.logout()
    for url in ohif_urls(read_ct)[:-1]:
        assert client.get(url, HTTP_ACCEPT="*/*").status_code == 401, url  # DICOMweb: a token challenge
    assert client.get(ohif_urls(read_ct)[-1]).status_code == 302  # the page: to sign in
    assert client.get("/ohif/app-config.js").status_code == 403
    assert client.get(f"{ohif.ASSET_PREFIX}app.bundle.0f6159c501addfe9.js").status_code == 403
    assert not Series.objects.filter(made_by__isnull=False).exists()


# --- measurements saved ----------------------------------------------------------------------------


def test_a_readers_sr_is_kept_with_the_study_and_listed_for_the_report(read_ct, reader):
    client = reader_client(reader)
    before = Study.objects.filter(pk=read_ct.pk).values(
        "number_of_instances", "number_of_series", "modalities", "last_received_at", "status"
    )[0]
    # without the CSRF token the session's POST is refused; with it (OHIF's bridge sends it) stored
    assert stow(client, ohif_sr_for(read_ct)).status_code == 403
    answer = stow(client, ohif_sr_for(read_ct), HTTP_X_CSRFTOKEN=csrf(client))
    assert answer.status_code == 200, answer.content
    series = Series.objects.get(study=read_ct, made_by=reader)
    assert (series.modality, series.number_of_instances) == ("SR", 1)
    after = Study.objects.filter(pk=read_ct.pk).values(*before)[0]
    assert after == before  # not images: no count, no modality, no new quiet period, same status

    first = Instance.objects.filter(series__study=read_ct).order_by("instance_number").first()
    [measurement] = study_measurements(read_ct)
    assert measurement.text == f"Length: 46 mm, series 2 image {first.instance_number}"
    page = client.get(f"/studies/{read_ct.pk}/report/")
    assert measurement.text in page.content.decode()

    # and a reader stores no images, and nothing into a study they may not read
    image = dcmread(BytesIO(ct_series(count=1).part10()[0]))
    image.StudyInstanceUID = read_ct.study_instance_uid
    refused = stow(client, part10_bytes(image), HTTP_X_CSRFTOKEN=csrf(client))
    assert refused.status_code == 409
    assert json.loads(refused.content)[FAILED_SOP_SEQUENCE]["Value"][0][FAILURE_REASON]["Value"] == [0x0122]


def test_a_saved_measurement_changes_no_worklist_row(read_ct, reader):
    """Quiet period and routing: a derived object never creates a study nor completes one."""
    from imaging.services import studies_complete_quiet

    client = reader_client(reader)
    Study.objects.filter(pk=read_ct.pk).update(
        status="receiving", last_received_at=timezone.now() - timezone.timedelta(hours=1)
    )
    assert stow(client, ohif_sr_for(read_ct), HTTP_X_CSRFTOKEN=csrf(client)).status_code == 200
    # the quiet period still counts from the last image, not from the saved measurement
    assert studies_complete_quiet() == [read_ct.pk]
