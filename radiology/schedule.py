"""The periodic schedule, declared once (DESIGN.md §2).

Celery beat reads it through ``CELERY_BEAT_SCHEDULE``; the embedded server's ticker runs the same
entries in-process. Later issues add the SLA sweep, expiry checks, QA sampling and quarterly reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class PeriodicTask:
    task: str  # dotted Celery task name
    every: timedelta


PERIODIC_TASKS: dict[str, PeriodicTask] = {
    "purge-expired-sessions": PeriodicTask("accounts.tasks.purge_expired_sessions", timedelta(hours=1)),
    # Expiry notices (90/60/30 days, overdue) to credentialing staff; idempotent, so a restart that
    # runs it again the same day tells nobody anything twice.
    "credentialing-expiries": PeriodicTask("credentialing.tasks.check_expiries", timedelta(days=1)),
    "hl7-inbound-sweep": PeriodicTask("interfaces.tasks.hl7_inbound_sweep", timedelta(seconds=30)),
    "studies-complete-quiet": PeriodicTask("interfaces.tasks.studies_complete_quiet", timedelta(seconds=10)),
    # Report outbox retries (backoff starts at 5 s, so a coarser sweep would stretch it).
    "outbox-sweep": PeriodicTask("interfaces.tasks.outbox_sweep", timedelta(seconds=10)),
    "interface-alerts-check": PeriodicTask("interfaces.tasks.interface_alerts_check", timedelta(minutes=1)),
}
