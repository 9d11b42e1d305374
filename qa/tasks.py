from celery import shared_task
from django.utils import timezone

from qa.services import quarterly_reports_due_generate


@shared_task(name="qa.tasks.quarterly_reports")
def quarterly_reports() -> dict:
    """Daily: each facility's report for the quarter that last ended there, once."""
    return {"generated": quarterly_reports_due_generate(at=timezone.now())}
