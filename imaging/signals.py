"""Ingest's announcements to routing. Sent after the transaction commits, with ``study_id``.

* ``study_routable``: a study may be routed now — its images are complete, or it is a stroke
  study and its first image has arrived (DESIGN.md §4).
* ``study_cancelled``: the order was cancelled; routing takes it off worklists unless it was read.
"""

from django.dispatch import Signal

study_routable = Signal()
study_cancelled = Signal()
