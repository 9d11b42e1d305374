"""Which studies a user may see: the one place that decides it (DESIGN.md §7).

* operations and the medical director: every study (workflow and QA span all clients);
* a facility admin: their own facility's studies (the hospital's PACS account sends and queries
  through DICOMweb with it);
* a radiologist: the studies the eligibility engine lets them read now, and the studies of the
  peer-review cases assigned to them (a review waits for them off shift too);
* credentialing staff: none — they never see patient data.

Orders and patients follow the studies: the whole facility for those who see its studies (operations,
the medical director, its admins), and for a radiologist the orders and patients of the studies they may
read. ``may_read_patient_data`` is the role-level gate in front of all of it (a credentialing user is
refused outright, 403, rather than shown an empty list).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.db import connection
from django.db.models import F, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from accounts.audit import ReadKind, record_phi_access
from accounts.roles import Role, has_role
from credentialing.eligibility import readable_studies_q
from facilities.models import Facility
from facilities.selectors import facilities_administered_by
from imaging.models import (
    OPEN_STUDY_STATUSES,
    AiFinding,
    Instance,
    Order,
    OrderMatch,
    OrderStatus,
    Patient,
    PriorState,
    Study,
    StudyStatus,
)
from imaging.ohif import URL_PREFIX, ohif_available

# Roles whose work involves patient data at all (DESIGN.md §1); credentialing staff's does not.
PATIENT_DATA_ROLES = (Role.RADIOLOGIST, Role.MEDICAL_DIRECTOR, Role.FACILITY_ADMIN, Role.OPERATIONS)


def may_read_patient_data(user) -> bool:
    return bool(user and user.is_authenticated and (user.is_superuser or has_role(user, *PATIENT_DATA_ROLES)))


def studies_visible_to(user, *, at: datetime | None = None) -> QuerySet[Study]:
    if not user.is_authenticated:
        return Study.objects.none()
    # A prior still arriving from the hospital's PACS is shown to no one (docs/priors.md).
    shown = Study.objects.exclude(prior_state=PriorState.RETRIEVING)
    if user.is_superuser or has_role(user, Role.OPERATIONS, Role.MEDICAL_DIRECTOR):
        return shown
    visible = Study.objects.none()
    if has_role(user, Role.FACILITY_ADMIN):
        visible = visible | shown.filter(facility__in=facilities_administered_by(user))
    if has_role(user, Role.RADIOLOGIST):
        readable = shown.filter(readable_studies_q(user, at or timezone.now()))
        visible = visible | readable
        visible = visible | Study.objects.filter(pk__in=_review_study_ids(user))
        # the retrieved priors of the patients whose studies this reader may read (same facility:
        # a patient belongs to one facility)
        priors = readable.filter(patient_id__isnull=False).values("patient_id")
        visible = visible | Study.objects.filter(prior_state=PriorState.RETRIEVED, patient_id__in=priors)
    return visible


def _review_study_ids(user) -> QuerySet:
    # qa builds on imaging; imported here, at call time, to keep the dependency one-way at import
    from qa.models import PeerReview, ReviewStatus

    return PeerReview.objects.filter(reviewer=user, status=ReviewStatus.ASSIGNED).values("report__study_id")


def study_blinded_for(user, study_id: int) -> bool:
    """Whether ``user`` reviews this study's report blinded: its viewer then offers no link to the
    report, which names the signer (``qa.selectors.blinded_reports_for``)."""
    from qa.selectors import blinded_reports_for

    return blinded_reports_for(user).filter(report__study_id=study_id).exists()


def access_study(user, study_id: int, *, kind: ReadKind) -> Study:
    """Fetch a study the user may see, record the read (of ``kind``) in the audit log, or 404 (the
    same answer for another facility's study as for a missing one)."""
    study = (
        studies_visible_to(user).select_related("facility", "patient", "order").filter(pk=study_id).first()
    )
    if study is None:
        raise Http404("No such study")
    record_phi_access(study, kind=kind)
    return study


def _sees_every_facility(user) -> bool:
    return user.is_superuser or has_role(user, Role.OPERATIONS, Role.MEDICAL_DIRECTOR)


def orders_visible_to(user, *, at: datetime | None = None) -> QuerySet[Order]:
    """Orders whose facility's studies the user sees; a radiologist: the orders of studies they may
    read (an order still waiting for its images is no reader's business)."""
    return _behind_visible_studies(user, Order, "order_id", at=at)


def patients_visible_to(user, *, at: datetime | None = None) -> QuerySet[Patient]:
    """Patients of the facilities whose studies the user sees; a radiologist: the patients of the
    studies they may read."""
    return _behind_visible_studies(user, Patient, "patient_id", at=at)


def _behind_visible_studies(user, model, link: str, *, at: datetime | None) -> QuerySet:
    """``model`` rows (orders, patients) by the same rules as the studies: every facility's for
    operations and the medical director, an administered facility's for its admins, and for a
    radiologist those the studies they may read point to through ``link``."""
    if not user.is_authenticated:
        return model.objects.none()
    if _sees_every_facility(user):
        return model.objects.all()
    visible = model.objects.none()
    if has_role(user, Role.FACILITY_ADMIN):
        visible = visible | model.objects.filter(facility__in=facilities_administered_by(user))
    if has_role(user, Role.RADIOLOGIST):
        readable = studies_visible_to(user, at=at).filter(**{f"{link}__isnull": False}).values(link)
        visible = visible | model.objects.filter(pk__in=readable)
    return visible


def access_order(user, order_id: int) -> Order:
    """Fetch an order the user may see and record the read, or 404 (as for a missing one)."""
    order = orders_visible_to(user).select_related("facility", "patient").filter(pk=order_id).first()
    if order is None:
        raise Http404("No such order")
    record_phi_access(order, kind=ReadKind.API)
    return order


def access_patient(user, patient_id: int) -> Patient:
    """Fetch a patient the user may see and record the read, or 404 (as for a missing one)."""
    patient = patients_visible_to(user).select_related("facility").filter(pk=patient_id).first()
    if patient is None:
        raise Http404("No such patient")
    record_phi_access(patient, kind=ReadKind.API)
    return patient


def studies_announced_unrouted(*, before: datetime) -> list[int]:
    """Open studies that ingest announced as routable before ``before`` — images complete (the quiet
    sweep announces at ``completed_at`` + the facility's quiet time), or a code stroke with an image
    (announced at its first) — and that no routing row names: their routing failed after ingest's
    commit (``worklist.services.on_study_routable`` logs it), so no worklist lists them and nobody
    was alerted. Few rows: the normal path routes within a second, so this reads an index's edge."""
    complete = Study.objects.filter(
        status=StudyStatus.COMPLETE, worklist_routed=False, completed_at__lt=before
    ).values_list("pk", "completed_at", "facility__study_quiet_seconds")
    strokes = Study.objects.filter(
        status=StudyStatus.RECEIVING, is_stroke=True, worklist_routed=False, first_received_at__lt=before
    ).values_list("pk", flat=True)
    # a complete study is announced only once its quiet time has passed since ``completed_at``
    due = [pk for pk, completed, quiet in complete if completed + timedelta(seconds=quiet) < before]
    return sorted([*due, *strokes])


def study_priors(user, study: Study, *, limit: int = 10) -> list[Study]:
    """The patient's other studies at this facility that ``user`` may see now, newest first (the
    priors a reader compares with). A study without a matched patient has none."""
    if study.patient_id is None:
        return []
    return list(
        studies_visible_to(user)
        .filter(facility_id=study.facility_id, patient_id=study.patient_id)
        .exclude(pk=study.pk)
        .order_by(F("study_datetime").desc(nulls_last=True), "-pk")[:limit]
    )


@dataclass(frozen=True)
class AiFlaggedImage:
    """Where a reader opens a study an AI flagged (docs/ai.md): the finding's first image here."""

    series_instance_uid: str
    sop_instance_uid: str
    finding: str  # "Cerebral hemorrhage positive (p=0.93) · Aidoc BriefCase ICH 2.1"
    # the series of the study's AI segmentation (a SEG with a positive finding), stored here: OHIF
    # opens on it so its overlay is drawn on the images it segments; "" when there is none
    segmentation_series_uid: str = ""


def ai_flagged_image(study: Study) -> AiFlaggedImage | None:
    """The first image of the study's first positive AI finding that names images stored here (the
    finding's own images, else its result's): in that finding's first series, the flagged slice
    first in stack order, so the reader scrolls on through the rest. None: nothing flagged here.
    The caller has checked the user may see the study."""
    findings = (
        AiFinding.objects.filter(result__study=study, present=True)
        .select_related("result")
        .order_by("result__received_at", "result_id", "id")
    )
    for finding in findings:
        flagged = finding.referenced_sop_instance_uids or finding.result.referenced_sop_instance_uids
        if not flagged:
            continue
        stored = {
            i.sop_instance_uid: i
            for i in Instance.objects.filter(
                series__study=study, series__made_by__isnull=True, sop_instance_uid__in=flagged
            ).select_related("series")
        }
        first = next((stored[uid] for uid in flagged if uid in stored), None)
        if first is None:
            continue  # its images are not (yet) here
        same_series = [i for i in stored.values() if i.series_id == first.series_id]
        first = min(same_series, key=lambda i: (i.instance_number is None, i.instance_number or 0, i.pk))
        return AiFlaggedImage(
            first.series.series_instance_uid,
            first.sop_instance_uid,
            f"{finding.label} · {finding.result.algorithm}",
            _ai_segmentation_series_uid(study),
        )
    return None


def _ai_segmentation_series_uid(study: Study) -> str:
    """The series of the study's earliest AI SEG with a positive finding, if it is stored here."""
    seg_uids = (
        AiFinding.objects.filter(result__study=study, result__source="seg", present=True)
        .order_by("result__received_at", "result_id")
        .values_list("result__sop_instance_uid", flat=True)
    )
    for uid in seg_uids:
        series = (
            Instance.objects.filter(series__study=study, sop_instance_uid=uid)
            .values_list("series__series_instance_uid", flat=True)
            .first()
        )
        if series:
            return series
    return ""


def ohif_viewer_url(
    study: Study, *, prior_uids: Sequence[str] = (), flagged: AiFlaggedImage | None = None
) -> str | None:
    """Where OHIF opens this study (first, in the viewport) with its priors beside it in the study
    browser; None when OHIF is not installed (the caller falls back to the built-in viewer).
    The caller passes priors the reader may see (``study_priors``): the page refuses any other.

    ``flagged`` (``ai_flagged_image``): OHIF opens on the AI's flagged series and image. OHIF's
    default hanging protocol (extensions/default getHangingProtocolModule, 3.13.2) prefers the
    display set that ``isDisplaySetFromUrl`` (``initialSeriesInstanceUID`` / ``initialSOPInstanceUID``)
    and starts its viewport at ``sopInstanceLocation`` (the index of ``initialSOPInstanceUID``)."""
    if not ohif_available():
        return None
    uids = [study.study_instance_uid, *(u for u in prior_uids if u != study.study_instance_uid)]
    query = {"StudyInstanceUIDs": ",".join(uids)}
    if flagged is not None and flagged.segmentation_series_uid:
        # OHIF's SEG viewport: the segmented series with the overlay hydrated (app-config's
        # disableConfirmationPrompts: no "load the segmentation?" prompt), docs/ai.md
        query["initialSeriesInstanceUID"] = flagged.segmentation_series_uid
    elif flagged is not None:
        query["initialSeriesInstanceUID"] = flagged.series_instance_uid
        query["initialSOPInstanceUID"] = flagged.sop_instance_uid
    return f"{URL_PREFIX}viewer?{urlencode(query)}"


def studies_waiting_for_order(user, *, at: datetime | None = None, facility: str = "") -> QuerySet[Study]:
    """Open studies still without their order after the facility's ``orderless_wait_minutes``
    (docs/orders.md): images read without the order's priority, history and ordering provider.
    Oldest first; only what the user may see (the operations desk: every facility). A queryset,
    so that the page and the REST API page it; ``waited_minutes_set`` fills in a page's minutes."""
    at = at or timezone.now()
    # Each facility its own wait, compared in SQL so that a page is a LIMIT/OFFSET: one term per
    # distinct wait (a handful), portable where the database has no interval arithmetic (SQLite).
    waits = Facility.objects.values_list("orderless_wait_minutes", flat=True).distinct()
    past_wait = Q(pk__in=[])
    for minutes in waits:
        past_wait |= Q(
            facility__orderless_wait_minutes=minutes, first_received_at__lte=at - timedelta(minutes=minutes)
        )
    candidates = (
        studies_visible_to(user, at=at)
        .filter(
            past_wait,
            order__isnull=True,
            status__in=OPEN_STUDY_STATUSES,
            prior_state=PriorState.NOT_PRIOR,
        )
        .select_related("facility", "patient")
        .order_by("first_received_at", "id")
    )
    if facility:
        candidates = candidates.filter(facility__code=facility)
    return candidates


def waited_minutes_set(studies: Sequence[Study], *, at: datetime) -> list[Study]:
    """Each study of a page of ``studies_waiting_for_order`` gets ``waited_minutes``."""
    for study in studies:
        study.waited_minutes = int((at - study.first_received_at).total_seconds() / 60)
    return list(studies)


def studies_matched_by_hand(user, *, facility: str = "") -> QuerySet[Study]:
    """Open studies operations matched to an order by hand (``OrderMatch.MANUAL``), most recently
    changed first: where a match made by mistake is undone (worklist.order_match)."""
    studies = (
        studies_visible_to(user)
        .filter(order_match=OrderMatch.MANUAL, order__isnull=False, status__in=OPEN_STUDY_STATUSES)
        .select_related("facility", "patient", "order")
        .order_by("-updated_at", "-id")
    )
    return studies.filter(facility__code=facility) if facility else studies


# An order images may still arrive for: not cancelled, discontinued or completed.
MATCHABLE_ORDER_STATUSES = (OrderStatus.SCHEDULED, OrderStatus.IN_PROGRESS)


def orders_to_match(studies: Sequence[Study], *, limit: int = 3) -> dict[int, list[Order]]:
    """For each waiting study, the open orders of its facility that no study answers yet, the
    likeliest first: the study's own patient, then the same modality, then the newest (the ops
    worklist's one-click match). One query for all the rows."""
    facility_ids = {s.facility_id for s in studies}
    orders = list(
        Order.objects.filter(facility_id__in=facility_ids, status__in=MATCHABLE_ORDER_STATUSES)
        .filter(studies__isnull=True)
        .select_related("patient")
        .order_by("-created_at")[:200]
    )
    found = {}
    for study in studies:
        modalities = set(study.modalities.split("\\")) if study.modalities else set()
        own = [o for o in orders if o.facility_id == study.facility_id]  # never another facility's
        own.sort(key=lambda o: (o.patient_id != study.patient_id, o.modality not in modalities))
        found[study.pk] = own[:limit]
    return found


def patient_issuer_q(issuers: Sequence[str], *, path: str = "") -> Q:
    """Records whose patient's MRN was issued by one of ``issuers`` (a REST ``issuer=`` or a FHIR
    identifier system): kept under that name, or under the identity domain it names at a facility
    (docs/orders.md) — the PACS's Issuer of Patient ID finds the patients kept under the EMR's PID-3.4."""
    wanted = {i.strip() for i in issuers if i.strip()}
    where = Q(**{f"{path}assigning_authority__in": wanted})
    folded = {i.casefold() for i in wanted}
    for facility in Facility.objects.all():  # tens of facilities; one query each for its senders
        authority, names = facility.patient_id_domain()
        if folded & names:
            where |= Q(**{f"{path}facility": facility, f"{path}assigning_authority": authority})
    return where


def study_display_problems(study: Study) -> list[Instance]:
    """The study's accepted images that proved undecodable when rendered or decoded (docs/viewer.md),
    in reading order, each with its ``series`` loaded."""
    return list(
        Instance.objects.filter(series__study=study)
        .exclude(display_problem="")
        .select_related("series")
        .order_by("series__series_number", "series_id", "instance_number", "id")
    )


def display_problems_for(user, *, facility: str = "", limit: int = 50) -> list[Instance]:
    """Images that cannot be displayed, in the studies the user may see, most recently found first
    (the operations desk: every facility), with their series, study, facility and patient loaded."""
    found = (
        Instance.objects.filter(series__study__in=studies_visible_to(user))
        .exclude(display_problem="")
        .select_related("series__study__facility", "series__study__patient")
        .order_by("-display_problem_at", "-id")
    )
    if facility:
        found = found.filter(series__study__facility__code=facility)
    return list(found[:limit])


def instance_storage_path_of(sop_instance_uid: str) -> str | None:
    """Where the instance with this SOP Instance UID is stored, or None: the SCP's duplicate check,
    asked for every image received. One plain indexed SELECT: the ORM's ``filter().first()`` cost
    ~0.4 ms of Python per image (query compile, ORDER BY pk), this ~0.06 ms (issue 16)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT storage_path FROM imaging_instance WHERE sop_instance_uid = %s LIMIT 1",
            [sop_instance_uid],
        )
        row = cursor.fetchone()
    return row[0] if row else None
