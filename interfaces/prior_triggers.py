"""When to ask a facility's prior sources (docs/priors.md): a new order, or the first image of a study
that came without one. The question is written with it (PENDING, one per source) and its task enqueued
after commit; a task lost on the way is asked again by the sweep (``imaging.priors.priors_unasked_due``).
Nothing is asked of a facility without prior sources."""

from __future__ import annotations

from django.db import transaction


def on_order_saved(sender, instance, created: bool, **kwargs) -> None:
    if created and instance.facility.prior_sources:
        _ask(instance.facility, instance.patient_id, order_id=instance.pk)


def on_study_saved(sender, instance, created: bool, **kwargs) -> None:
    new_without_order = created and not instance.prior_state and instance.order_id is None
    if new_without_order and instance.patient_id and instance.facility.prior_sources:
        _ask(instance.facility, instance.patient_id, study_id=instance.pk)


def _ask(facility, patient_id: int, **ids) -> None:
    # by id: the first image's ingest (the SCP's path) reads no Patient row for it
    from imaging.priors import prior_questions_record
    from interfaces.tasks import priors_fetch_task

    prior_questions_record(facility=facility, patient_id=patient_id, **ids)
    # robust: a broker that is down must not fail the order's apply (committed already) nor skip the
    # other callbacks of its transaction; the sweep asks the recorded question later
    transaction.on_commit(lambda: priors_fetch_task.delay(patient_id, **ids), robust=True)
