"""DICOMweb (PS3.18) with the real ``dicomweb-client`` against a live server, and its refusals:
STOW-RS through the one receive path, QIDO-RS from the index, WADO-RS from the encrypted store —
each limited to the caller's facilities and audited."""

from __future__ import annotations

import copy
from io import BytesIO

import pytest
import requests
from auditlog.models import LogEntry
from dicomweb_client.api import DICOMwebClient
from django.core.cache import cache, caches
from PIL import Image
from pydicom import Dataset, dcmread, dcmwrite

from accounts.tokens import api_token_issue
from imaging.models import Instance, Study
from interfaces.dicom.receive import dicom_instance_receive
from interfaces.models import DicomAssociation, QuarantinedObject
from tests.dicom_data import ct_series

CANNOT_UNDERSTAND = 0xC210
STUDY_UID_MISMATCH = 0xA901
FAILED_SOP_SEQUENCE, REFERENCED_SOP_SEQUENCE, FAILURE_REASON = "00081198", "00081199", "00081197"


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()  # rendered frames and audit de-duplication are cached per SOP UID / user
    yield
    cache.clear()
    caches["frames"].clear()


def token_client(live_server, user) -> DICOMwebClient:
    """dicomweb-client as a hospital system uses it: an API token on a requests session. A large
    chunk size keeps bodies unchunked — Django's test server needs a Content-Length."""
    session = requests.Session()
    session.headers["Authorization"] = f"Token {api_token_issue(user=user).key}"
    return DICOMwebClient(url=f"{live_server.url}/dicomweb", session=session, chunk_size=64 * 1024 * 1024)


def stored_in(facility, series) -> None:
    """Images that arrived for ``facility`` through the receive path (as C-STORE delivers them)."""
    for part10 in series.part10():
        assert dicom_instance_receive(facility=facility, part10=part10).ok


def multipart(*parts: bytes, boundary: str = "b0undary", part_type: str = "application/dicom") -> bytes:
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: " + part_type.encode() + b"\r\n\r\n" + p + b"\r\n"
        for p in parts
    )
    return body + b"--" + boundary.encode() + b"--\r\n"


def stow(client, body: bytes, url: str = "/dicomweb/studies", content_type: str | None = None, **extra):
    content_type = content_type or 'multipart/related; type="application/dicom"; boundary="b0undary"'
    return client.generic("POST", url, body, content_type=content_type, **extra)


def failure_reasons(answer: dict) -> list[int]:
    return [item[FAILURE_REASON]["Value"][0] for item in answer[FAILED_SOP_SEQUENCE].get("Value", [])]


