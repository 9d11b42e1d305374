"""What ReadRoom publishes to the FHIRcast hub (FHIRcast STU3, docs/fhircast.md), each to the session's
topic only:

* ``ImagingStudy-open`` when a reader opens a study's images (``imaging.signals.study_opened``);
* ``ImagingStudy-close`` when the reader's page on it goes away unsigned (``imaging.signals.study_closed``:
  a beacon from the report editor or the viewer on page hide);
* ``DiagnosticReport-open`` when the claimant's report editor shows the report
  (``reports.signals.report_screen``, action ``opened``): context ``report``, ``patient``, ``study``;
  the hub gives the anchor context a ``context.versionId``;
* on signing from the editor (action ``signed``): ``DiagnosticReport-update`` — the report's new
  status in the anchor context, an empty ``updates`` Bundle (only the anchor's attributes changed;
  STU3 allows that), ``context.versionId`` new and ``context.priorVersionId`` the one before — then
  ``DiagnosticReport-close`` and ``ImagingStudy-close`` (the reader is done with the study)."""

from __future__ import annotations

import uuid

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.signals import user_logged_out
from django.core.cache import cache
from django.db import transaction
from django.dispatch import receiver

from imaging.signals import study_closed, study_opened
from interfaces.fhir.resources import (
    IMAGING_REPORT,
    LOINC,
    imaging_study_reference,
    imaging_study_resource,
    patient_reference,
    patient_resource,
)
from interfaces.fhircast.hub import TOPIC_SECONDS, event_build, session_topic, topic_group, topic_of
from reports.signals import report_screen
from worklist.broadcast import sockets_close

# ReadRoom's report status → DiagnosticReport.status (a draft being written is "partial": FHIR R4B
# "this is a partial (e.g. initial, interim or preliminary) report", not yet signed)
REPORT_STATUS = {"draft": "partial", "preliminary": "preliminary", "final": "final"}


def _publish(topic: str, event: dict) -> None:
    def send() -> None:
        async_to_sync(get_channel_layer().group_send)(
            topic_group(topic), {"type": "fhircast.event", "event": event}
        )

    transaction.on_commit(send, robust=True)  # a hub that cannot be told must not fail the page


@receiver(user_logged_out, dispatch_uid="fhircast-session-ended")
def session_channels_close(sender, request, user, **kwargs) -> None:
    """The session's topic ends with it: its subscribers' websocket channels close (4401), as the
    session's worklist sockets do (``worklist.broadcast.on_user_logged_out``)."""
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        sockets_close([topic_group(topic_of(session_key))])


def _study_context(study) -> list[tuple[str, dict]]:
    context = [("study", imaging_study_resource(study))]
    if study.patient_id:
        context.insert(0, ("patient", patient_resource(study.patient)))
    return context


@receiver(study_opened, dispatch_uid="fhircast-imaging-study-open")
def imaging_study_open_publish(sender, *, study, user, session_key: str, **kwargs) -> None:
    if not session_key:
        return
    topic = session_topic(session_key, user.pk)
    _publish(topic, event_build(topic, "ImagingStudy-open", _study_context(study)))


@receiver(study_closed, dispatch_uid="fhircast-imaging-study-close")
def imaging_study_close_publish(sender, *, study, user, session_key: str, **kwargs) -> None:
    if not session_key:
        return
    topic = session_topic(session_key, user.pk)
    _publish(topic, event_build(topic, "ImagingStudy-close", _study_context(study)))


def report_resource(report, study, *, anchor_only: bool = False) -> dict:
    """The DiagnosticReport of the anchor context: id (the /fhir/r4/ id once signed), status and code
    (both required by FHIR R4) and — for -open — what ties it to the patient and the ImagingStudy.
    -update and -close carry only those three (the FHIRcast DiagnosticReport-update profile: id,
    status, and the attributes that changed)."""
    code, display = IMAGING_REPORT
    resource = {
        "resourceType": "DiagnosticReport",
        "id": str(report.pk),
        "status": REPORT_STATUS[report.status],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
    }
    if anchor_only:
        return resource
    return {
        **resource,
        "subject": patient_reference(study.patient) if study.patient_id else None,
        "imagingStudy": [imaging_study_reference(study.pk)],
    }


def _version_key(topic: str, report_id: int) -> str:
    return f"fhircast:version:{topic}:{report_id}"


def _version_next(topic: str, report_id: int) -> tuple[str, str | None]:
    """(versionId, priorVersionId) of the report's anchor context on this topic (the hub keeps it)."""
    prior = cache.get(_version_key(topic, report_id))
    version = str(uuid.uuid4())
    cache.set(_version_key(topic, report_id), version, TOPIC_SECONDS)
    return version, prior


@receiver(report_screen, dispatch_uid="fhircast-diagnostic-report")
def diagnostic_report_publish(
    sender, *, report, study, user, session_key: str, action: str, **kwargs
) -> None:
    if not session_key:
        return
    topic = session_topic(session_key, user.pk)
    patient = [("patient", patient_resource(study.patient))] if study.patient_id else []
    if action == "opened":
        event = event_build(
            topic,
            "DiagnosticReport-open",
            [("report", report_resource(report, study)), *patient, ("study", imaging_study_resource(study))],
        )
        event["event"]["context.versionId"] = _version_next(topic, report.pk)[0]
        _publish(topic, event)
        return
    if action != "signed":
        return
    version, prior = _version_next(topic, report.pk)
    updates = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "transaction", "entry": []}
    update = event_build(
        topic,
        "DiagnosticReport-update",
        [("report", report_resource(report, study, anchor_only=True)), *patient, ("updates", updates)],
    )
    update["event"]["context.versionId"] = version
    if prior:
        update["event"]["context.priorVersionId"] = prior
    _publish(topic, update)
    closed = [("report", report_resource(report, study, anchor_only=True)), *patient]
    _publish(topic, event_build(topic, "DiagnosticReport-close", closed))
    study_closed = [*patient, ("study", imaging_study_resource(study))]
    _publish(topic, event_build(topic, "ImagingStudy-close", study_closed))
    cache.delete(_version_key(topic, report.pk))
