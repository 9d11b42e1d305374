"""Which studies a user may see: the one place that decides it (DESIGN.md §7).

* operations and the medical director: every study (workflow and QA span all clients);
* a facility admin: their own facility's studies (the hospital's PACS account sends and queries
  through DICOMweb with it);
* a radiologist: the studies the eligibility engine lets them read now, and the studies of the
  peer-review cases assigned to them (a review waits for them off shift too);
* credentialing staff: none — they never see patient data.
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
from imaging.models import Study
from imaging.ohif import URL_PREFIX, ohif_available


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
