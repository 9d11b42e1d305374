"""Priors fetched from a facility's own PACS (docs/priors.md): which of a source's studies are relevant,
the retrieval's state, and what the reading screen says about it. Writes here; the DICOM associations are
``interfaces.dicom.prior_scu``'s."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models.functions import Coalesce
from django.utils import timezone

from facilities.models import Facility
from imaging.models import Instance, Patient, PriorFetch, PriorRetrieval, PriorState, RetrievalStatus, Study
from imaging.services import prior_studies_display_check
from imaging.storage import encrypted_delete, metadata_sidecar_path

# Body parts recognised in a procedure's text when the source names none (DICOM CID 4031 terms).
BODY_PARTS = ("HEAD", "BRAIN", "NECK", "CHEST", "ABDOMEN", "PELVIS", "SPINE", "KNEE", "SHOULDER", "HIP")
DEFAULT_COUNT, DEFAULT_LOOKBACK_DAYS = 3, 1825

log = logging.getLogger(__name__)


class SourceUnavailable(Exception):
    """The source is down, refused the association or the credentials, or stopped answering:
    retry later. Raised by the DIMSE and the DICOMweb clients alike."""


@dataclass(frozen=True)
class Candidate:
    """One study in a source's C-FIND answer (already checked: same MRN and issuer)."""

    study_instance_uid: str
    study_date: str
    modalities: tuple[str, ...]
    description: str
    instances: int | None = None  # NumberOfStudyRelatedInstances, when the source says (QIDO-RS does)


def relevance(source: dict, *, modality: str, procedure_text: str) -> tuple[set[str], set[str]]:
    """(modalities, body parts) that make a prior relevant: the source's lists, else the current
    procedure's own modality and the body parts its text names."""
    modalities = {m.upper() for m in source.get("modalities") or ([modality] if modality else [])}
    text = procedure_text.upper()
    parts = {b.upper() for b in source.get("body_parts") or [p for p in BODY_PARTS if p in text]}
    return modalities, parts


def relevant_pick(
    source: dict, candidates: list[Candidate], *, modalities: set[str], body_parts: set[str], today: date,
    exclude: set[str],
) -> list[Candidate]:  # fmt: skip
    oldest = (today - timedelta(days=int(source.get("lookback_days") or DEFAULT_LOOKBACK_DAYS))).strftime(
        "%Y%m%d"
    )
    chosen = [
        c
        for c in candidates
        if c.study_instance_uid not in exclude
        and (not modalities or modalities & set(c.modalities))
        and (not body_parts or any(p in c.description.upper() for p in body_parts))
        and (not c.study_date or c.study_date >= oldest)
    ]
    chosen.sort(key=lambda c: c.study_date, reverse=True)  # newest first
    return chosen[: int(source.get("count") or DEFAULT_COUNT)]


def within_hours(source: dict, facility: Facility, now: datetime) -> bool:
    hours = source.get("hours")
    if not hours:
        return True
    start, end = hours.split("-")
    local = now.astimezone(facility.zone).strftime("%H:%M")
    return start <= local <= end if start <= end else (local >= start or local <= end)


def prior_retrieval_defer(retrieval: PriorRetrieval, source: dict) -> None:
    """Outside the source's pull hours: the question waits (``priors_deferred_due`` asks it when the
    hours open), and the reading screen says so rather than nothing."""
    PriorRetrieval.objects.filter(pk=retrieval.pk).exclude(status=RetrievalStatus.RETRIEVED).update(
        status=RetrievalStatus.DEFERRED,
        last_error=f"{retrieval.source_name} waits for its pull hours ({source.get('hours')})"[:200],
        updated_at=timezone.now(),
    )


def priors_deferred_due(*, now: datetime) -> list[PriorRetrieval]:
    """The deferred questions whose source's hours are open now, each claimed once (compare-and-set
    DEFERRED → PENDING, so two sweeps never ask twice); the caller asks them."""
    due = []
    for retrieval in PriorRetrieval.objects.filter(status=RetrievalStatus.DEFERRED).select_related(
        "facility"
    ):
        source = next(
            (s for s in retrieval.facility.prior_sources or [] if _source_name(s) == retrieval.source_name),
            None,
        )
        if source is not None and not within_hours(source, retrieval.facility, now):
            continue
        claimed = PriorRetrieval.objects.filter(pk=retrieval.pk, status=RetrievalStatus.DEFERRED).update(
            status=RetrievalStatus.PENDING, last_error="", updated_at=now
        )
        if claimed:
            due.append(retrieval)  # a source since removed: asked, and priors_fetch skips it
    return due


