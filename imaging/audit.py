"""Clinical records under audit. Series and Instance rows are written by ingest, one per image;
their arrival is recorded by the interface message tables (issue: ingest), not row by row here."""

from accounts.audit import audit_register
from imaging.models import HistoricalReport, Order, Patient, Study

audit_register(Patient)
audit_register(Order)
audit_register(Study)
audit_register(HistoricalReport)
