from accounts.audit import audit_register
from worklist.models import CatalogueRule, Shift, ShiftTemplate, TimeOff

# Who was on shift decides who may read: changes to coverage are audited like credentials.
audit_register(Shift, m2m_fields={"facilities", "subspecialties"})

# The catalogue decides which readers see a study: changes to it are audited too.
audit_register(CatalogueRule)

# Templates and time off write the rota: who changed them matters as much as the shifts themselves.
audit_register(ShiftTemplate, m2m_fields={"facilities", "subspecialties"})
audit_register(TimeOff)