# --- with dicomweb-client over real HTTP --------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_facility_admin_stores_searches_and_retrieves_over_http(
    live_server, admin_chicago, chicago, image_store
):
    # given the hospital's PACS account (a facility admin of Chicago) with an API token
    dicomweb = token_client(live_server, admin_chicago)
    series = ct_series(count=5, accession="ACC-STOW-1", patient_id="MRN-STOW")
    sent = dict(zip(series.sop_uids, series.part10(), strict=True))

    # when it stores a five-slice CT series with STOW-RS
    answer = dicomweb.store_instances(list(series.datasets))

    # then every instance is stored, indexed for Chicago and the request recorded as an association
    assert len(answer.ReferencedSOPSequence) == 5
    assert "FailedSOPSequence" not in answer or not answer.FailedSOPSequence
    assert answer.RetrieveURL.endswith(f"/dicomweb/studies/{series.study_uid}")
    study = Study.objects.get(study_instance_uid=series.study_uid)
    assert (study.facility, study.accession_number, study.number_of_instances) == (chicago, "ACC-STOW-1", 5)
    association = DicomAssociation.objects.get(kind=DicomAssociation.Kind.STOW)
    assert (association.facility, association.instances_stored, association.instances_failed) == (
        chicago,
        5,
        0,
    )

    # QIDO-RS: by accession number and by patient ID, and with limit/offset
    found = dicomweb.search_for_studies(search_filters={"AccessionNumber": "ACC-STOW-1"})
    assert [Dataset.from_json(s).StudyInstanceUID for s in found] == [series.study_uid]
    assert Dataset.from_json(found[0]).NumberOfStudyRelatedInstances == 5
    assert len(dicomweb.search_for_studies(search_filters={"PatientID": "MRN-STOW"})) == 1
    assert dicomweb.search_for_studies(search_filters={"PatientID": "MRN-OTHER"}) == []
    assert len(dicomweb.search_for_studies(search_filters={"PatientName": "quinlan*"})) == 1
    assert len(dicomweb.search_for_studies(search_filters={"ModalitiesInStudy": "CT"})) == 1
    assert len(dicomweb.search_for_studies(search_filters={"StudyDate": "20250301-20250302"})) == 1
    assert dicomweb.search_for_studies(search_filters={"StudyDate": "20250302-"}) == []
    series_found = dicomweb.search_for_series(series.study_uid)
    assert [Dataset.from_json(s).NumberOfSeriesRelatedInstances for s in series_found] == [5]
    page = dicomweb.search_for_instances(series.study_uid, series.series_uid, limit=2, offset=3)
    assert [Dataset.from_json(i).InstanceNumber for i in page] == [4, 5]
    with_header = dicomweb.search_for_instances(
        series.study_uid, series.series_uid, fields=["Rows", "NumberOfFrames"], limit=1
    )
    assert Dataset.from_json(with_header[0]).Rows == 128

    # WADO-RS: the instance bytes are exactly what was sent (decrypted from the store)
    first_uid = series.sop_uids[0]
    series_url = f"{live_server.url}/dicomweb/studies/{series.study_uid}/series/{series.series_uid}"
    url = f"{series_url}/instances/{first_uid}"
    assert dicomweb.retrieve_bulkdata(url) == [sent[first_uid]]
    assert (
        dicomweb.retrieve_instance(series.study_uid, series.series_uid, first_uid).SOPInstanceUID == first_uid
    )
    assert len(dicomweb.retrieve_series(series.study_uid, series.series_uid)) == 5

    # metadata: the headers; pixel data by reference (tests/interfaces/test_dicomweb_bulkdata.py)
    metadata = dicomweb.retrieve_series_metadata(series.study_uid, series.series_uid)
    assert len(metadata) == 5
    assert all(set(item["7FE00010"]) == {"vr", "BulkDataURI"} for item in metadata)
    assert {Dataset.from_json(item).PatientID for item in metadata} == {"MRN-STOW"}

    # rendered: a PNG of the slice's size, windowed; and the raw frame
    png = dicomweb.retrieve_instance_frames_rendered(
        series.study_uid,
        series.series_uid,
        first_uid,
        [1],
        media_types=("image/png",),
        params={"window": "40,80"},
    )
    image = Image.open(BytesIO(png))
    assert (image.format, image.size, image.mode) == ("PNG", (128, 128), "L")
    jpeg = dicomweb.retrieve_instance_rendered(
        series.study_uid, series.series_uid, first_uid, media_types=("image/jpeg",)
    )
    assert Image.open(BytesIO(jpeg)).format == "JPEG"
    (frame,) = dicomweb.retrieve_instance_frames(series.study_uid, series.series_uid, first_uid, [1])
    assert frame == series.datasets[0].PixelData

    # and every read of the study is in the audit log, with the token's user as the actor
    reads = LogEntry.objects.get_for_object(study).filter(action=LogEntry.Action.ACCESS)
    assert reads.exists()
    assert set(reads.values_list("actor__username", flat=True)) == {"admin_chicago"}


@pytest.mark.django_db(transaction=True)
def test_another_facility_is_invisible_over_http(
    live_server, admin_chicago, admin_lakeview, chicago, image_store
):
    # given a Chicago study
    series = ct_series(count=2, accession="ACC-CHI-9")
    stored_in(chicago, series)
    lakeview = token_client(live_server, admin_lakeview)
    # then Lakeview's admin neither finds it nor retrieves it
    assert lakeview.search_for_studies() == []
    assert lakeview.search_for_studies(search_filters={"StudyInstanceUID": series.study_uid}) == []
    with pytest.raises(requests.HTTPError) as refused:
        lakeview.retrieve_study(series.study_uid)
    assert refused.value.response.status_code == 404
    # and cannot store into Chicago either
    with pytest.raises(requests.HTTPError) as refused:
        lakeview.store_instances(list(ct_series(count=1).datasets), additional_params={"facility": "CHI-L1"})
    assert refused.value.response.status_code == 403


