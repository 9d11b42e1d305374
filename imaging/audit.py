"""Clinical records under audit. Series and Instance rows are written by ingest, one per image;
their arrival is recorded by the interface message tables (issue: ingest), not row by row here."""

from auditlog.registry import auditlog

from imaging.models import Order, Patient, Study

auditlog.register(Patient)
auditlog.register(Order)
auditlog.register(Study)
