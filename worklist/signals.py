"""Signals the worklist sends; higher apps listen (a lower app never imports a higher one).

``study_order_unmatched`` — sent **inside** the transaction of ``worklist.order_match.study_order_unmatch``,
after the study lost its order, with ``study_id``, ``order_id`` (the order it had) and ``actor``.
Sent with ``send`` (not ``send_robust``): a receiver that raises rolls the unmatch back. Reports
listens: it locks the study's report, refuses when it is signed (``UnmatchSigned``, a 409) and
refreshes a draft's merge fields the reader had not changed (docs/orders.md). A receiver returns a
dict for the ``order_unmatched`` event's detail, or None."""

from django.dispatch import Signal

study_order_unmatched = Signal()
