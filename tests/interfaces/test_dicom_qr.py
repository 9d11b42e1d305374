"""ReadRoom as a Query/Retrieve SCP (PS3.4 Annex C) with dcmtk as the hospital's PACS or gateway:
findscu, movescu and getscu against the one SCP port, scoped to the calling AE's facility; a C-MOVE to
an AE not listed for the facility is refused (0xA801); a listed destination (a dcmtk storescp) gets
every instance, byte for byte the dataset that was stored."""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from auditlog.models import LogEntry
from pydicom import dcmread

from interfaces.simulator import exam_random, series_datasets
from tests.net import free_port, port_open, wait_until

# dcmtk's tools, never pynetdicom's console scripts of the same names in the virtualenv's bin/
DCMTK_PATH = "/usr/bin:/bin"


def dcmtk(tool: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TCP_NODELAY": "1"}
    command = [shutil.which(tool, path=DCMTK_PATH) or tool, *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        shutil.which("findscu", path=DCMTK_PATH) is None, reason="dcmtk not installed (apt-get install dcmtk)"
    ),
]


def store_exam(
    scp, tmp_path: Path, calling: str, facility_code: str, *, seed: int, slices: int = 3, **changes
):
    host, port, aet = scp
    exam = dataclasses.replace(exam_random(random.Random(seed), facility_code, stroke_rate=0.0), **changes)
    folder = tmp_path / f"sent-{seed}"
    folder.mkdir()
    paths = []
    for ds in series_datasets(exam, slices=slices, size=64):
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    result = dcmtk("storescu", "-aet", calling, "-aec", aet, host, str(port), *map(str, paths))
    assert result.returncode == 0, result.stderr
    return exam, paths


def find(scp, calling: str, out: Path, *keys: str, model: str = "-S") -> list:
    host, port, aet = scp
    out.mkdir(exist_ok=True)
    args = [a for k in keys for a in ("-k", k)]
    result = dcmtk(
        "findscu", "-aet", calling, "-aec", aet, model, "-X", "-od", str(out), *args, host, str(port)
    )
    assert result.returncode == 0, result.stderr
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


@pytest.fixture
def two_facilities(dicom_scp, tmp_path, lakeview_interfaces):
    # given: a Chicago study of Ms Smith, another Chicago study, and a Lakeview study of a namesake
    smith, _ = store_exam(
        dicom_scp, tmp_path, "LAKESHORE_CT1", "CHI-L1", seed=1, family_name="SMITH", given_name="ANNA",
        mrn="CHI-100", birth_date="19600102",
    )  # fmt: skip
    other, _ = store_exam(
        dicom_scp, tmp_path, "LAKESHORE_CT1", "CHI-L1", seed=2, family_name="JONES", mrn="CHI-200"
    )
    namesake, _ = store_exam(
        dicom_scp, tmp_path, "LAKEVIEW_MR", "WI-LAKEVIEW", seed=3, family_name="SMITH", given_name="ANNA",
        mrn="CHI-100",
    )  # fmt: skip
    return smith, other, namesake


def test_find_sees_only_the_calling_aes_facility(dicom_scp, tmp_path, two_facilities):
    smith, other, namesake = two_facilities
    # when: Chicago's AE asks for every study (universal matching)
    found = find(dicom_scp, "LAKESHORE_CT1", tmp_path / "all", "QueryRetrieveLevel=STUDY", "StudyInstanceUID")
    # then: Chicago's two, never Lakeview's
    assert sorted(str(r.StudyInstanceUID) for r in found) == sorted([smith.study_uid, other.study_uid])
    # and Lakeview's AE, with the same query, sees only its own
    theirs = find(dicom_scp, "LAKEVIEW_MR", tmp_path / "lv", "QueryRetrieveLevel=STUDY", "StudyInstanceUID")
    assert [str(r.StudyInstanceUID) for r in theirs] == [namesake.study_uid]
    # and every query is in the audit log as a search from that AE
    searches = LogEntry.objects.filter(object_repr__startswith="DICOM C-FIND search")
    assert searches.count() == 2
    assert searches.first().additional_data["search"]["query"]["calling AE"] in (
        ["LAKESHORE_CT1"],
        ["LAKEVIEW_MR"],
    )


def test_find_matching_and_return_keys(dicom_scp, tmp_path, two_facilities):
    smith, other, _ = two_facilities
    # wildcard on the name (case-insensitive), return keys asked for and nothing else
    found = find(
        dicom_scp, "LAKESHORE_CT1", tmp_path / "wild",
        "QueryRetrieveLevel=STUDY", "PatientName=smi*", "PatientID", "StudyInstanceUID",
        "NumberOfStudyRelatedInstances", "ModalitiesInStudy",
    )  # fmt: skip
    assert len(found) == 1
    response = found[0]
    assert str(response.StudyInstanceUID) == smith.study_uid and response.PatientID == "CHI-100"
    assert response.NumberOfStudyRelatedInstances == 3
    assert "AccessionNumber" not in response and "StudyDescription" not in response  # not asked
    # single value matching: exact, no partial match
    assert (
        find(dicom_scp, "LAKESHORE_CT1", tmp_path / "exact", "QueryRetrieveLevel=STUDY", "PatientID=CHI-10")
        == []
    )
    # range matching on the birth date, patient root, patient level
    in_range = find(
        dicom_scp, "LAKESHORE_CT1", tmp_path / "range", "QueryRetrieveLevel=PATIENT",
        "PatientBirthDate=19591201-19600131", "PatientID", "PatientName", model="-P",
    )  # fmt: skip
    assert [(r.PatientID, str(r.PatientName)) for r in in_range] == [("CHI-100", "SMITH^ANNA")]
    # a UID list, and the series level below it (Study Root)
    series = find(
        dicom_scp, "LAKESHORE_CT1", tmp_path / "series", "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={smith.study_uid}\\{other.study_uid}", "SeriesInstanceUID", "Modality",
        "NumberOfSeriesRelatedInstances",
    )  # fmt: skip
    assert len(series) == 2 and all(r.NumberOfSeriesRelatedInstances == 3 for r in series)


