"""Who may do what over DICOMweb — built only on the selectors that decide it for the whole
product (``imaging.selectors.studies_visible_to``, ``facilities.selectors``), so DICOMweb can never
show more than the pages do.

* Reads (QIDO/WADO): the studies ``studies_visible_to(user)`` returns; anything else answers 404,
  the same as a missing study, so UIDs of another client cannot be probed.
* Store (STOW): into a facility the caller administers (facility admin, operations); a reader
  stores only the objects they make in the viewer (measurement SRs, key-object selections) and
  only into a study they may read now (``reader_stow_study``).
* Credentialing staff never see patient data (DESIGN.md §1): refused outright.
* Every read of images or metadata leaves an audit row (``record_phi_access``) — once per request
  per study; rendered frames once per user, study and window of minutes (a viewer fetches
  hundreds of frames a minute, and one row per frame would drown the audit log).
* Every request is authenticated (session or token) and role-checked as it comes. The per-study
  decision — for a radiologist, their licences, privileges, cover and shifts, ~10 queries — is
  held for a few seconds per user and study once it said yes (``_grant_held``): a viewer opening a
  300-slice series asks it once, not 300 times (docs/viewer.md, "Feeding OHIF fast"). A no is
  never held.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS
from django.db.models import QuerySet
from django.http import Http404

from accounts.audit import ReadKind, record_phi_access
from accounts.roles import Role, has_role
from facilities.models import Facility
from facilities.selectors import facilities_administered_by
from imaging.models import Instance, Series, Study
from imaging.selectors import may_read_patient_data, studies_visible_to


def may_use_images(user) -> bool:
    """Roles whose work involves images at all (those whose work involves patient data);
    credentialing staff's does not."""
    return may_read_patient_data(user)


def studies_for(user) -> QuerySet[Study]:
    return studies_visible_to(user)


def series_for(user) -> QuerySet[Series]:
    return Series.objects.filter(study__in=studies_visible_to(user))


def instances_for(user) -> QuerySet[Instance]:
    return Instance.objects.filter(series__study__in=studies_visible_to(user))


def study_by_uid(user, study_uid: str) -> Study:
    granted = _grant_held(user, study_uid)
    if granted is not None:
        study = Study.objects.select_related("facility", "patient").filter(pk=granted).first()
        if study is not None and study.study_instance_uid == study_uid:
            return study
    study = (
        studies_for(user).select_related("facility", "patient").filter(study_instance_uid=study_uid).first()
    )
    if study is None:
        raise Http404("No such study")
    _grant_hold(user, study)
    return study


# --- the per-study decision, held briefly --------------------------------------------------------


def _grant_seconds() -> int:
    return int(getattr(settings, "READROOM_DICOMWEB_GRANT_SECONDS", 10))


# (user id, Study Instance UID) → (study id, held until): this process's grants. Not the shared
# cache: a Redis round trip per frame is what holding the decision saves, and each web process
# deciding once per window costs little. Bounded: expired grants go when it is full.
_GRANTS: dict[tuple[int, str], tuple[int, float]] = {}
_GRANTS_MAX = 4096


def _grant_held(user, study_uid: str) -> int | None:
    """The study's id when ``studies_visible_to(user)`` granted it in this process within the last
    ``READROOM_DICOMWEB_GRANT_SECONDS`` (default 10; 0: decide on every request).

    Why a grant may be held at all: a viewer asks for a study's frames hundreds of times within
    seconds, and the decision is the same each time unless a credential, shift or routing changed in
    between; the longest a change can lag for DICOMweb is these seconds, for a study the reader's
    viewer had already opened (pages, the report and its signature decide on every request).
    Authentication, the session's lock and the role are checked on every request regardless. What
    is held is a study id, no patient data."""
    if _grant_seconds() <= 0:
        return None
    held = _GRANTS.get((user.pk, study_uid))
    if held is None:
        return None
    study_id, until = held
    return study_id if time.time() < until else None


def study_granted(user, study_uid: str) -> bool:
    """Whether this process holds a yes for ``user`` and the study now (``_grant_held``). The fast
    frame path (``web_fast``) serves only under one; without it the request goes to the view, which
    decides afresh."""
    return _grant_held(user, study_uid) is not None


