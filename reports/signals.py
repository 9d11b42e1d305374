"""Signals other apps connect to (issue 6, delivery).

``report_signed`` — sent **after the transaction that signed commits** (never for a rollback), once
per signature, with keyword arguments:

* ``report_id``: ``reports.Report`` primary key;
* ``kind``: ``"preliminary"`` (a wet read, HL7 OBR-25 P), ``"final"`` (OBR-25 F) or ``"addendum"``
  (a correction to a final report, OBR-25 C);
* ``addendum_id``: the ``reports.Addendum`` primary key for kind ``"addendum"``, else ``None``.

The sender is ``reports.models.Report``. Delivery (the ORU outbox) connects here; a receiver that
raises is logged and does not affect the signature, which is already committed."""

from django.dispatch import Signal

REPORT_SIGNED_KINDS = ("preliminary", "final", "addendum")

report_signed = Signal()

# ``report_screen`` — the reading screen's report context changed (issue 14), sent by the views with
# keyword arguments ``report``, ``study``, ``user``, ``session_key`` and ``action``:
# ``"opened"`` (the claimant's editor showed the report) or ``"signed"`` (the claimant signed it from
# the editor; sent after the signature committed). The FHIRcast hub (interfaces.fhircast) publishes
# DiagnosticReport-open / -update / -close and ImagingStudy-close to that session's topic.
REPORT_SCREEN_ACTIONS = ("opened", "signed")

report_screen = Signal()
