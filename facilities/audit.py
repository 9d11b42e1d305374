from auditlog.registry import auditlog

from facilities.models import Facility

auditlog.register(Facility)
