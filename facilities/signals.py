"""Signals the facilities app sends; higher apps listen (a lower app never imports a higher one)."""

from django.dispatch import Signal

# Sent by onboarding after a facility's MRN domain changed (``patients:`` keys, or an HL7 sender whose
# MSH-4 is one of the domain's names): ``facility``, ``actor``. A receiver may return lines for the
# onboarding output (imaging merges the records that became duplicates, docs/orders.md).
identity_domain_changed = Signal()