@pytest.mark.django_db(transaction=True)
def test_datasets_built_in_memory_are_stored_without_a_preamble(
    live_server, admin_chicago, chicago, image_store
):
    # given datasets that were never read from a file: pydicom gives them no preamble, so
    # dicomweb-client's dcmwrite sends the File Meta group first, with neither preamble nor DICM
    series = ct_series(count=2, accession="ACC-NOPRE")
    datasets = [copy.deepcopy(ds) for ds in series.datasets]
    for ds in datasets:
        ds.preamble = None
    buffer = BytesIO()
    dcmwrite(buffer, datasets[0])
    assert buffer.getvalue()[:2] == b"\x02\x00"  # the test sends what the issue describes
    dicomweb = token_client(live_server, admin_chicago)

    # when the hospital's system stores them with dicomweb-client
    answer = dicomweb.store_instances(datasets)

    # then both are stored, and what is served back is a conformant Part 10 file of the same dataset
    assert len(answer.ReferencedSOPSequence) == 2
    assert not QuarantinedObject.objects.exists()
    assert Study.objects.get(study_instance_uid=series.study_uid).number_of_instances == 2
    served = dicomweb.retrieve_bulkdata(
        f"{live_server.url}/dicomweb/studies/{series.study_uid}/series/{series.series_uid}"
        f"/instances/{series.sop_uids[0]}"
    )[0]
    assert served[128:132] == b"DICM"
    back = dcmread(BytesIO(served))
    assert back.SOPInstanceUID == series.sop_uids[0]
    assert back.PixelData == series.datasets[0].PixelData


def test_a_part_without_file_meta_is_quarantined_with_the_reason(client, admin_chicago, image_store):
    # given a bare dataset: no preamble, no DICM, no File Meta Information (not a Part 10 file)
    ds = copy.deepcopy(ct_series(count=1).datasets[0])
    del ds.file_meta
    ds.preamble = None
    buffer = BytesIO()
    dcmwrite(buffer, ds, implicit_vr=False, little_endian=True)
    client.force_login(admin_chicago)

    # when it is stored
    response = stow(client, multipart(buffer.getvalue()))

    # then it fails as undecodable, and is kept in quarantine with the reason
    assert response.status_code == 409
    assert failure_reasons(response.json()) == [CANNOT_UNDERSTAND]
    assert "File Meta Information" in QuarantinedObject.objects.get().reason


# --- refusals and failures through the full Django stack ----------------------------------------


def test_anonymous_is_asked_to_authenticate(client):
    response = client.get("/dicomweb/studies")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert stow(client, multipart(b"x")).status_code == 401


def test_wado_of_another_facility_answers_404(client, admin_lakeview, chicago, image_store):
    series = ct_series(count=1)
    stored_in(chicago, series)
    client.force_login(admin_lakeview)
    study, s, sop = series.study_uid, series.series_uid, series.sop_uids[0]
    for path in (
        f"/dicomweb/studies/{study}",
        f"/dicomweb/studies/{study}/metadata",
        f"/dicomweb/studies/{study}/series",
        f"/dicomweb/studies/{study}/series/{s}/instances",
        f"/dicomweb/studies/{study}/series/{s}/instances/{sop}/rendered",
        f"/dicomweb/studies/{study}/series/{s}/instances/{sop}/frames/1",
        f"/dicomweb/studies/{study}/series/{s}/instances/{sop}/bulkdata/7FE00010",
    ):
        assert client.get(path).status_code == 404, path
    assert client.get("/dicomweb/series").json() == []
    assert client.get("/dicomweb/instances").json() == []
    # no read of the study; the two searches themselves are audited, as having found nothing
    access = LogEntry.objects.filter(action=LogEntry.Action.ACCESS)
    assert not access.exclude(object_pk="").exists()
    assert [e.additional_data["search"]["returned"] for e in access] == [0, 0]


def test_credentialing_staff_get_no_images(client, mso_mary, chicago, image_store):
    series = ct_series(count=1)
    stored_in(chicago, series)
    client.force_login(mso_mary)
    assert client.get("/dicomweb/studies").status_code == 403
    assert client.get(f"/dicomweb/studies/{series.study_uid}").status_code == 403
    assert stow(client, multipart(series.part10()[0])).status_code == 403


def test_operations_and_director_search_every_facility(
    client, verified_client, ops_omar, director_dana, chicago, lakeview, image_store
):
    stored_in(chicago, ct_series(count=1, accession="A-CHI"))
    stored_in(lakeview, ct_series(count=1, accession="A-LV"))
    client.force_login(ops_omar)
    assert len(client.get("/dicomweb/studies").json()) == 2
    director = verified_client(director_dana)
    accessions = {s["00080050"]["Value"][0] for s in director.get("/dicomweb/studies").json()}
    assert accessions == {"A-CHI", "A-LV"}