# How ReadRoom asks a prior source (docs/priors.md); a source of another method is not asked.
PRIOR_METHODS = ("c-move", "c-get", "dicomweb", "fhir")
# A question written with its order (or first image) and still not asked this long after: the task
# that asks it was lost (the broker down at the commit, a message dropped). ``priors_unasked_due``
# asks it again. Far longer than a C-FIND takes, so a question being asked is never asked twice.
PRIOR_UNASKED_MINUTES = 10


def _source_name(source: dict) -> str:
    return str(source.get("name") or source.get("called_ae_title") or source.get("base_url"))


def prior_sources_asked(facility: Facility) -> list[dict]:
    return [s for s in facility.prior_sources or [] if s.get("method") in PRIOR_METHODS]


def prior_retrieval_open(*, facility: Facility, patient_id: int, source: dict, order_id=None, study_id=None):
    retrieval, _ = PriorRetrieval.objects.get_or_create(
        facility=facility, patient_id=patient_id, order_id=order_id, study_id=study_id,
        source_name=_source_name(source),
    )  # fmt: skip
    return retrieval


def prior_questions_record(*, facility: Facility, patient_id: int, order_id=None, study_id=None) -> None:
    """One PENDING question per source, written in the transaction of the order (or the first image)
    that asks it. The task that asks is enqueued after that commit; were it lost, the row remains
    and ``priors_unasked_due`` asks it — and the reading screen knows priors were asked for."""
    for source in prior_sources_asked(facility):
        prior_retrieval_open(
            facility=facility, patient_id=patient_id, source=source, order_id=order_id, study_id=study_id
        )


def priors_unasked_due(*, now: datetime) -> list[PriorRetrieval]:
    """The questions still PENDING ``PRIOR_UNASKED_MINUTES`` after they were written or last claimed,
    each claimed once (compare-and-set of ``updated_at``: two sweeps never ask twice); the caller asks
    them. A question whose source was removed from the facility since is closed as not asked."""
    before = now - timedelta(minutes=PRIOR_UNASKED_MINUTES)
    due = []
    waiting = PriorRetrieval.objects.filter(status=RetrievalStatus.PENDING, updated_at__lt=before)
    for retrieval in waiting.select_related("facility"):
        names = {_source_name(s) for s in prior_sources_asked(retrieval.facility)}
        claim = PriorRetrieval.objects.filter(
            pk=retrieval.pk, status=RetrievalStatus.PENDING, updated_at=retrieval.updated_at
        )
        if retrieval.source_name not in names:
            claim.update(
                status=RetrievalStatus.SKIPPED, last_error="source no longer configured", updated_at=now
            )
        elif claim.update(updated_at=now):
            due.append(retrieval)
    return due


