"""Signals of the reports app, sent after the signing transaction commits.

* ``report_signed(sender=Report, report_id=int, kind="preliminary" | "final" | "addendum")`` —
  delivery (ORU to the EMR) and QA (peer-review sampling) listen."""

from django.dispatch import Signal

report_signed = Signal()
