"""Turnaround (TAT) timestamps of a study (DESIGN.md §6: exam complete → final is the radiologist's
TAT; order → final and final → EMR ACK are recorded too).

Milestones kept elsewhere are read where they live: order ``Order.ordered_at``, first image
``Study.first_received_at``, images complete ``Study.completed_at``, routed ``StudyAssignment.routed_at``.
The rest are ``StudyTurnaround`` fields, each set once by ``study_milestone_record``: a compare-and-set
(``UPDATE … WHERE <field> IS NULL``), so a second claim, a re-opened viewer, an addendum or a resent
ORU never moves a milestone. Reports call it for ``prelim``, ``final`` and ``delivered``."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from worklist.models import StudyAssignment, StudyTurnaround

MILESTONES: tuple[str, ...] = ("first_claimed", "opened", "prelim", "final", "delivered")


class UnknownMilestone(ValueError):
    pass


@transaction.atomic
def study_milestone_record(*, study_id: int, milestone: str, at: datetime) -> bool:
    """Set ``milestone`` of the study to ``at`` unless it is already set; True if this call set it."""
    if milestone not in MILESTONES:
        raise UnknownMilestone(f"{milestone!r} is not one of {', '.join(MILESTONES)}")
    field = f"{milestone}_at"
    # get_or_create survives two creators: the loser's INSERT fails in a savepoint and it reads the row
    StudyTurnaround.objects.get_or_create(study_id=study_id)
    changed = StudyTurnaround.objects.filter(study_id=study_id, **{f"{field}__isnull": True}).update(
        **{field: at}
    )
    return bool(changed)


def study_viewer_opened(*, study_id: int, user, at: datetime) -> bool:
    """The viewer was opened: the *opened* milestone is the first time the study's holder opens it
    (operations or an unclaimed reader looking at images does not start the read)."""
    if not StudyAssignment.objects.filter(study_id=study_id, claimed_by=user).exists():
        return False
    return study_milestone_record(study_id=study_id, milestone="opened", at=at)


def _minutes(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else round((end - start).total_seconds() / 60, 1)


def study_turnaround(study) -> dict:
    """Every milestone of ``study`` (loaded with ``order``, ``assignment`` and ``turnaround`` to avoid
    queries) and the durations the contract measures, in minutes."""
    assignment = getattr(study, "assignment", None) if _has(study, "assignment") else None
    turnaround = getattr(study, "turnaround", None) if _has(study, "turnaround") else None
    times = {
        "ordered_at": study.order.ordered_at if study.order_id else None,
        "first_image_at": study.first_received_at,
        "images_complete_at": study.completed_at,
        "routed_at": assignment.routed_at if assignment else None,
        **{f"{m}_at": getattr(turnaround, f"{m}_at", None) for m in MILESTONES},
    }
    return {**times, "minutes": turnaround_minutes(times)}


def turnaround_minutes(times: dict) -> dict:
    """The durations the contract measures, in minutes, from ``study_turnaround``'s times."""
    return {
        "complete_to_final": _minutes(times["images_complete_at"], times["final_at"]),
        "order_to_final": _minutes(times["ordered_at"], times["final_at"]),
        "final_to_delivered": _minutes(times["final_at"], times["delivered_at"]),
    }


def _has(study, relation: str) -> bool:
    try:
        getattr(study, relation)
    except (StudyAssignment.DoesNotExist, StudyTurnaround.DoesNotExist):
        return False
    return True
