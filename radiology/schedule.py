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
    # The embedded ticker's period when it must differ: there Celery is eager, so nothing runs at an
    # ``eta`` and a sweep that backs up exact timers has to run more often.
    embedded_every: timedelta | None = None

    @property
    def embedded_period(self) -> timedelta:
        return self.embedded_every or self.every


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
    # prior questions that waited for their source's pull hours (docs/priors.md)
    "priors-deferred-sweep": PeriodicTask("interfaces.tasks.priors_deferred_sweep", timedelta(minutes=5)),
    # AI ORUs that waited READROOM_AI_ORU_WAIT_HOURS for a study that never came → dead letters.
    "ai-oru-waiting-expire": PeriodicTask("interfaces.tasks.ai_orus_waiting_expire", timedelta(minutes=5)),
    # Images whose decode check (queued on commit) was lost with its task → queued again (docs/viewer.md).
    "display-checks-lost-requeue": PeriodicTask(
        "imaging.tasks.instances_display_check_lost_requeue", timedelta(minutes=10)
    ),
    # Stored image files no index row names (a writer killed mid-write, a failed commit): whole ones
    # to the quarantine, partial ones removed (docs/storage.md). It lists the whole store: daily.
    "orphan-images-sweep": PeriodicTask("interfaces.tasks.orphan_images_sweep", timedelta(days=1)),
    # Each facility's quarterly QA report, the day after its quarter ends (local time); idempotent.
    "qa-quarterly-reports": PeriodicTask("qa.tasks.quarterly_reports", timedelta(hours=6)),
    # SLA warnings (50 %, 80 %), breaches and the code-stroke steps; each step is recorded once, so
    # several beats or workers are harmless. In production stroke steps also have exact timers (eta)
    # and this is their backstop; embedded it *is* the timer, hence every 5 s there.
    "escalations-sweep": PeriodicTask(
        "worklist.tasks.escalations_sweep", timedelta(seconds=15), embedded_every=timedelta(seconds=5)
    ),
    # Studies announced as routable whose routing failed or whose announcement was lost (a process
    # killed between ingest's commit and its callback) → routed after 30 s; each one is logged.
    "studies-unrouted-route": PeriodicTask("worklist.tasks.studies_unrouted_route", timedelta(seconds=30)),
    # Repeating shift templates → Shift rows for the next 14 days; idempotent, so hourly is cheap and
    # a new template or a lifted time off shows up within the hour.
    "shift-templates-materialise": PeriodicTask(
        "worklist.coverage_tasks.shift_templates_materialise", timedelta(hours=1)
    ),
    # Abandoned claims back to the worklist (timeouts are tens of minutes: a minute is precise enough).
    "claims-timeout-sweep": PeriodicTask(
        "worklist.coverage_tasks.claims_timeout_sweep", timedelta(minutes=1)
    ),
    # A coverage gap starting within the hour → each operations user's banner, once per gap.
    "coverage-gaps-notify": PeriodicTask(
        "worklist.coverage_tasks.coverage_gaps_notify", timedelta(minutes=5)
    ),
    # An AI algorithm's PPV (last 91 days) below its facility's threshold → operations, once per
    # episode (docs/ai.md); verdicts come at signing, so hourly is soon enough.
    "ai-ppv-alerts": PeriodicTask("qa.tasks.ai_ppv_alerts_check", timedelta(hours=1)),
    # A critical result not communicated by the facility's deadline → operations (once per report).
    "critical-results-escalate": PeriodicTask(
        "reports.tasks.critical_results_escalate", timedelta(minutes=1)
    ),
}
