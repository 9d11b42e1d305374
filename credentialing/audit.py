from auditlog.registry import auditlog

from credentialing.models import RadiologistProfile

auditlog.register(RadiologistProfile, m2m_fields={"subspecialties"})
