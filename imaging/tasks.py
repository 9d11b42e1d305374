"""Thin Celery wrappers: ids in, a service call, nothing clever."""

from celery import shared_task

from imaging.services import (
    instance_display_check,
    instances_display_check,
    instances_display_check_lost_requeue,
)

# The decode checks are the bulk of the queue: one batch per group of images, hundreds for a study
# and for each prior. They go to a lower-priority list of the same queue (kombu's Redis transport
# keeps one list per priority step, 0 first), so an order's apply, a prior retrieval, an alert or a
# delivery queued behind a study's checks is taken first. Every worker consumes every step of the
# queue: no worker command changes. 0 (the default of every other task) is the highest.
BULK_PRIORITY = 6


@shared_task(name="imaging.tasks.instance_display_check", priority=BULK_PRIORITY)
def instance_display_check_task(instance_id: int) -> str:
    return instance_display_check(instance_id=instance_id)


@shared_task(name="imaging.tasks.instances_display_check", priority=BULK_PRIORITY)
def instances_display_check_task(instance_ids: list[int]) -> list[str]:
    return instances_display_check(instance_ids=instance_ids)


@shared_task(name="imaging.tasks.instances_display_check_lost_requeue")
def instances_display_check_lost_requeue_task() -> int:
    return instances_display_check_lost_requeue()
