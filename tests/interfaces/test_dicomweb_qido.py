"""QIDO-RS conformance (PS3.18 §10.6): every required matching key at the study, series and
instance levels, ``includefield``, limit/offset, 400 for what cannot be a query, and facility
scoping — the same query answered by ReadRoom and by Orthanc's DICOMweb plugin (Debian's
orthanc-dicomweb) over the same files, where the standard leaves them no room to differ."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest
import requests

from accounts.tokens import api_token_issue
from bench.common import ORTHANC_DICOMWEB_PLUGIN, orthanc_running, orthanc_store
from interfaces.dicom.receive import dicom_instance_receive
from tests.dicom_data import ct_series, part10_bytes

pytestmark = pytest.mark.django_db(transaction=True)
ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
HAS_ORTHANC = Path(ORTHANC).exists() and ORTHANC_DICOMWEB_PLUGIN.exists()

ACCESSION, STUDY_UID, SERIES_UID, SOP_UID, MODALITY = (
    "00080050",
    "0020000D",
    "0020000E",
    "00080018",
    "00080060",
)


def _exam(accession, *, name, mrn, date, time, referring, study_id, modality="CT", count=2, number=2):
    series = ct_series(
        count=count,
        accession=accession,
        patient_id=mrn,
        patient_name=name,
        study_date=date,
        study_time=time,
        series_number=number,
    )
    for ds in series.datasets:
        ds.ReferringPhysicianName = referring
        ds.StudyID = study_id
        ds.Modality = modality
        ds.InstitutionName = "Lakeshore Medical Center"
        ds.ProtocolName = f"PROTOCOL {accession}"
    return series


@pytest.fixture
def exams(chicago, lakeview, image_store):
    """Three Chicago studies and one of Lakeview, as their modalities sent them."""
    chosen = {
        "A-1": _exam("A-1", name="SMITH^JOHN", mrn="MRN-1", date="20250301", time="031500",
                     referring="HOUSE^GREGORY", study_id="S100"),
        "A-2": _exam("A-2", name="SMITHERS^WAYLON", mrn="MRN-2", date="20250302", time="141000",
                     referring="WILSON^JAMES", study_id="S200", modality="MR", count=3, number=5),
        "A-3": _exam("A-3", name="JONES^MARY^ANN", mrn="MRN-3", date="20250410", time="235930",
                     referring="HOUSE^LISA", study_id="S300"),
    }  # fmt: skip
    for series in chosen.values():
        for part10 in series.part10():
            assert dicom_instance_receive(facility=chicago, part10=part10).ok
    other = _exam("LV-1", name="SMITH^JOHN", mrn="MRN-1", date="20250301", time="031500",
                  referring="HOUSE^GREGORY", study_id="S100")  # fmt: skip
    for part10 in other.part10():
        assert dicom_instance_receive(facility=lakeview, part10=part10).ok
    chosen["LV-1"] = other
    return chosen


@pytest.fixture
def readroom(live_server, admin_chicago):
    session = requests.Session()
    session.headers["Authorization"] = f"Token {api_token_issue(user=admin_chicago).key}"
    session.headers["Accept"] = "application/dicom+json"
    return session, f"{live_server.url}/dicomweb"


@pytest.fixture
def orthanc(tmp_path, exams):
    if not HAS_ORTHANC:
        pytest.skip("orthanc / orthanc-dicomweb not installed")
    with orthanc_running(tmp_path, dicomweb=True) as peer:
        for accession in ("A-1", "A-2", "A-3"):  # Chicago's: what admin_chicago sees
            for ds in exams[accession].datasets:
                orthanc_store(peer, part10_bytes(ds))
        yield peer


def _get(session, url, params):
    response = session.get(url, params=params, timeout=30)
    assert response.status_code == 200, (url, params, response.status_code, response.text[:300])
    return response.json()


def _orthanc_get(url, params):
    """Orthanc's HTTP server does not percent-decode query values (``%5E`` stays ``%5E``), so the
    values go raw, as OHIF's and most clients' URLs carry ``*``, ``^`` and ``\\`` anyway."""
    query = "&".join(f"{name}={value}" for name, value in params.items())
    request = urllib.request.Request(f"{url}?{query}", headers={"Accept": "application/dicom+json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 — our own Orthanc on loopback
        return json.loads(response.read())


def _values(results, tag) -> list:
    return sorted(r[tag]["Value"][0] for r in results if r.get(tag, {}).get("Value"))


# (level path, query) → the accession numbers found. Each is asked of ReadRoom and of Orthanc.
STUDY_QUERIES = [
    ({"PatientID": "MRN-1"}, ["A-1"]),
    ({"PatientID": "MRN-?"}, ["A-1", "A-2", "A-3"]),
    ({"PatientName": "SMITH^JOHN"}, ["A-1"]),
    ({"PatientName": "smith*"}, ["A-1", "A-2"]),
    ({"PatientName": "SMITH"}, []),  # single value matching is the whole name
    ({"PatientName": "*^MARY*"}, ["A-3"]),
    ({"StudyDate": "20250301"}, ["A-1"]),
    ({"StudyDate": "20250301-20250302"}, ["A-1", "A-2"]),
    ({"StudyDate": "20250302-"}, ["A-2", "A-3"]),
    ({"StudyDate": "-20250301"}, ["A-1"]),
    ({"StudyTime": "140000-150000"}, ["A-2"]),
    ({"StudyTime": "-120000"}, ["A-1"]),
    ({"StudyDate": "20250301-20250331", "StudyTime": "030000-040000"}, ["A-1"]),
    ({"AccessionNumber": "A-2"}, ["A-2"]),
    ({"AccessionNumber": "A-*"}, ["A-1", "A-2", "A-3"]),
    ({"ModalitiesInStudy": "MR"}, ["A-2"]),
    ({"ModalitiesInStudy": "CT,MR"}, ["A-1", "A-2", "A-3"]),  # a list (PS3.18 §8.3.4.1)
    ({"ReferringPhysicianName": "HOUSE^*"}, ["A-1", "A-3"]),
    ({"ReferringPhysicianName": "WILSON^JAMES"}, ["A-2"]),
    ({"StudyID": "S300"}, ["A-3"]),
    ({"StudyID": "S?00"}, ["A-1", "A-2", "A-3"]),
    ({"00100020": "MRN-2"}, ["A-2"]),  # a key named by its tag
    ({"PatientID": "*"}, ["A-1", "A-2", "A-3"]),  # universal matching
]


@pytest.mark.skipif(not HAS_ORTHANC, reason="orthanc / orthanc-dicomweb not installed")
def test_study_matching_keys_find_what_orthanc_finds(readroom, orthanc, exams):
    session, root = readroom
    for query, expected in STUDY_QUERIES:
        ours = _values(_get(session, f"{root}/studies", query), ACCESSION)
        theirs = _values(_orthanc_get(f"{orthanc['dicomweb']}/studies", query), ACCESSION)
        assert ours == expected, (query, ours)
        assert theirs == expected, ("orthanc", query, theirs)
    # a UID list, and the series/instance levels' keys
    uids = f"{exams['A-1'].study_uid},{exams['A-3'].study_uid}"
    for get, base in ((lambda url, q: _get(session, url, q), root), (_orthanc_get, orthanc["dicomweb"])):
        assert _values(get(f"{base}/studies", {"StudyInstanceUID": uids}), ACCESSION) == ["A-1", "A-3"]
        assert _values(get(f"{base}/series", {"Modality": "MR"}), SERIES_UID) == [exams["A-2"].series_uid]
        found = get(f"{base}/series", {"SeriesInstanceUID": exams["A-2"].series_uid})
        assert _values(found, MODALITY) == ["MR"]
        sop = exams["A-2"].sop_uids[1]
        assert _values(get(f"{base}/instances", {"SOPInstanceUID": sop}), SOP_UID) == [sop]
        found = get(f"{base}/studies/{exams['A-2'].study_uid}/instances", {"InstanceNumber": "3"})
        assert _values(found, SOP_UID) == [exams["A-2"].sop_uids[2]]


def test_fuzzy_matching_of_person_names(readroom, exams):
    session, root = readroom
    fuzzy = {"fuzzymatching": "true"}

    def found(**query):
        return _values(_get(session, f"{root}/studies", query), ACCESSION)

    # word by word, any order and case, each word the beginning of a name component
    assert found(PatientName="john smith", **fuzzy) == ["A-1"]
    assert found(PatientName="smi", **fuzzy) == ["A-1", "A-2"]
    assert found(PatientName="MAR jon", **fuzzy) == ["A-3"]
    assert found(PatientName="mith", **fuzzy) == []  # not the middle of a word
    assert found(ReferringPhysicianName="greg", **fuzzy) == ["A-1"]
    # fuzzymatching=false (the default) is literal matching
    assert found(PatientName="john smith", fuzzymatching="false") == []
    assert found(PatientName="smi") == []


def test_includefield_named_tags_and_all(readroom, exams):
    session, root = readroom
    uid = exams["A-2"].study_uid
    (study,) = _get(session, f"{root}/studies", {"StudyInstanceUID": uid})
    # the required return keys, ReferringPhysicianName and StudyID among them, without asking
    assert study["00080090"]["Value"] == [{"Alphabetic": "WILSON^JAMES"}]
    assert study["00200010"]["Value"] == ["S200"]
    assert study["00080030"]["Value"] == ["141000"]
    assert "00080080" not in study  # Institution Name only when asked
    (study,) = _get(session, f"{root}/studies", {"StudyInstanceUID": uid, "includefield": "InstitutionName"})
    assert study["00080080"]["Value"] == ["Lakeshore Medical Center"]
    (study,) = _get(session, f"{root}/studies", {"StudyInstanceUID": uid, "includefield": "all"})
    assert study["00080080"]["Value"] == ["Lakeshore Medical Center"]
    (series,) = _get(session, f"{root}/studies/{uid}/series", {"includefield": "all"})
    assert series["00181030"]["Value"] == ["PROTOCOL A-2"]
    (series,) = _get(session, f"{root}/studies/{uid}/series", {"includefield": "00181030"})
    assert series["00181030"]["Value"] == ["PROTOCOL A-2"]
    instances = _get(session, f"{root}/studies/{uid}/instances", {"includefield": "all", "limit": "1"})
    assert instances[0]["00280010"]["Value"] == [128]  # Rows, from the header
    assert "7FE00010" not in instances[0]


def test_limit_and_offset_page_through_the_results(readroom, exams):
    session, root = readroom
    everything = _values(_get(session, f"{root}/studies", {}), ACCESSION)
    assert everything == ["A-1", "A-2", "A-3"]  # Lakeview's study is not Chicago's admin's
    pages = [_get(session, f"{root}/studies", {"limit": "1", "offset": str(n)}) for n in range(4)]
    assert sorted(_values(page, ACCESSION)[0] for page in pages[:3]) == everything
    assert pages[3] == []
    assert len(_get(session, f"{root}/instances", {"limit": "2", "offset": "5"})) == 2


@pytest.mark.parametrize(
    "query, says",
    [
        ({"PatientNmae": "SMITH*"}, "PatientNmae"),  # a typo: not an attribute
        ({"NotAKeyword.PatientID": "x"}, "NotAKeyword"),
        ({"StudyInstanceUID": "1.2.*"}, "no wildcards"),
        ({"SeriesInstanceUID": "1.2.abc"}, "digits and dots"),
        ({"StudyDate": "2025-03-01"}, "YYYYMMDD"),
        ({"StudyDate": "20251301"}, "YYYYMMDD"),
        ({"StudyTime": "25"}, "not a time of day"),
        ({"StudyTime": "1pm"}, "HHMMSS"),
        ({"fuzzymatching": "maybe"}, "true or false"),
        ({"includefield": "NoSuchTag"}, "NoSuchTag"),
        ({"limit": "0"}, "at least 1"),
        ({"offset": "-1"}, "at least 0"),
        ({"SeriesNumber": "two"}, "integer"),
    ],
)
def test_what_cannot_be_a_query_is_a_400_that_says_why(client, admin_chicago, exams, query, says):
    client.force_login(admin_chicago)
    path = (
        "/dicomweb/series" if "SeriesNumber" in query or "SeriesInstanceUID" in query else "/dicomweb/studies"
    )
    response = client.get(path, query)
    assert response.status_code == 400, (query, response.status_code)
    assert says in response.json()["detail"]


def test_a_real_attribute_not_indexed_is_ignored_with_a_warning(client, admin_chicago, exams):
    client.force_login(admin_chicago)
    response = client.get("/dicomweb/studies", {"PatientBirthDate": "19580214"})
    assert response.status_code == 200 and len(response.json()) == 3
    assert "PatientBirthDate" in response["Warning"]
    # the required keys are matched, not skipped with a warning
    response = client.get("/dicomweb/studies", {"ReferringPhysicianName": "HOUSE*", "StudyID": "S1*"})
    assert "Warning" not in response and _values(response.json(), ACCESSION) == ["A-1"]


def test_every_query_is_scoped_to_the_callers_facilities(
    client, verified_client, admin_lakeview, dr_neuro_il, mso_mary, exams
):
    chicago_uid = exams["A-1"].study_uid
    # Lakeview's admin: the same patient ID, name and date find only Lakeview's study, at every level
    client.force_login(admin_lakeview)
    same = {"PatientID": "MRN-1", "PatientName": "SMITH^JOHN", "StudyDate": "20250301"}
    assert _values(client.get("/dicomweb/studies", same).json(), ACCESSION) == ["LV-1"]
    assert client.get("/dicomweb/studies", {"StudyInstanceUID": chicago_uid}).json() == []
    assert client.get("/dicomweb/series", {"StudyInstanceUID": chicago_uid}).json() == []
    assert client.get("/dicomweb/instances", {"SOPInstanceUID": exams["A-1"].sop_uids[0]}).json() == []
    assert client.get(f"/dicomweb/studies/{chicago_uid}/series").status_code == 404
    assert client.get(f"/dicomweb/studies/{chicago_uid}/instances").status_code == 404
    # a reader with no privilege at either facility sees nothing; credentialing staff are refused
    reader = verified_client(dr_neuro_il)
    assert reader.get("/dicomweb/studies", {"PatientID": "MRN-1"}).json() == []
    assert reader.get("/dicomweb/instances").json() == []
    client.force_login(mso_mary)
    assert client.get("/dicomweb/studies").status_code == 403
