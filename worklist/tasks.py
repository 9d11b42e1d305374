"""Thin Celery wrappers: ids in, a service call, nothing clever."""

from celery import shared_task
from django.utils import timezone

from worklist.escalation import escalations_sweep, stroke_step_fire
from worklist.notifier import escalation_deliveries_send
from worklist.services import studies_unrouted_route


@shared_task(name="worklist.tasks.escalations_sweep")
def escalations_sweep_task() -> int:
    return len(escalations_sweep())


@shared_task(name="worklist.tasks.studies_unrouted_route")
def studies_unrouted_route_task() -> int:
    return len(studies_unrouted_route())


@shared_task(name="worklist.tasks.stroke_step_fire")
def stroke_step_fire_task(study_id: int, step: str) -> bool:
    """The exact timer of a code-stroke step (scheduled with ``eta``); a no-op if claimed or done."""
    return stroke_step_fire(study_id=study_id, step=step, at=timezone.now()) is not None


@shared_task(name="worklist.tasks.escalation_deliveries_send")
def escalation_deliveries_send_task(escalation_id: int) -> int:
    return escalation_deliveries_send(escalation_id=escalation_id)
