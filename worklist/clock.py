"""The turnaround clock (DESIGN.md §4, §6), as pure functions."""

from __future__ import annotations

from datetime import datetime

from facilities.models import PriorityClass
from imaging.models import Study

# The contract's warning points, as shares of the window from clock start to deadline (DESIGN.md §4):
# the escalation sweep records a step at each, the worklist colours the countdown by them.
SLA_WARNING_SHARE = 0.5
SLA_CRITICAL_SHARE = 0.8


def clock_start(study: Study) -> datetime | None:
    """When the radiologist's clock starts: images complete; for a code stroke, the order time (the
    study is routed at its first image and every minute counts from the activation)."""
    if study.priority == PriorityClass.STROKE:
        ordered_at = study.order.ordered_at if study.order_id else None
        return ordered_at or study.first_received_at
    return study.completed_at


def sla_deadline(study: Study) -> datetime | None:
    start = clock_start(study)
    return None if start is None else start + study.facility.sla_target(study.priority)
