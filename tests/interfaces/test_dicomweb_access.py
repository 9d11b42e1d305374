"""A viewer's DICOMweb requests, as OHIF makes them (a study's metadata, then every frame), cost the
study decision once per few seconds (``web_access._grant_held``), not once per frame: every request
is still authenticated, role-checked and audited; a withdrawn privilege ends the reader's access
within ``READROOM_DICOMWEB_GRANT_SECONDS``, and a refusal is never held."""

from __future__ import annotations

import time

import pytest
import time_machine
from auditlog.models import LogEntry
from django.core.cache import cache

from credentialing.models import FacilityPrivilege, PrivilegeStatus
from imaging.models import Instance
from interfaces.dicom import web_access
from tests.imaging.test_ohif import read_ct, reader, reader_client  # noqa: F401
from tests.reports.conftest import ct_head_template  # noqa: F401
from tests.worklist.conftest import neuro_reader  # noqa: F401

OHIF_FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()  # audit windows are cached per user and study, grants per process
    web_access._GRANTS.clear()
    yield
    cache.clear()
    web_access._GRANTS.clear()


def frame_urls(study) -> list[str]:
    return [
        f"/dicomweb/studies/{study.study_instance_uid}/series/{i.series.series_instance_uid}"
        f"/instances/{i.sop_instance_uid}/frames/1"
        for i in Instance.objects.filter(series__study=study).select_related("series")
    ]


def test_frames_reuse_the_study_decision_and_a_withdrawn_privilege_ends_it(
    image_store,  # first: the CT's files go into it
    read_ct,  # noqa: F811
    reader,  # noqa: F811
    settings,
    django_assert_max_num_queries,
):
    # given the reader of a claimed CT, signed in as OHIF's browser is
    settings.READROOM_DICOMWEB_GRANT_SECONDS = 10
    browser = reader_client(reader)
    metadata = f"/dicomweb/studies/{read_ct.study_instance_uid}/metadata"
    # when the viewer opens the study (its metadata: the whole decision) and fetches every frame
    assert browser.get(metadata).status_code == 200
    for url in frame_urls(read_ct):
        # then a frame costs the sign-in's queries (session, user, second factor, roles) and the
        # instance's, not the reader's licences, privileges, cover and shifts again
        with django_assert_max_num_queries(6):
            assert browser.get(url, HTTP_ACCEPT=OHIF_FRAME_ACCEPT).status_code == 200
    # and the reads are audited as before
    assert LogEntry.objects.filter(action=LogEntry.Action.ACCESS, object_pk=str(read_ct.pk)).exists()

    # when the reader's privilege at the facility is withdrawn
    FacilityPrivilege.objects.filter(profile__user=reader).update(status=PrivilegeStatus.LAPSED)
    # then once the held decision is over (READROOM_DICOMWEB_GRANT_SECONDS) every URL answers 404
    with time_machine.travel(time.time() + 11, tick=False):
        assert browser.get(metadata).status_code == 404
        for url in frame_urls(read_ct):
            assert browser.get(url, HTTP_ACCEPT=OHIF_FRAME_ACCEPT).status_code == 404
        # and the refusal was not held: the privilege back, the study is there at once
        FacilityPrivilege.objects.filter(profile__user=reader).update(status=PrivilegeStatus.APPROVED)
        assert browser.get(metadata).status_code == 200


def test_with_no_grant_window_every_request_decides_afresh(
    image_store,  # first: the CT's files go into it
    read_ct,  # noqa: F811
    reader,  # noqa: F811
    settings,
):
    # given grants switched off (READROOM_DICOMWEB_GRANT_SECONDS=0)
    settings.READROOM_DICOMWEB_GRANT_SECONDS = 0
    browser = reader_client(reader)
    url = frame_urls(read_ct)[0]
    assert browser.get(url, HTTP_ACCEPT=OHIF_FRAME_ACCEPT).status_code == 200
    # when the privilege is withdrawn, then the very next frame is refused
    FacilityPrivilege.objects.filter(profile__user=reader).update(status=PrivilegeStatus.LAPSED)
    assert browser.get(url, HTTP_ACCEPT=OHIF_FRAME_ACCEPT).status_code == 404
