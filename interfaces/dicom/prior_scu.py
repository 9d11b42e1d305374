"""ReadRoom as a Query/Retrieve SCU (docs/priors.md): ask a facility's PACS for the same patient's
studies — by MRN *and* issuer, never by name — and pull the relevant ones into the store as priors.

C-MOVE asks the PACS to send to ReadRoom's own SCP (the PACS's AE must be a calling AE of the facility,
so its C-STOREs land in that facility); C-GET receives on this association through the same ingest path
(``dicom_instance_receive``). Either way the instances are indexed by ``instance_stored``, which makes a
study we asked for that patient's prior (``imaging.services._prior_expected``)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from django.conf import settings
from django.db import IntegrityError, connection
from django.utils import timezone
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from facilities.models import Facility
from imaging.models import Order, Patient, PriorFetch, RetrievalStatus, Study
from imaging.priors import (
    Candidate,
    SourceUnavailable,
    prior_claims_kept,
    prior_fetch_finish,
    prior_fetches_plan,
    prior_partial_discard,
    prior_retrieval_close,
    prior_retrieval_defer,
    prior_retrieval_open,
    prior_sources_asked,
    relevance,
    relevant_pick,
    within_hours,
)
from imaging.report_history import fhir_reports_record
from imaging.services import IngestConflict
from interfaces.dicom.prior_ingest import PriorIngest
from interfaces.dicom.prior_web import web_retrieve, web_studies
from interfaces.fhir.prior_source import fhir_reports_find
from worklist.broadcast import group_event_send, operations_event_send
from worklist.groups import user_group
from worklist.models import StudyAssignment

log = logging.getLogger(__name__)


def _ae(timeout: float) -> AE:
    ae = AE(ae_title=settings.READROOM_DICOM_AE_TITLE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    return ae


def _read_timeout_restore(event) -> None:
    """pynetdicom's requestor clears the socket's timeout once connected (``settimeout(None)`` in
    ``AssociationSocket.connect``), so ``network_timeout`` never bounds a read: a PACS that stops
    mid-PDU (a 512-KB C-GET PDU) left the reactor blocked in ``recv`` and the abort that follows the
    DIMSE timeout waiting on it for ever. Put the AE's read timeout back as the connection opens."""
    event.assoc.dul.socket.socket.settimeout(event.assoc.network_timeout)


def _associate(ae: AE, source: dict, **kwargs):
    kwargs["evt_handlers"] = [*kwargs.get("evt_handlers", []), (evt.EVT_CONN_OPEN, _read_timeout_restore)]
    assoc = ae.associate(source["host"], int(source["port"]), ae_title=source["called_ae_title"], **kwargs)
    if assoc.is_established:
        return assoc
    if assoc.is_rejected:
        raise SourceUnavailable("association rejected")
    raise SourceUnavailable("source unreachable")


def source_studies(source: dict, *, mrn: str, issuer: str) -> list[Candidate]:
    """C-FIND (Study Root, STUDY level) for the patient; answers naming another MRN or issuer are
    dropped even if the PACS ignored a key."""
    ae = _ae(float(source.get("timeout_seconds") or 30))
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID, query.IssuerOfPatientID = mrn, issuer
    for keyword in ("StudyInstanceUID", "StudyDate", "ModalitiesInStudy", "StudyDescription", "PatientName"):
        setattr(query, keyword, "")
    assoc = _associate(ae, source)
    found = []
    try:
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            if not status:
                raise SourceUnavailable("no answer to C-FIND (timed out)")
            if status.Status in (0xFF00, 0xFF01) and identifier is not None:
                if (
                    str(identifier.get("PatientID", "")) != mrn
                    or str(identifier.get("IssuerOfPatientID", "")) != issuer
                ):
                    continue
                modalities = identifier.get("ModalitiesInStudy", "")
                modalities = [modalities] if isinstance(modalities, str) else list(modalities)
                found.append(
                    Candidate(
                        str(identifier.StudyInstanceUID),
                        str(identifier.get("StudyDate", "")),
                        tuple(str(m) for m in modalities if m),
                        str(identifier.get("StudyDescription", "")),
                    )
                )
            elif status.Status not in (0x0000,):
                raise SourceUnavailable(f"C-FIND failed 0x{status.Status:04X}")
    finally:
        assoc.release()
    return found