def test_a_radiologist_sees_only_what_eligibility_allows(verified_client, dr_neuro_il, chicago, image_store):
    # given a Chicago study and a neuroradiologist with no privileges or shift there yet
    series = ct_series(count=1)
    stored_in(chicago, series)
    radiologist = verified_client(dr_neuro_il)
    # then DICOMweb shows nothing of it, and a radiologist cannot store an image (a reader stores only
    # measurement SRs and key objects, docs/viewer.md): none stored, the part refused as SOP class not
    # supported (0x0122) with the reason
    assert radiologist.get("/dicomweb/studies").json() == []
    assert radiologist.get(f"/dicomweb/studies/{series.study_uid}/metadata").status_code == 404
    response = stow(radiologist, multipart(series.part10()[0]))
    assert response.status_code == 409
    failed = response.json()["00081198"]["Value"]
    assert [f["00081197"]["Value"][0] for f in failed] == [0x0122]


def test_stow_picks_the_facility_or_says_how_to_name_it(
    client, ops_omar, admin_chicago, chicago, image_store
):
    part = ct_series(count=1).part10()[0]
    # operations administer every facility: they must name one
    client.force_login(ops_omar)
    answer = stow(client, multipart(part))
    assert answer.status_code == 400 and "?facility=CODE" in answer.json()["detail"]
    assert stow(client, multipart(part), url="/dicomweb/studies?facility=CHI-L1").status_code == 200
    # a code nobody administers gets the same refusal as another client's (no probing)
    refused = stow(client, multipart(part), url="/dicomweb/studies?facility=NOPE")
    assert refused.status_code == 403 and "NOPE" in refused.json()["detail"]
    # a facility admin of exactly one facility stores there without naming it
    client.force_login(admin_chicago)
    again = ct_series(count=1)
    assert stow(client, multipart(*again.part10())).status_code == 200
    assert Study.objects.get(study_instance_uid=again.study_uid).facility == chicago


def test_stow_refuses_other_media_types(client, admin_chicago, image_store):
    client.force_login(admin_chicago)
    part = ct_series(count=1).part10()[0]
    assert stow(client, part, content_type="application/dicom").status_code == 415
    json_parts = 'multipart/related; type="application/dicom+json"; boundary=b0undary'
    assert stow(client, multipart(b"[]"), content_type=json_parts).status_code == 415
    no_boundary = stow(client, multipart(part), content_type='multipart/related; type="application/dicom"')
    assert no_boundary.status_code == 400
    truncated = stow(client, multipart(part)[:-20])
    assert truncated.status_code == 400 and "closing boundary" in truncated.json()["detail"]
    assert not Instance.objects.exists()


def test_a_part_that_is_not_dicom_is_quarantined(client, admin_chicago, chicago, image_store):
    client.force_login(admin_chicago)
    good = ct_series(count=1)
    # one good instance, one that is not DICOM: 202, the bad one failed with 0xC210 and kept
    response = stow(client, multipart(good.part10()[0], b"%PDF-1.4 not a dicom file"))
    assert response.status_code == 202
    assert response["Content-Type"] == "application/dicom+json"
    answer = response.json()
    assert len(answer[REFERENCED_SOP_SEQUENCE]["Value"]) == 1
    assert failure_reasons(answer) == [CANNOT_UNDERSTAND]
    quarantined = QuarantinedObject.objects.get()
    assert quarantined.facility == chicago and "cannot decode" in quarantined.reason
    # nothing stored at all: 409
    response = stow(client, multipart(b"garbage"))
    assert response.status_code == 409
    assert failure_reasons(response.json()) == [CANNOT_UNDERSTAND]
    assert QuarantinedObject.objects.count() == 2
    assert DicomAssociation.objects.filter(kind="stow").count() == 2