def test_find_at_patient_level_is_refused_in_study_root(dicom_scp, tmp_path, two_facilities):
    host, port, aet = dicom_scp
    result = dcmtk(
        "findscu", "-aet", "LAKESHORE_CT1", "-aec", aet, "-S", "-v",
        "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID", host, str(port),
    )  # fmt: skip
    assert "Received Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in result.stderr


@pytest.fixture
def storescp(tmp_path):
    """A second dcmtk storescp, the facility's PACS as a move destination, on a free port."""
    port, folder = free_port(), tmp_path / "received"
    folder.mkdir()
    process = subprocess.Popen(
        [
            shutil.which("storescp", path=DCMTK_PATH),
            "-aet",
            "LAKESHORE_PACS",
            "-od",
            str(folder),
            "--fork",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: port_open(port), timeout=10, message="storescp did not start")
    yield port, folder
    process.terminate()
    process.wait(10)


def test_move_to_an_unknown_destination_is_refused(dicom_scp, tmp_path, two_facilities, chicago, storescp):
    smith, _, _ = two_facilities
    port, folder = storescp
    # Lakeview lists the PACS as its destination; Chicago lists nothing: the AE is unknown to Chicago
    from facilities.models import Facility

    Facility.objects.filter(code="WI-LAKEVIEW").update(
        dicom_move_destinations=[{"ae_title": "LAKESHORE_PACS", "host": "127.0.0.1", "port": port}]
    )
    host, scp_port, aet = dicom_scp
    result = dcmtk(
        "movescu", "-aet", "LAKESHORE_CT1", "-aec", aet, "-aem", "LAKESHORE_PACS", "-S", "-v",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={smith.study_uid}", host, str(scp_port),
    )  # fmt: skip
    assert "Received Final Move Response (Refused: MoveDestinationUnknown)" in result.stderr
    assert list(folder.iterdir()) == []


def test_move_to_a_listed_destination_delivers_every_instance(
    dicom_scp, tmp_path, two_facilities, chicago, storescp
):
    smith, _, _ = two_facilities
    port, folder = storescp
    chicago.dicom_move_destinations = [{"ae_title": "LAKESHORE_PACS", "host": "127.0.0.1", "port": port}]
    chicago.save(update_fields=["dicom_move_destinations"])
    host, scp_port, aet = dicom_scp
    result = dcmtk(
        "movescu", "-aet", "LAKESHORE_CT1", "-aec", aet, "-aem", "LAKESHORE_PACS", "-S", "-v",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={smith.study_uid}", host, str(scp_port),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    wait_until(lambda: len(list(folder.iterdir())) == 3, timeout=10, message="not every instance arrived")
    received = [dcmread(p) for p in folder.iterdir()]
    assert {str(ds.StudyInstanceUID) for ds in received} == {smith.study_uid}
    assert sorted(int(ds.InstanceNumber) for ds in received) == [1, 2, 3]
    assert all(ds.PatientID == "CHI-100" and len(ds.PixelData) > 0 for ds in received)
    assert LogEntry.objects.filter(object_repr__startswith="DICOM C-MOVE search").exists()


def test_lakeview_cannot_move_chicagos_study(dicom_scp, tmp_path, two_facilities, storescp):
    smith, _, _ = two_facilities
    port, folder = storescp
    from facilities.models import Facility

    Facility.objects.filter(code="WI-LAKEVIEW").update(
        dicom_move_destinations=[{"ae_title": "LAKESHORE_PACS", "host": "127.0.0.1", "port": port}]
    )
    host, scp_port, aet = dicom_scp
    dcmtk(
        "movescu", "-aet", "LAKEVIEW_MR", "-aec", aet, "-aem", "LAKESHORE_PACS", "-S",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={smith.study_uid}", host, str(scp_port),
    )  # fmt: skip
    assert list(folder.iterdir()) == []  # nothing matched in Lakeview's scope


def test_get_returns_every_instance_over_the_association(dicom_scp, tmp_path, two_facilities):
    smith, _, namesake = two_facilities
    host, port, aet = dicom_scp
    out = tmp_path / "got"
    out.mkdir()
    result = dcmtk(
        "getscu", "-aet", "LAKESHORE_CT1", "-aec", aet, "-S", "-od", str(out),
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={smith.study_uid}", host, str(port),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    got = [dcmread(p) for p in out.iterdir()]
    assert len(got) == 3 and {str(ds.StudyInstanceUID) for ds in got} == {smith.study_uid}
    # another facility's study is out of scope, even asked for by UID
    other = tmp_path / "other"
    other.mkdir()
    dcmtk(
        "getscu", "-aet", "LAKESHORE_CT1", "-aec", aet, "-S", "-od", str(other),
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={namesake.study_uid}", host, str(port),
    )  # fmt: skip
    assert list(other.iterdir()) == []