def _retrieve_query(uid: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = uid
    return query


def source_move(source: dict, uid: str) -> tuple[int, int, str]:
    """(completed, failed, error) of a C-MOVE of one study to ReadRoom's SCP."""
    ae = _ae(float(source.get("timeout_seconds") or 60))
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = _associate(ae, source)
    try:
        responses = assoc.send_c_move(
            _retrieve_query(uid), settings.READROOM_DICOM_AE_TITLE, StudyRootQueryRetrieveInformationModelMove
        )
        completed, failed, error = _suboperations_tally(responses, "move")
    finally:
        if assoc.is_established:
            assoc.release()
    return completed, failed, error


def _suboperations_tally(responses, verb: str) -> tuple[int, int, str]:
    """(completed, failed, error) from a C-MOVE's or C-GET's responses: the PACS's last counts, and
    the first failure it reports; an empty status is pynetdicom's timeout (the source stopped
    answering mid-retrieve)."""
    completed = failed = 0
    error = ""
    for status, _identifier in responses:
        if not status:
            return completed, failed, f"timed out mid-{verb}"
        completed = int(status.get("NumberOfCompletedSuboperations", completed) or completed)
        failed = int(status.get("NumberOfFailedSuboperations", failed) or failed)
        if status.Status not in (0x0000, 0xFF00, 0xB000):
            error = f"C-{verb.upper()} failed 0x{status.Status:04X}"
    return completed, failed, error


def source_get(source: dict, uid: str, facility: Facility) -> tuple[int, int, str]:
    """(completed, failed, error) of a C-GET: the instances come back on this association and are
    ingested on a few threads while the next arrive (``PriorIngest``). Threaded, each C-STORE is
    answered Success once received and queued: its outcome counts in ``failed`` here (the prior
    is then incomplete and retried), beside the sub-operations the PACS reports failed."""
    ae = _ae(float(source.get("timeout_seconds") or 60))
    # no limit on the PDUs the PACS sends us (the SCP's setting): pynetdicom's default 16 KB cut
    # each 512 KB slice into 32 P-DATA PDUs, each read, decoded and reassembled in Python
    ae.maximum_pdu_size = 0
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    contexts = StoragePresentationContexts[:127]
    for context in contexts:
        ae.add_requested_context(context.abstract_syntax)
    roles = [build_role(c.abstract_syntax, scp_role=True) for c in contexts]
    ingest = PriorIngest(facility)

    def on_store(event) -> int:
        return ingest.submit(event.encoded_dataset(include_meta=True))

    try:
        assoc = _associate(ae, source, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        try:
            responses = assoc.send_c_get(_retrieve_query(uid), StudyRootQueryRetrieveInformationModelGet)
            completed, failed, error = _suboperations_tally(responses, "get")
        finally:
            if assoc.is_established:
                assoc.release()
    finally:
        _, refused = ingest.finish()  # every instance handed in is stored or counted before we judge
    return completed, failed + (refused if ingest.deferred else 0), error


def priors_fetch(*, patient_id: int, order_id: int | None = None, study_id: int | None = None,
                 attempt: int = 1, last_attempt: bool = True) -> list[str]:  # fmt: skip
    """Ask every prior source of the patient's facility (DIMSE, DICOMweb, or FHIR for reports);
    returns the errors (empty: all well).
    The caller (a task) retries on errors; on the last attempt what arrived half is discarded."""
    patient = Patient.objects.select_related("facility").get(pk=patient_id)
    facility = patient.facility
    order = Order.objects.filter(pk=order_id).first() if order_id else None
    current = Study.objects.filter(pk=study_id).first() if study_id else None
    modality = (
        current.modalities.split("\\")[0] if current and current.modalities else ""
    ) or _order_modality(order)
    text = " ".join(
        filter(None, [order.procedure_text if order else "", current.description if current else ""])
    )
    exclude = set(
        Study.objects.filter(facility=facility, patient=patient).values_list("study_instance_uid", flat=True)
    )
    errors = []
    for source in prior_sources_asked(facility):
        retrieval = prior_retrieval_open(
            facility=facility, patient_id=patient.pk, source=source, order_id=order_id, study_id=study_id
        )
        if not within_hours(source, facility, timezone.now()):
            prior_retrieval_defer(retrieval, source)  # asked when the hours open (priors_deferred_sweep)
            prior_status_announce(facility_id=facility.pk, patient_id=patient.pk)
            continue
        error = ""
        if source["method"] == "fhir":
            # reports only, no images: asked again at every trigger, stored once per id and version
            error = fhir_reports_ask(source, facility=facility, patient=patient, name=retrieval.source_name)
            errors += [error] if error else []
            prior_retrieval_close(retrieval, error=error, attempt=attempt)
            prior_status_announce(facility_id=facility.pk, patient_id=patient.pk)
            continue
        try:
            candidates = _find(source, mrn=patient.mrn, issuer=patient.assigning_authority)
            announced = {c.study_instance_uid: c.instances for c in candidates}
            modalities, parts = relevance(source, modality=modality, procedure_text=text)
            chosen = relevant_pick(
                source, candidates, modalities=modalities, body_parts=parts,
                today=timezone.localdate(timezone=facility.zone), exclude=exclude,
            )  # fmt: skip
            planned = prior_fetches_plan(retrieval, chosen)  # claimed, newest first
            with prior_claims_kept(planned):  # beaten while we retrieve: never taken over alive
                errors += _fetches_run(
                    source, planned, facility, patient, announced=announced, last_attempt=last_attempt
                )
        except SourceUnavailable as exc:
            error = str(exc)
            errors.append(error)
            if last_attempt:
                # an earlier attempt may have left a prior half-arrived (the PACS stopped mid-move):
                # the source is gone for good now, so nothing of it may stay
                for fetch in retrieval.fetches.exclude(status=RetrievalStatus.RETRIEVED):
                    prior_partial_discard(fetch)
        log.info("priors from %s for patient %s: %s", retrieval.source_name, patient_id, error or "done")
        prior_retrieval_close(retrieval, error=error, attempt=attempt)
        prior_status_announce(facility_id=facility.pk, patient_id=patient.pk)
    return errors


def prior_parallel(source: dict) -> int:
    """How many of a retrieval's priors are fetched at once: the source's ``parallel``; else, for
    C-MOVE, READROOM_PRIOR_PARALLEL, and one for C-GET and DICOMweb — their instances are ingested
    in this worker process (one interpreter), where side by side they share its core and only
    delay the newest (bench/priors: the newest 3.5 → 9.9 s, all of them 10.9 → 10.2 s), while a
    C-MOVE's land in the SCP's processes. One on SQLite (the embedded default): its writers would
    queue on the database's one lock, and a locked write is an error there, not a wait."""
    if connection.vendor == "sqlite":
        return 1
    if source.get("parallel"):
        return int(source["parallel"])
    return settings.READROOM_PRIOR_PARALLEL if source["method"] == "c-move" else 1


def _fetches_run(
    source: dict, planned: list[PriorFetch], facility: Facility, patient: Patient, *, announced: dict,
    last_attempt: bool,
) -> list[str]:  # fmt: skip
    """Fetch the claimed priors, newest first, up to ``prior_parallel`` at once; their errors.
    Why at once: one association is serial (each instance received, checked, encrypted, written and
    indexed before the PACS sends the next) and leaves most of the cores idle; several associations
    overlap those waits, and the SCP's processes take one each (docs/priors.md "Priors fetched
    side by side"). The newest is still asked first, so it is not queued behind an older one."""

    def one(fetch: PriorFetch) -> list[str]:
        errors = _fetch_one(source, fetch, facility, announced=announced, last_attempt=last_attempt)
        prior_status_announce(facility_id=facility.pk, patient_id=patient.pk)
        return errors

    width = min(prior_parallel(source), len(planned))
    if width <= 1:
        return [error for fetch in planned for error in one(fetch)]

    def threaded(fetch: PriorFetch) -> list[str]:
        try:
            return one(fetch)
        finally:
            connection.close()  # the thread's own database session

    with ThreadPoolExecutor(width, thread_name_prefix="prior-fetch") as pool:
        return [error for errors in pool.map(threaded, planned) for error in errors]


def _fetch_one(
    source: dict, fetch: PriorFetch, facility: Facility, *, announced: dict, last_attempt: bool
) -> list[str]:
    """Retrieve one claimed prior and judge it; its error, if any (what arrived half is discarded
    on the last attempt)."""
    try:
        completed, failed, fetch_error = _retrieve(
            source, fetch.study_instance_uid, facility, announced=announced.get(fetch.study_instance_uid)
        )
    except SourceUnavailable as exc:
        completed, failed, fetch_error = 0, 0, str(exc)
    if prior_fetch_finish(fetch, expected=completed, failed=failed, error=fetch_error):
        return []
    if last_attempt:
        prior_partial_discard(fetch)
    return [fetch_error or "incomplete"]


def fhir_reports_ask(source: dict, *, facility: Facility, patient: Patient, name: str) -> str:
    """Ask a FHIR source for the patient's reports and store them (all or none); the error, or "".
    The task retries on an error, as for the PACS; nothing of a failed answer was stored."""
    try:
        answer = fhir_reports_find(
            source, mrn=patient.mrn, authority=patient.assigning_authority, zone=facility.zone,
            today=timezone.localdate(timezone=facility.zone),
        )  # fmt: skip
        record = partial(
            fhir_reports_record, facility=facility, patient=patient, source=name, reports=answer.reports,
            withdrawn_ids=answer.withdrawn,
        )  # fmt: skip
        try:
            outcome = record()
        except IntegrityError:
            # another fetch of the patient (the order's and the first image's) stored the same new
            # report a moment before: its rows are committed now, so this one finds them unchanged
            outcome = record()
    except SourceUnavailable as exc:
        return str(exc)
    except IngestConflict as exc:
        return f"FHIR: {exc}"
    log.info(
        "FHIR reports from %s for patient %s: %s stored, %s unchanged, %s withdrawn, %s skipped, %s pages",
        name, patient.pk, outcome.stored, outcome.unchanged, outcome.withdrawn, answer.skipped, answer.pages,
    )  # fmt: skip
    if outcome.pending:
        # the reports are stored and shown, each saying its text could not be fetched; the source
        # fails so that the task asks again, and the fetched text then replaces the note
        many = len(outcome.pending)
        reports = f"{many} report{'s' if many > 1 else ''}"
        reason = answer.unfetched.get(outcome.pending[0], "")
        return f"FHIR: the text of {reports} could not be fetched ({reason})"
    return ""


def _find(source: dict, *, mrn: str, issuer: str) -> list[Candidate]:
    if source["method"] == "dicomweb":
        return web_studies(source, mrn=mrn, issuer=issuer)
    return source_studies(source, mrn=mrn, issuer=issuer)


def _retrieve(source: dict, uid: str, facility: Facility, *, announced: int | None) -> tuple[int, int, str]:
    """(expected, failed, error) of one prior's retrieval by the source's method."""
    if source["method"] == "c-move":
        return source_move(source, uid)
    if source["method"] == "c-get":
        return source_get(source, uid, facility)
    return web_retrieve(source, uid, facility, announced=announced)


def prior_status_announce(*, facility_id: int, patient_id: int) -> None:
    """Tell the reading screens of the patient's current studies that their priors line changed.
    The event names the study only (no PHI, no text): the page asks for the line through its
    permission-checked fragment. Its audience is the study's holder (the reader on the reading
    screen) and operations, after commit."""
    holders = StudyAssignment.objects.filter(
        study__facility_id=facility_id, study__patient_id=patient_id, study__prior_state=""
    ).values_list("study_id", "claimed_by_id")
    for study_id, holder_id in holders:
        event = {"type": "study.priors", "study": {"id": study_id}}
        if holder_id:
            group_event_send(user_group(holder_id), event)
        operations_event_send(event)


def _order_modality(order: Order | None) -> str:
    if order is None:
        return ""
    text = f"{order.procedure_code} {order.procedure_text}".upper()
    for modality in ("CT", "MR", "CR", "DX", "US", "NM", "PT", "MG", "XA"):
        if text.startswith(modality) or f" {modality} " in f" {text} ":
            return modality
    return ""