def test_an_instance_of_another_study_than_the_url_fails(client, admin_chicago, image_store):
    client.force_login(admin_chicago)
    target, stray = ct_series(count=2), ct_series(count=1)
    url = f"/dicomweb/studies/{target.study_uid}"
    response = stow(client, multipart(*target.part10(), *stray.part10()), url=url)
    assert response.status_code == 202
    answer = response.json()
    assert failure_reasons(answer) == [STUDY_UID_MISMATCH]
    failed = answer[FAILED_SOP_SEQUENCE]["Value"][0]
    assert failed["00081155"]["Value"] == stray.sop_uids
    assert answer["00081190"]["Value"][0].endswith(url)
    assert not Study.objects.filter(study_instance_uid=stray.study_uid).exists()
    only_stray = stow(client, multipart(*stray.part10()), url=url)
    assert only_stray.status_code == 409


def test_resending_is_idempotent(client, admin_chicago, image_store):
    client.force_login(admin_chicago)
    series = ct_series(count=2)
    assert stow(client, multipart(*series.part10())).status_code == 200
    assert stow(client, multipart(*series.part10())).status_code == 200
    assert Study.objects.get(study_instance_uid=series.study_uid).number_of_instances == 2


def test_negotiation_and_bad_queries(client, admin_chicago, chicago, image_store):
    series = ct_series(count=1)
    stored_in(chicago, series)
    client.force_login(admin_chicago)
    assert client.get("/dicomweb/studies", HTTP_ACCEPT="application/dicom+xml").status_code == 406
    assert client.get("/dicomweb/studies", {"limit": "many"}).status_code == 400
    assert client.get("/dicomweb/studies", {"StudyDate": "2025-03-01"}).status_code == 400
    ignored = client.get("/dicomweb/studies", {"PatientBirthDate": "19580214"})  # not indexed
    assert ignored.status_code == 200 and "PatientBirthDate" in ignored["Warning"]
    study = f"/dicomweb/studies/{series.study_uid}"
    explicit_only = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    assert client.get(study, HTTP_ACCEPT=explicit_only).status_code == 406
    rendered = f"{study}/series/{series.series_uid}/instances/{series.sop_uids[0]}/rendered"
    assert client.get(rendered, {"window": "40"}).status_code == 400
    assert client.get(rendered, HTTP_ACCEPT="image/jp2").status_code == 406
    assert client.get(rendered.replace("/rendered", "/frames/2")).status_code == 404


def test_jpeg_lossless_renders_and_its_frame_is_served_as_stored_or_decoded(
    client, admin_chicago, chicago, image_store
):
    from pydicom.data import get_testdata_file

    # JPEG Lossless (Process 14 SV1): decoded with pylibjpeg-libjpeg (it was a 415 without it)
    jpeg = open(get_testdata_file("JPGLosslessP14SV1_1s_1f_8b.dcm"), "rb").read()  # noqa: SIM115
    assert dicom_instance_receive(facility=chicago, part10=jpeg).ok
    ds = dcmread(BytesIO(jpeg), stop_before_pixels=True)
    client.force_login(admin_chicago)
    base = (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )
    response = client.get(f"{base}/rendered")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert Image.open(BytesIO(response.content)).size == (ds.Columns, ds.Rows)
    # the compressed frame is still retrievable as stored
    frames = client.get(f"{base}/frames/1", HTTP_ACCEPT='multipart/related; type="image/jpeg"')
    assert frames.status_code == 200 and 'type="image/jpeg"' in frames["Content-Type"]
    assert client.get(f"{base}/frames/1").status_code == 200  # no Accept: decoded, octet-stream
    octet = 'multipart/related; type="application/octet-stream"'
    assert client.get(f"{base}/frames/1", HTTP_ACCEPT=octet).status_code == 200


def test_an_unreadable_stored_file_is_a_server_error(client, admin_chicago, chicago, image_store):
    series = ct_series(count=1)
    stored_in(chicago, series)
    (image_store / Instance.objects.get().storage_path).write_bytes(b"RRE1 damaged")
    client.force_login(admin_chicago)
    instance = (
        f"/dicomweb/studies/{series.study_uid}/series/{series.series_uid}/instances/{series.sop_uids[0]}"
    )
    response = client.get(instance)
    assert response.status_code == 500 and "cannot be read" in response.json()["detail"]


