"""Events to the live screens, sent after the transaction commits (DESIGN.md §7): a screen must
never show what a rollback undid."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from worklist.groups import OPERATIONS_GROUP


def group_event_send(group: str, event: dict) -> None:
    """Queue ``event`` for every socket in ``group`` once the current transaction commits."""

    def send() -> None:
        async_to_sync(get_channel_layer().group_send)(group, {"type": "worklist.event", "event": event})

    transaction.on_commit(send)


def operations_event_send(event: dict) -> None:
    group_event_send(OPERATIONS_GROUP, event)