def prior_fetches_plan(retrieval: PriorRetrieval, chosen: list[Candidate]) -> list[PriorFetch]:
    """The priors this retrieval is to fetch now, claimed (RUNNING), newest first.

    Planned under a lock on the patient row: a current study's first image is often indexed before
    its order is applied, so the study's retrieval and the order's run at once (on two worker
    children) with the same C-FIND answer. Without the lock both planned every prior and both moved
    it (double work, and the reading screen counted each prior twice). With it, a prior that another
    retrieval of the patient has pending, running or retrieved is left to that one, and one of this
    retrieval's own not yet retrieved (a failed attempt the other has since taken up) is dropped: the
    screen's line, which counts the patient's fetches, is then right for the order and the study."""
    now = timezone.now()
    with transaction.atomic():
        # the lock: the two plans of one patient run one after the other, each seeing the other's rows
        list(Patient.objects.select_for_update().filter(pk=retrieval.patient_id).values_list("pk", flat=True))
        others = PriorFetch.objects.filter(
            retrieval__facility_id=retrieval.facility_id,
            retrieval__patient_id=retrieval.patient_id,
            status__in=(RetrievalStatus.PENDING, RetrievalStatus.RUNNING, RetrievalStatus.RETRIEVED),
        ).exclude(retrieval_id=retrieval.pk)
        stale = _claims_stale(others, now)
        taken = set(others.exclude(pk__in=[f.pk for f in stale]).values_list("study_instance_uid", flat=True))
        retrieval.fetches.filter(study_instance_uid__in=taken).exclude(
            status=RetrievalStatus.RETRIEVED
        ).delete()
        wanted = {c.study_instance_uid for c in chosen}
        for fetch in stale:
            if fetch.study_instance_uid in wanted:
                _claim_take_over(retrieval, fetch)
        for c in chosen:
            if c.study_instance_uid in taken:
                continue
            PriorFetch.objects.get_or_create(
                retrieval=retrieval, study_instance_uid=c.study_instance_uid,
                defaults={"study_date": c.study_date, "modalities": "\\".join(c.modalities)[:64],
                          "description": c.description[:64]},
            )  # fmt: skip
        mine = list(
            retrieval.fetches.exclude(status=RetrievalStatus.RETRIEVED).order_by("-study_date", "pk")
        )  # newest first: the prior a reader compares with first is there first
        PriorFetch.objects.filter(pk__in=[f.pk for f in mine]).update(
            status=RetrievalStatus.RUNNING, claimed_at=now, alive_at=now
        )
        for fetch in mine:
            fetch.status, fetch.claimed_at, fetch.alive_at = RetrievalStatus.RUNNING, now, now
        PriorRetrieval.objects.filter(pk=retrieval.pk).update(status=RetrievalStatus.RUNNING)
    return mine


def _claims_stale(others, now: datetime) -> list[PriorFetch]:
    """Another retrieval's RUNNING fetches whose holder has not beaten (``prior_claims_kept``) for
    longer than the limit: their worker died mid-move (its message is redelivered only much later,
    if ever). A long retrieval whose worker still beats is left to it, however long it takes. A claim
    of unknown age (made before claims were dated) is left to its holder."""
    limit = timedelta(seconds=settings.READROOM_PRIOR_CLAIM_MAX_SECONDS)
    return list(
        others.filter(status=RetrievalStatus.RUNNING)
        .annotate(last_seen=Coalesce("alive_at", "claimed_at"))
        .filter(last_seen__lt=now - limit)
    )


def prior_claims_beat(fetches: list[PriorFetch]) -> int:
    """Date the claims still this holder's (compare-and-set on status and claim time, which one plan
    gives all its fetches: one taken over or finished is not touched); how many. A failed beat is
    only logged: the next one comes long before the limit."""
    try:
        return PriorFetch.objects.filter(
            pk__in=[f.pk for f in fetches], status=RetrievalStatus.RUNNING, claimed_at=fetches[0].claimed_at
        ).update(alive_at=timezone.now())
    except DatabaseError:
        log.warning("prior claims %s: heartbeat failed", [f.pk for f in fetches], exc_info=True)
        return 0


@contextmanager
def prior_claims_kept(fetches: list[PriorFetch]) -> Iterator[None]:
    """While its holder retrieves them, a thread beats the claims every
    READROOM_PRIOR_CLAIM_BEAT_SECONDS: the age limit then measures the holder's silence (a dead
    worker), not the length of a live retrieval, which would otherwise be taken over and fetched
    twice. The thread has its own database session, closed when it ends."""
    if not fetches:  # nothing claimed (every relevant prior is here or another's): no thread
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(settings.READROOM_PRIOR_CLAIM_BEAT_SECONDS):
                prior_claims_beat(fetches)
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name="prior-claims-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        # bounded: a beat waiting on a row lock (a test's open transaction) must not hold the retrieval
        thread.join(10)


def _claim_take_over(retrieval: PriorRetrieval, fetch: PriorFetch) -> bool:
    """Move a stale claim to ``retrieval`` (compare-and-set on its status and claim time: a finish
    of the old holder in between wins, and the prior is then left to it). The row moves, so the
    patient's fetches still count each prior once; its claim time is set anew by the plan."""
    retrieval.fetches.filter(study_instance_uid=fetch.study_instance_uid).exclude(
        status=RetrievalStatus.RETRIEVED
    ).delete()  # this retrieval's own failed attempt at it, if any (one row per prior and retrieval)
    moved = PriorFetch.objects.filter(
        pk=fetch.pk, status=RetrievalStatus.RUNNING, claimed_at=fetch.claimed_at
    ).update(retrieval=retrieval, error="")
    return bool(moved)