# --- multipart bodies as real clients write them (RFC 2046 §5.1) --------------------------------


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_multipart_parser_reads_what_clients_send_in_any_chunking(chunk):
    from interfaces.dicom.web_multipart import media_type_parse, multipart_parts

    # dicomweb-client opens with CRLF; others put a preamble first; padding may follow a boundary
    body = (
        b"preamble to ignore\r\n--a;b\r\nContent-Type: application/dicom\r\n\r\nFIRST\r\n--a;b\r\n"
        b"\r\nSECOND has no headers and contains --a;bX\r\n--a;b  \r\nContent-Type: application/dicom\r\n\r\n"
        b"\r\n--a;b--\r\nepilogue"
    )
    boundary = media_type_parse('multipart/related; type="application/dicom"; boundary="a;b"').params[
        "boundary"
    ]
    parts = list(multipart_parts((body[i : i + chunk] for i in range(0, len(body), chunk)), boundary))
    assert [p.body for p in parts] == [b"FIRST", b"SECOND has no headers and contains --a;bX", b""]
    assert parts[0].content_type.type == "application/dicom" and parts[1].headers == {}


# --- what the audit rows say (issue 15) ------------------------------------------------------------


def _access_since(pk: int):
    return LogEntry.objects.filter(action=LogEntry.Action.ACCESS, pk__gt=pk).order_by("pk")


def _last_pk() -> int:
    return LogEntry.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def test_a_qido_search_is_audited_with_who_what_and_how_many(
    client, admin_chicago, chicago, lakeview, image_store
):
    smith, smithers, other = (
        ct_series(count=1, patient_name="SMITH^JOHN", patient_id="MRN-1", accession="Q-1"),
        ct_series(count=1, patient_name="SMITHERS^WAYLON", patient_id="MRN-2", accession="Q-2"),
        ct_series(count=1, patient_name="SMITH^ANNA", patient_id="MRN-9", accession="Q-3"),
    )
    stored_in(chicago, smith)
    stored_in(chicago, smithers)
    stored_in(lakeview, other)  # not Chicago's admin's to find
    client.force_login(admin_chicago)
    before = _last_pk()
    response = client.get("/dicomweb/studies", {"PatientName": "SMITH*"}, REMOTE_ADDR="10.9.8.7")
    assert response.status_code == 200 and len(response.json()) == 2
    search, *reads = _access_since(before)
    # the search: who, from where, what was asked, how many came back
    assert (search.actor, search.remote_addr, search.object_pk) == (admin_chicago, "10.9.8.7", "")
    assert search.content_type.model == "study"
    assert search.additional_data["search"] == {
        "via": "QIDO",
        "query": {"PatientName": ["SMITH*"]},
        "returned": 2,
        "total": 2,
    }
    assert "SMITH" not in search.object_repr and "PatientName" in search.object_repr
    # and a read row per study returned, saying it was returned by a search
    studies = {
        s.pk for s in Study.objects.filter(study_instance_uid__in=[smith.study_uid, smithers.study_uid])
    }
    assert {int(r.object_pk) for r in reads} == studies and len(reads) == 2
    assert {r.additional_data["read"]["kind"] for r in reads} == {"search"}
    assert {(r.additional_data["read"]["type"], r.additional_data["read"]["id"]) for r in reads} == {
        ("imaging.study", pk) for pk in studies
    }
    # a series search across studies is audited too
    before = _last_pk()
    client.get("/dicomweb/series", {"Modality": "CT"})
    (series_search,) = [e for e in _access_since(before) if e.object_pk == ""]
    assert series_search.additional_data["search"]["returned"] == 2


def test_each_dicomweb_read_says_what_was_read(client, admin_chicago, chicago, image_store):
    series = ct_series(count=1)
    stored_in(chicago, series)
    study = Study.objects.get(study_instance_uid=series.study_uid)
    client.force_login(admin_chicago)
    base = f"/dicomweb/studies/{series.study_uid}"
    instance = f"{base}/series/{series.series_uid}/instances/{series.sop_uids[0]}"
    for path, accept, kind in (
        (f"{base}/metadata", "application/dicom+json", "dicomweb-metadata"),
        (f"{base}/series", "application/dicom+json", "dicomweb-metadata"),  # one study's series: no search
        (instance, 'multipart/related; type="application/dicom"', "dicomweb-instances"),
        (f"{instance}/rendered", "image/png", "dicomweb-frames"),
    ):
        before = _last_pk()
        response = client.get(path, HTTP_ACCEPT=accept)
        assert response.status_code == 200, (path, response.status_code)
        b"".join(getattr(response, "streaming_content", [response.content]))
        (read,) = _access_since(before)
        assert read.additional_data["read"] == {"kind": kind, "type": "imaging.study", "id": study.pk}, path
        assert (read.actor, read.object_pk) == (admin_chicago, str(study.pk))
