"""Thin Celery wrappers for coverage and assignment (periodic; radiology/schedule.py). Kept apart from
``worklist/tasks.py`` (escalation's) and imported by ``WorklistConfig.ready`` so beat, workers and the
embedded ticker all find them."""

from celery import shared_task
from django.utils import timezone

from worklist.assignment import claims_timeout_sweep
from worklist.coverage import coverage_gaps_notify, shift_templates_materialise


@shared_task(name="worklist.coverage_tasks.shift_templates_materialise")
def shift_templates_materialise_task() -> int:
    return shift_templates_materialise(at=timezone.now())


@shared_task(name="worklist.coverage_tasks.claims_timeout_sweep")
def claims_timeout_sweep_task() -> int:
    return len(claims_timeout_sweep(at=timezone.now()))


@shared_task(name="worklist.coverage_tasks.coverage_gaps_notify")
def coverage_gaps_notify_task() -> int:
    return coverage_gaps_notify(at=timezone.now())
