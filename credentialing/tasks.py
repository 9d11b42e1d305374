from celery import shared_task
from django.utils import timezone

from credentialing.services import expiries_check


@shared_task(name="credentialing.tasks.check_expiries")
def check_expiries() -> dict:
    """Daily: notify credentialing staff of expiries (90/60/30 days, overdue) and close lapsed grants."""
    run = expiries_check(at=timezone.now())
    return {"notified": run.notified, "emails": run.emails, "lapsed": run.lapsed}
