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
from datetime import datetime
from urllib.parse import urlencode

from django.db.models import F, QuerySet
from django.http import Http404
from django.utils import timezone

from accounts.audit import record_phi_access
from accounts.roles import Role, has_role
from credentialing.eligibility import readable_studies_q
from facilities.selectors import facilities_administered_by
from imaging.models import Order, Patient, Study
from imaging.ohif import URL_PREFIX, ohif_available

# Roles whose work involves patient data at all (DESIGN.md §1); credentialing staff's does not.
PATIENT_DATA_ROLES = (Role.RADIOLOGIST, Role.MEDICAL_DIRECTOR, Role.FACILITY_ADMIN, Role.OPERATIONS)


def may_read_patient_data(user) -> bool:
    return bool(user and user.is_authenticated and (user.is_superuser or has_role(user, *PATIENT_DATA_ROLES)))


def studies_visible_to(user, *, at: datetime | None = None) -> QuerySet[Study]:
    if not user.is_authenticated:
        return Study.objects.none()
    if user.is_superuser or has_role(user, Role.OPERATIONS, Role.MEDICAL_DIRECTOR):
        return Study.objects.all()
    visible = Study.objects.none()
    if has_role(user, Role.FACILITY_ADMIN):
        visible = visible | Study.objects.filter(facility__in=facilities_administered_by(user))
    if has_role(user, Role.RADIOLOGIST):
        visible = visible | Study.objects.filter(readable_studies_q(user, at or timezone.now()))
        visible = visible | Study.objects.filter(pk__in=_review_study_ids(user))
    return visible


def _review_study_ids(user) -> QuerySet:
    # qa builds on imaging; imported here, at call time, to keep the dependency one-way at import
    from qa.models import PeerReview, ReviewStatus

    return PeerReview.objects.filter(reviewer=user, status=ReviewStatus.ASSIGNED).values("report__study_id")


def access_study(user, study_id: int) -> Study:
    """Fetch a study the user may see, record the read in the audit log, or 404 (the same answer
    for another facility's study as for a missing one)."""
    study = (
        studies_visible_to(user).select_related("facility", "patient", "order").filter(pk=study_id).first()
    )
    if study is None:
        raise Http404("No such study")
    record_phi_access(study)
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
    record_phi_access(order)
    return order


def access_patient(user, patient_id: int) -> Patient:
    """Fetch a patient the user may see and record the read, or 404 (as for a missing one)."""
    patient = patients_visible_to(user).select_related("facility").filter(pk=patient_id).first()
    if patient is None:
        raise Http404("No such patient")
    record_phi_access(patient)
    return patient


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


def ohif_viewer_url(study: Study, *, prior_uids: Sequence[str] = ()) -> str | None:
    """Where OHIF opens this study (first, in the viewport) with its priors beside it in the study
    browser; None when OHIF is not installed (the caller falls back to the built-in viewer).
    The caller passes priors the reader may see (``study_priors``): the page refuses any other."""
    if not ohif_available():
        return None
    uids = [study.study_instance_uid, *(u for u in prior_uids if u != study.study_instance_uid)]
    return f"{URL_PREFIX}viewer?{urlencode({'StudyInstanceUIDs': ','.join(uids)})}"
