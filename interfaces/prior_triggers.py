"""When to ask a facility's prior sources (docs/priors.md): a new order, or the first image of a study
that came without one. Enqueued after commit; nothing is asked of a facility without prior sources."""

from __future__ import annotations

from django.db import transaction


def on_order_saved(sender, instance, created: bool, **kwargs) -> None:
    if created and instance.facility.prior_sources:
        _enqueue(instance.patient_id, order_id=instance.pk)


def on_study_saved(sender, instance, created: bool, **kwargs) -> None:
    new_without_order = created and not instance.prior_state and instance.order_id is None
    if new_without_order and instance.patient_id and instance.facility.prior_sources:
        _enqueue(instance.patient_id, study_id=instance.pk)


def _enqueue(patient_id: int, **ids) -> None:
    from interfaces.tasks import priors_fetch_task

    transaction.on_commit(lambda: priors_fetch_task.delay(patient_id, **ids))
