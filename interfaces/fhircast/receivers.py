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
  ``DiagnosticReport-close`` and ``ImagingStudy-close`` (the reader is done with the study);
* on the screen lock (``accounts.signals.screen_locked``): the close events of what was open, then
  ``UserHibernate`` (reason ``system-timeout``); on the unlock the same context is opened again;
* when the session ends (logout, or idle expiry found by the channel's own session check):
  the close events of what was open, then ``UserLogout``, then the channel closes (4401) —
  ``session_end_events``, sent by each channel itself (``FhircastConsumer``)."""

from __future__ import annotations

import uuid

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.signals import user_logged_out
from django.core.cache import cache
from django.db import transaction
from django.dispatch import receiver

from accounts.signals import screen_locked, screen_unlocked
from imaging.signals import study_closed, study_opened
from interfaces.fhir.resources import (
    IMAGING_REPORT,
    LOINC,
    imaging_study_reference,
    imaging_study_resource,
    patient_reference,
    patient_resource,
)
from interfaces.fhircast.hub import (
    TOPIC_SECONDS,
    OpenContext,
    context_of,
    context_set,
    event_build,
    reason_parameters,
    session_topic,
    topic_end,
    topic_group,
    topic_of,
)
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
        topic = topic_of(session_key)
        topic_end(topic)  # nobody subscribes to it any more; its channels end (each sends UserLogout)
        sockets_close([topic_group(topic)])


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
    current = context_of(topic)
    keep_report = current.report_id if current and current.study_id == study.pk else None
    context_set(topic, OpenContext(study.pk, keep_report))  # the viewer beside its own editor


@receiver(study_closed, dispatch_uid="fhircast-imaging-study-close")
def imaging_study_close_publish(sender, *, study, user, session_key: str, **kwargs) -> None:
    if not session_key:
        return
    topic = session_topic(session_key, user.pk)
    _publish(topic, event_build(topic, "ImagingStudy-close", _study_context(study)))
    current = context_of(topic)
    if current and current.study_id == study.pk:
        context_set(topic, None)


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
        context_set(topic, OpenContext(study.pk, report.pk))
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
    context_set(topic, None)


# --- the session suspended or ended: close what was open ----------------------------------------


def _context_objects(context: OpenContext | None):
    """(study, report or None) of an open context, as they are now (None, None if gone)."""
    from imaging.models import Study
    from reports.models import Report

    if context is None:
        return None, None
    study = Study.objects.select_related("patient").filter(pk=context.study_id).first()
    report = Report.objects.filter(pk=context.report_id).first() if context.report_id else None
    return study, report


def close_events(topic: str, context: OpenContext | None) -> list[dict]:
    """DiagnosticReport-close (when the editor was open) and ImagingStudy-close for ``context``."""
    study, report = _context_objects(context)
    if study is None:
        return []
    events = []
    if report is not None:
        patient = [("patient", patient_resource(study.patient))] if study.patient_id else []
        closed = [("report", report_resource(report, study, anchor_only=True)), *patient]
        events.append(event_build(topic, "DiagnosticReport-close", closed))
    events.append(event_build(topic, "ImagingStudy-close", _study_context(study)))
    return events


def session_end_events(topic: str, reason: str) -> list[dict]:
    """What a channel sends before it closes because its session ended: the close events of what
    was open, then UserLogout with the reason (``user-initiated``: signed out; ``system-timeout``:
    idle expiry)."""
    logout = event_build(topic, "UserLogout", [("parameters", reason_parameters(reason))])
    return [*close_events(topic, context_of(topic)), logout]


@receiver(screen_locked, dispatch_uid="fhircast-screen-locked")
def screen_lock_publish(sender, *, user, session_key: str | None, **kwargs) -> None:
    """The lock hides the study on ReadRoom's screens; a side-car following the session must hide
    it too: the close events of what was open, then UserHibernate. The context is held for the
    unlock (the reader comes back to the same editor)."""
    if not session_key:
        return
    topic = session_topic(session_key, user.pk)
    context = context_of(topic)
    for event in close_events(topic, context):
        _publish(topic, event)
    _publish(
        topic, event_build(topic, "UserHibernate", [("parameters", reason_parameters("system-timeout"))])
    )
    context_set(topic, context, held=True)
    context_set(topic, None)


@receiver(screen_unlocked, dispatch_uid="fhircast-screen-unlocked")
def screen_unlock_publish(sender, *, user, session_key: str | None, **kwargs) -> None:
    """Unlocked: the held context is opened again (ImagingStudy-open, and DiagnosticReport-open
    with a new versionId while the report is still not final) — unless the reader opened something
    else meanwhile (nothing can be opened behind the lock, but a lock may outlive its page)."""
    if not session_key:
        return
    topic = session_topic(session_key, user.pk)
    held = context_of(topic, held=True)
    context_set(topic, None, held=True)
    study, report = _context_objects(held)
    if study is None or context_of(topic) is not None:
        return
    imaging_study_open_publish(sender, study=study, user=user, session_key=session_key)
    if report is not None and report.status != "final":
        diagnostic_report_publish(
            sender, report=report, study=study, user=user, session_key=session_key, action="opened"
        )
