from accounts.audit import audit_register
from facilities.models import DicomSender, Facility, Hl7Sender

audit_register(Facility)
# Which sender speaks for which facility decides where orders and images land: log every change.
audit_register(Hl7Sender)
audit_register(DicomSender)