def prior_fetch_finish(fetch: PriorFetch, *, expected: int, failed: int, error: str = "") -> bool:
    """A move/get ended: the prior is shown only when every instance it announced is indexed.
    Only while the claim is still this fetch's (compare-and-set on ``claimed_at``): a retrieval
    whose stale claim was taken over judges nothing (True: nothing of it to retry)."""
    study = Study.objects.filter(study_instance_uid=fetch.study_instance_uid).first()
    stored = Instance.objects.filter(series__study=study).count() if study else 0
    complete = not error and failed == 0 and study is not None and stored >= expected > 0
    ours = PriorFetch.objects.filter(
        pk=fetch.pk, retrieval_id=fetch.retrieval_id, claimed_at=fetch.claimed_at
    )
    with transaction.atomic():
        if complete:
            if not ours.update(status=RetrievalStatus.RETRIEVED, instances_expected=expected, error=""):
                return True
            Study.objects.filter(pk=study.pk, prior_state=PriorState.RETRIEVING).update(
                prior_state=PriorState.RETRIEVED
            )
        else:
            reason = error or f"{failed} of {expected} instances failed" if failed else error or "incomplete"
            if not ours.update(
                status=RetrievalStatus.FAILED, instances_expected=expected, error=reason[:200]
            ):
                return True
    return complete


def prior_partial_discard(fetch: PriorFetch) -> None:
    """The last attempt failed: what arrived of the prior is removed, never left half-indexed."""
    study = Study.objects.filter(
        study_instance_uid=fetch.study_instance_uid, prior_state=PriorState.RETRIEVING
    ).first()
    if study is None:
        return
    paths = list(Instance.objects.filter(series__study=study).values_list("storage_path", flat=True))
    with transaction.atomic():
        Instance.objects.filter(series__study=study).delete()
        study.series.all().delete()
        study.delete()
    for path in paths:
        encrypted_delete(path)
        encrypted_delete(metadata_sidecar_path(path))


def prior_retrieval_close(retrieval: PriorRetrieval, *, error: str = "", attempt: int) -> None:
    """The source has been asked (this attempt): its state, and the decode checks of the priors it
    delivered, which wait until now (``InstanceRecorded.prior_retrieving``)."""
    failed = retrieval.fetches.filter(status=RetrievalStatus.FAILED).exists() or bool(error)
    PriorRetrieval.objects.filter(pk=retrieval.pk).update(
        status=RetrievalStatus.FAILED if failed else RetrievalStatus.RETRIEVED,
        attempts=attempt,
        last_error=error[:200],
        updated_at=timezone.now(),
    )
    retrieved = retrieval.fetches.filter(status=RetrievalStatus.RETRIEVED).values("study_instance_uid")
    prior_studies_display_check(
        study_ids=list(
            Study.objects.filter(
                study_instance_uid__in=retrieved, prior_state=PriorState.RETRIEVED
            ).values_list("pk", flat=True)
        )
    )


def prior_status_text(study: Study) -> str:
    """The reading screen's line: "2 priors retrieved, 1 failed: association rejected"."""
    if study.patient_id is None:
        return ""
    retrievals = PriorRetrieval.objects.filter(facility_id=study.facility_id, patient_id=study.patient_id)
    fetches = PriorFetch.objects.filter(retrieval__in=retrievals)
    done = fetches.filter(status=RetrievalStatus.RETRIEVED).count()
    failed = list(fetches.filter(status=RetrievalStatus.FAILED).values_list("error", flat=True))
    source_errors = [
        r.last_error for r in retrievals if r.last_error and r.status != RetrievalStatus.DEFERRED
    ]
    waiting = [r.last_error for r in retrievals if r.status == RetrievalStatus.DEFERRED]
    pending = fetches.filter(status__in=(RetrievalStatus.PENDING, RetrievalStatus.RUNNING)).count()
    if not (done or failed or source_errors or pending or waiting):
        return ""
    parts = [f"{done} prior{'s' if done != 1 else ''} retrieved"]
    if pending:
        parts.append(f"{pending} retrieving")
    parts += waiting
    if failed or source_errors:
        reasons = "; ".join(dict.fromkeys(failed + source_errors))
        parts.append(f"{len(failed) or len(source_errors)} failed: {reasons}")
    return ", ".join(parts)
