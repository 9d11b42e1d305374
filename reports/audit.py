"""Report templates and macros under audit: who created each template, each version and each macro
change, with the facility in every row (``get_additional_data``)."""

from accounts.audit import audit_register
from reports.models import Macro, ReportTemplate, TemplateVersion

audit_register(ReportTemplate)
audit_register(TemplateVersion)
audit_register(Macro)
