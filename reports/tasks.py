"""Thin Celery wrappers: ids in, a service call, nothing clever."""

from celery import shared_task
from django.utils import timezone

from reports.services import critical_results_escalate


@shared_task(name="reports.tasks.critical_results_escalate")
def critical_results_escalate_task() -> int:
    return len(critical_results_escalate(now=timezone.now()))