def _grant_hold(user, study: Study) -> None:
    seconds = _grant_seconds()
    if seconds <= 0:
        return
    now = time.time()
    if len(_GRANTS) >= _GRANTS_MAX:
        for key in [key for key, (_, until) in list(_GRANTS.items()) if until <= now]:
            _GRANTS.pop(key, None)
        if len(_GRANTS) >= _GRANTS_MAX:
            _GRANTS.clear()
    _GRANTS[(user.pk, study.study_instance_uid)] = (study.pk, now + seconds)


def series_by_uid(user, study_uid: str, series_uid: str) -> Series:
    series = (
        series_for(user)
        .select_related("study__facility", "study__patient")
        .filter(study__study_instance_uid=study_uid, series_instance_uid=series_uid)
        .first()
    )
    if series is None:
        raise Http404("No such series")
    return series


def instances_in(
    user, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
) -> tuple[Study, list[Instance]]:
    """The study and its instances in scope of a WADO-RS request, in reading order; 404 when the
    study, series or instance is missing or not the caller's."""
    study = study_by_uid(user, study_uid)
    instances = Instance.objects.filter(series__study=study).select_related("series")
    if series_uid is not None:
        instances = instances.filter(series__series_instance_uid=series_uid)
    if sop_uid is not None:
        instances = instances.filter(sop_instance_uid=sop_uid)
    found = list(instances.order_by("series__series_number", "series_id", "instance_number", "id"))
    if not found:
        raise Http404("No such instance" if sop_uid else "No such series" if series_uid else "No instances")
    return study, found


def instance_by_uid(
    user, study_uid: str, series_uid: str, sop_uid: str, *, held_rows: bool = False
) -> Instance:
    """One instance with its series and study (and the study's facility); 404 as ``instances_in``.
    Under a held grant one query: a viewer asks this for every frame. ``held_rows`` (the fast frame
    path): under a held grant, the study's rows as this process read them within the grant's
    window (``granted_rows``), no query at all."""
    granted = _grant_held(user, study_uid)
    if granted is not None:
        if held_rows:
            instance = granted_rows(granted, study_uid).get((series_uid, sop_uid))
            if instance is not None:
                return instance
        instance = (
            # no patient: a frame, a rendering or bulk data never names them (fewer columns to build)
            Instance.objects.select_related("series__study__facility")
            .filter(
                series__study_id=granted,
                series__study__study_instance_uid=study_uid,
                series__series_instance_uid=series_uid,
                sop_instance_uid=sop_uid,
            )
            .first()
        )
        if instance is not None:
            return instance
    study, instances = instances_in(user, study_uid, series_uid, sop_uid)
    instance = instances[0]
    instance.series.study = study  # already loaded, with facility and patient
    return instance


# study id → (held until, study UID, (series UID, SOP UID) → instance): the index rows of studies
# granted in this process, read once per grant window instead of once per frame. Not permission
# data (the grant is checked first, per user); bounded.
_ROWS: dict[int, tuple[float, str, dict[tuple[str, str], Instance]]] = {}
_ROWS_MAX = 32
# What a frame needs of its row; the rest is deferred (read from the database if ever asked for).
# Values, not model instances with their series, study and facility: a 300-slice study's rows
# cost ~1 ms this way, ~35 ms as related models.
_ROW_FIELDS = frozenset({"id", "series_id", "sop_instance_uid", "transfer_syntax_uid", "storage_path"})


def granted_rows(study_id: int, study_uid: str) -> dict[tuple[str, str], Instance]:
    """A granted study's instances, read at most once per ``READROOM_DICOMWEB_GRANT_SECONDS`` in this
    process. What a row can miss within that window: an instance added since (not found here: the
    caller queries it), or a re-sent file's new transfer syntax (the frames path compares the row with
    the file and drops the rows when they differ, ``granted_rows_drop``)."""
    now = time.time()
    held = _ROWS.get(study_id)
    if held is not None and now < held[0]:
        return held[2]
    names = [f.attname for f in Instance._meta.concrete_fields if f.attname in _ROW_FIELDS]
    rows = Instance.objects.filter(
        series__study_id=study_id, series__study__study_instance_uid=study_uid
    ).values_list("series__series_instance_uid", *names)
    instances = {}
    for series_uid, *values in rows:
        instance = Instance.from_db(DEFAULT_DB_ALIAS, names, values)
        instances[(series_uid, instance.sop_instance_uid)] = instance
    if len(_ROWS) >= _ROWS_MAX:
        _ROWS.clear()
    _ROWS[study_id] = (now + _grant_seconds(), study_uid, instances)
    return instances


