"""Reports and templates under audit.

* Templates, versions and macros: who created each, with the facility in every row
  (``get_additional_data``).
* Reports: a draft's ``values`` change on every autosave (every few seconds while a radiologist
  types), so they are left out of the change rows; what was signed is kept in full on the report
  itself (``signed_text`` and its SHA-256) and cannot change afterwards."""

from accounts.audit import audit_register
from reports.models import (
    Addendum,
    Charge,
    CriticalResultCommunication,
    Macro,
    Report,
    ReportTemplate,
    SigningAttempt,
    TemplateVersion,
)

audit_register(ReportTemplate)
audit_register(TemplateVersion)
audit_register(Macro)
audit_register(Report, exclude_fields=("values", "updated_at"))
audit_register(Addendum)
audit_register(CriticalResultCommunication)
audit_register(SigningAttempt)
audit_register(Charge)
