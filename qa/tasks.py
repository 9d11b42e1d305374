from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from qa.ai_metrics import ai_ppv_alerts_raise
from qa.services import quarterly_reports_due_generate


@shared_task(name="qa.tasks.quarterly_reports")
def quarterly_reports() -> dict:
    """Daily: each facility's report for the quarter that last ended there, once."""
    return {"generated": quarterly_reports_due_generate(at=timezone.now())}


# The window an algorithm's PPV is judged over: a rolling quarter, the quarterly pack's span.
AI_PPV_WINDOW = timedelta(days=91)


@shared_task(name="qa.tasks.ai_ppv_alerts_check")
def ai_ppv_alerts_check() -> int:
    """Hourly: an algorithm whose PPV over the last quarter fell below its facility's threshold
    alerts operations once per episode (``ai_ppv_alerts_raise``: idempotent, so a second beat or a
    restart raises nothing twice)."""
    now = timezone.now()
    return len(ai_ppv_alerts_raise(start=now - AI_PPV_WINDOW, end=now, at=now))
