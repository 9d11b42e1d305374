"""The worklist: which open studies a user sees, in reading order (DESIGN.md §1, issue 4).

* a radiologist: the studies they hold, then the unclaimed studies they are eligible for now
  (``credentialing.eligibility.readable_studies_q`` — one indexed query, whatever the archive size:
  ``bench/worklist``);
  never a study someone else holds;
* operations and the medical director: every open study, held or not.

Order: held by me first, then priority class (stroke first), then the SLA deadline."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Case, F, IntegerField, Q, QuerySet, Value, When

from accounts.roles import Role, has_role
from credentialing.eligibility import readable_studies_q
from facilities.models import PriorityClass
from imaging.models import OPEN_STUDY_STATUSES, Study

PRIORITY_RANK = Case(
    *(When(priority=p.value, then=Value(rank)) for rank, p in enumerate(PriorityClass)),
    default=Value(len(PriorityClass)),
    output_field=IntegerField(),
)


# What a worklist row shows besides the study (loaded with it: no query per row).
WORKLIST_RELATED = ("facility", "subspecialty", "order", "patient", "assignment__claimed_by")


def worklist_for(user, *, at: datetime, filters: dict[str, str] | None = None) -> QuerySet[Study]:
    filters = filters or {}
    studies = Study.objects.filter(assignment__isnull=False, status__in=OPEN_STUDY_STATUSES).select_related(
        *WORKLIST_RELATED
    )
    if user.is_superuser or has_role(user, Role.OPERATIONS, Role.MEDICAL_DIRECTOR):
        mine_first = Value(1)
    elif has_role(user, Role.RADIOLOGIST):
        # What I hold (even if my shift just ended: I may finish it), else what I may claim now. The
        # held ids are fetched first: with every branch of the OR on the study's own columns,
        # PostgreSQL combines the open-study index per facility (a bitmap OR) instead of scanning
        # every routing row of the archive.
        held = list(
            Study.objects.filter(status__in=OPEN_STUDY_STATUSES, assignment__claimed_by=user).values_list(
                "pk", flat=True
            )
        )
        studies = studies.filter(
            Q(pk__in=held) | (Q(assignment__claimed_by__isnull=True) & readable_studies_q(user, at))
        )
        mine_first = Case(When(pk__in=held, then=Value(0)), default=Value(1))
    else:
        return Study.objects.none()
    studies = _filtered(studies, filters)
    return studies.annotate(mine_first=mine_first, priority_rank=PRIORITY_RANK).order_by(
        "mine_first", "priority_rank", F("assignment__sla_deadline").asc(nulls_last=True), "id"
    )


def _filtered(studies: QuerySet[Study], filters: dict[str, str]) -> QuerySet[Study]:
    if filters.get("facility"):
        studies = studies.filter(facility__code=filters["facility"])
    if filters.get("modality"):
        studies = studies.filter(modalities__contains=filters["modality"].upper())
    if filters.get("subspecialty"):
        studies = studies.filter(subspecialty__code=filters["subspecialty"])
    if filters.get("priority"):
        studies = studies.filter(priority=filters["priority"].upper())
    if filters.get("accession"):
        studies = studies.filter(accession_number=filters["accession"])
    return studies
