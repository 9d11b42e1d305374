"""Credentialing records under audit: every create, change and delete with who, when, from where and
before/after values; document downloads as ACCESS rows. Each row carries ``radiologist_id`` (and
``facility_id`` where there is one) from the model's ``get_additional_data()``."""

from accounts.audit import ReadKind, audit_register, record_phi_access
from credentialing.models import (
    BoardCertification,
    DeaRegistration,
    Document,
    FacilityChecklistRequirement,
    FacilityCredentialing,
    FacilityPrivilege,
    Fellowship,
    MalpracticeCoverage,
    PrivilegeChecklistItem,
    RadiologistProfile,
    StateLicence,
)

audit_register(RadiologistProfile, m2m_fields={"subspecialties"})
for _model in (
    StateLicence,
    BoardCertification,
    Fellowship,
    DeaRegistration,
    MalpracticeCoverage,
    Document,
    PrivilegeChecklistItem,
    FacilityCredentialing,
    FacilityChecklistRequirement,
):
    audit_register(_model)
audit_register(FacilityPrivilege, m2m_fields={"scope_subspecialties"})


def record_document_access(document: Document) -> None:
    """Record that the current user (from the request context) downloaded this document."""
    record_phi_access(document, kind=ReadKind.DOCUMENT)
