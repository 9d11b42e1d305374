"""Thin Celery wrappers: ids in, a service call, nothing clever."""

from celery import shared_task

from imaging.services import studies_complete_quiet
from interfaces.dicom.prior_scu import priors_fetch
from interfaces.health import interface_alerts_check
from interfaces.hl7.inbound import ai_orus_waiting_expire, hl7_inbound_drain, hl7_inbound_senders_pending
from interfaces.hl7.outbound import outbox_deliver, outbox_facilities_due, outbox_heads_probe

# A message not applied this long after it was ACKed is assumed orphaned (worker died, task lost).
ORPHAN_AFTER_SECONDS = 30.0


@shared_task(name="interfaces.tasks.hl7_inbound_drain")
def hl7_inbound_drain_task(sending_application: str, sending_facility: str) -> int:
    return hl7_inbound_drain(sending_application=sending_application, sending_facility=sending_facility)


@shared_task(name="interfaces.tasks.hl7_inbound_sweep")
def hl7_inbound_sweep() -> int:
    senders = hl7_inbound_senders_pending(older_than_seconds=ORPHAN_AFTER_SECONDS)
    for app, fac in senders:
        hl7_inbound_drain_task.delay(app, fac)
    return len(senders)


@shared_task(name="interfaces.tasks.ai_orus_waiting_expire")
def ai_orus_waiting_expire_task() -> int:
    return ai_orus_waiting_expire()


@shared_task(name="interfaces.tasks.studies_complete_quiet")
def studies_complete_quiet_task() -> int:
    return len(studies_complete_quiet())


@shared_task(name="interfaces.tasks.interface_alerts_check")
def interface_alerts_check_task() -> int:
    return len(interface_alerts_check())


@shared_task(name="interfaces.tasks.outbox_deliver")
def outbox_deliver_task(facility_id: int) -> int:
    return outbox_deliver(facility_id=facility_id)


@shared_task(name="interfaces.tasks.outbox_sweep")
def outbox_sweep() -> int:
    """Wake the deliverer of every facility whose head-of-line message is due (retries, and
    anything whose on-commit task was lost), after making due the heads whose EMR is back."""
    outbox_heads_probe()
    facilities = outbox_facilities_due()
    for facility_id in facilities:
        outbox_deliver_task.delay(facility_id)
    return len(facilities)


@shared_task(name="interfaces.tasks.priors_fetch", bind=True, max_retries=3)
def priors_fetch_task(self, patient_id: int, order_id: int | None = None, study_id: int | None = None) -> int:
    """Retried with backoff while a source is down or a prior came incomplete (docs/priors.md)."""
    last = self.request.retries >= self.max_retries
    errors = priors_fetch(
        patient_id=patient_id, order_id=order_id, study_id=study_id,
        attempt=self.request.retries + 1, last_attempt=last,
    )  # fmt: skip
    if errors and not last:
        # throw=False: the retry is scheduled either way; an eager run (tests, embedded) runs it now
        self.retry(countdown=30 * 2**self.request.retries, throw=False)
    return len(errors)


@shared_task(name="interfaces.tasks.orphan_images_sweep")
def orphan_images_sweep() -> dict[str, int]:
    """Stored image files no index row names (docs/storage.md, "Image files no row names")."""
    from dataclasses import asdict

    from interfaces.dicom.orphans import orphan_images_sweep_once

    sweep = orphan_images_sweep_once()
    return asdict(sweep) if sweep is not None else {}


@shared_task(name="interfaces.tasks.priors_deferred_sweep")
def priors_deferred_sweep() -> int:
    """Ask the prior questions that waited for their source's pull hours, and those whose task was
    lost on its way (docs/priors.md)."""
    from django.utils import timezone

    from imaging.priors import priors_deferred_due, priors_unasked_due

    now = timezone.now()
    due = priors_deferred_due(now=now) + priors_unasked_due(now=now)
    for retrieval in due:
        priors_fetch_task.delay(
            retrieval.patient_id, order_id=retrieval.order_id, study_id=retrieval.study_id
        )
    return len(due)
