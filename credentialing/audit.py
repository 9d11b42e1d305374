"""Credentialing records under audit: every create, change and delete with who, when, from where and
before/after values; document downloads as ACCESS rows. Each row carries ``radiologist_id`` (and
``facility_id`` where there is one) from the model's ``get_additional_data()``."""

from auditlog.registry import auditlog
from auditlog.signals import accessed

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


def reverse_relations(model) -> list[str]:
    """Other models' relations *to* this one. django-auditlog 3.x counts them as fields and writes
    e.g. "licences: credentialing.StateLicence.None" into every row; they are not the row's data."""
    return [f.name for f in model._meta.get_fields() if f.auto_created and not f.concrete]


def _register(model, **options) -> None:
    auditlog.register(model, exclude_fields=reverse_relations(model), **options)


_register(RadiologistProfile, m2m_fields={"subspecialties"})
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
    _register(_model)
_register(FacilityPrivilege, m2m_fields={"scope_subspecialties"})


def record_document_access(document: Document) -> None:
    """Record that the current user (from the request context) downloaded this document."""
    accessed.send(sender=Document, instance=document)
