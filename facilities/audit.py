from auditlog.registry import auditlog

from facilities.models import DicomSender, Facility, Hl7Sender

auditlog.register(Facility)
# Which sender speaks for which facility decides where orders and images land: log every change.
auditlog.register(Hl7Sender)
auditlog.register(DicomSender)
