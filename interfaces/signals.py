"""Signals of the interfaces app.

* ``outbound_acknowledged(sender=OutboundMessage, message_id=int, source=str, acked_at=datetime)`` —
  the receiving system accepted (AA/CA) an outbound message; sent after that is committed. ``source``
  is what the enqueuer wrote (reports: ``report:<id>:final`` …), so the owner can record delivery
  (the TAT's "delivered" milestone) without interfaces knowing about reports."""

from django.dispatch import Signal

outbound_acknowledged = Signal()