def granted_rows_drop(study_uid: str) -> None:
    for study_id in [key for key, (_, uid, _) in list(_ROWS.items()) if uid == study_uid]:
        _ROWS.pop(study_id, None)


# --- audit ---------------------------------------------------------------------------------------


def study_read_record(user, study: Study, *, kind: ReadKind) -> None:
    """Record that ``user`` read this study's images or metadata (one audit row, of ``kind``)."""
    record_phi_access(study, kind=kind)


def study_frames_read_record(user, study: Study) -> None:
    """Rendered frames and raw frames: one audit row per user and study per window
    (``READROOM_AUDIT_FRAME_WINDOW_SECONDS``, default 300 s), however many frames were fetched."""
    window = int(getattr(settings, "READROOM_AUDIT_FRAME_WINDOW_SECONDS", 300))
    if window <= 0 or cache.add(frames_read_key(user, study.study_instance_uid), 1, window):
        study_read_record(user, study, kind=ReadKind.DICOMWEB_FRAMES)


def frames_read_key(user, study_uid: str) -> str:
    """The shared cache's key that says this user's frames row for the study is written in the
    current window (``study_frames_read_record``): while it exists no row is due."""
    return f"readroom:frame-read:{user.pk}:{study_uid}"


# --- store ---------------------------------------------------------------------------------------


class StoreRefused(Exception):
    """The caller may not store here: HTTP status and what to do about it."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def stow_facility(user, code: str | None) -> Facility:
    """The facility a STOW-RS request stores into.

    ``?facility=CODE`` names it (operations, or an admin of several facilities must name it); a
    facility admin of exactly one facility may leave it out. A code the caller does not administer
    is refused with the same answer whether it exists or not (no probing of client codes)."""
    administered = facilities_administered_by(user)
    if code:
        facility = administered.filter(code=code).first()
        if facility is None:
            raise StoreRefused(
                403,
                f"You do not administer a facility with code {code!r}; images are stored "
                "only into a facility you administer.",
            )
    elif user.is_superuser or has_role(user, Role.OPERATIONS):
        # Operations may store for any client: never guess which one.
        raise StoreRefused(400, "Name the facility these images belong to with ?facility=CODE.")
    else:
        choices = list(administered.order_by("code")[:2])
        if not choices:
            raise StoreRefused(
                403,
                "Storing images needs a facility admin or operations account (an API token of the "
                "hospital's PACS account).",
            )
        if len(choices) > 1:
            raise StoreRefused(
                400,
                "You administer several facilities: name the one these images belong to with ?facility=CODE.",
            )
        facility = choices[0]
    if not facility.active:
        raise StoreRefused(403, f"Facility {facility.code} is inactive; it cannot receive images.")
    return facility


# A reader stores what they make in the viewer from the images, never images (docs/viewer.md).
READER_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
        "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
        "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR (OHIF's TID 1500 measurement report)
        "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
        "1.2.840.10008.5.1.4.1.1.88.59",  # Key Object Selection Document
    }
)


def stores_as_reader(user) -> bool:
    """A radiologist who administers no facility: their STOW requests are the viewer's saves."""
    if user.is_superuser or has_role(user, Role.OPERATIONS):
        return False
    return has_role(user, Role.RADIOLOGIST) and not facilities_administered_by(user).exists()


def reader_stow_study(user, study_uid: str, sop_class_uid: str) -> Study:
    """The study a reader's object goes into: one they may read now, and an object of a class a
    reader makes (``READER_SOP_CLASSES``). Raises StoreRefused with the reason."""
    if sop_class_uid not in READER_SOP_CLASSES:
        raise StoreRefused(
            0x0122,  # PS3.4 Annex B: SOP Class not supported
            "A reader stores measurements and key images (DICOM SR, key-object selection), not images.",
        )
    study = studies_for(user).select_related("facility").filter(study_instance_uid=study_uid).first()
    if study is None:
        # The same answer for a missing study as for another facility's (no probing).
        raise StoreRefused(0x0110, f"Study {study_uid} is not one you may read now.")
    return study
