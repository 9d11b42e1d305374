"""Thin Celery wrappers: ids in, a service call, nothing clever."""

from celery import shared_task

from imaging.services import (
    instance_display_check,
    instances_display_check,
    instances_display_check_lost_requeue,
)


@shared_task(name="imaging.tasks.instance_display_check")
def instance_display_check_task(instance_id: int) -> str:
    return instance_display_check(instance_id=instance_id)


@shared_task(name="imaging.tasks.instances_display_check")
def instances_display_check_task(instance_ids: list[int]) -> list[str]:
    return instances_display_check(instance_ids=instance_ids)


@shared_task(name="imaging.tasks.instances_display_check_lost_requeue")
def instances_display_check_lost_requeue_task() -> int:
    return instances_display_check_lost_requeue()
