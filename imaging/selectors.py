"""Which studies a user may see: the one place that decides it (DESIGN.md §7).

* operations and the medical director: every study (workflow and QA span all clients);
* a facility admin: their own facility's studies (the hospital's PACS account sends and queries
  through DICOMweb with it);
* a radiologist: the studies the eligibility engine lets them read now;
* credentialing staff: none — they never see patient data.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone

from accounts.audit import record_phi_access
from accounts.roles import Role, has_role
from credentialing.eligibility import readable_studies_q
from facilities.selectors import facilities_administered_by
from imaging.models import Study


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
    return visible


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
