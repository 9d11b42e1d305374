"""What ``/fhir/r4/{Patient,ServiceRequest,ImagingStudy}`` search on (DiagnosticReport's search lives
with the reports app, ``reports.fhir``). Each parameter says what it matches; the CapabilityStatement is
written from these definitions, and docs/api.md lists them.

Who sees what is the selectors' business (``imaging.selectors``): a definition's ``visible`` starts
from them, so a search can never return a record its read would refuse."""

from __future__ import annotations

from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet

from imaging.models import OrderStatus, Patient, Study, StudyStatus
from imaging.selectors import orders_visible_to, patients_visible_to, studies_visible_to
from interfaces.fhir.identifiers import (
    NOTHING,
    Token,
    facility_number_q,
    patient_identifier_q,
    study_uid_q,
)
from interfaces.fhir.resources import (
    GENDER,
    REQUEST_PRIORITY,
    REVOKED_ORDER_STATUSES,
    imaging_study_resource,
    patient_resource,
    service_request_resource,
)
from interfaces.fhir.search import (
    ResourceSearch,
    SearchParameter,
    date_q,
    day_q,
    id_parameter,
    standard,
    string_q,
)


def code_q(token: Token, codes: dict[str, Q], *, system: str) -> Q:
    """A token over a fixed code list; a system other than the value set's matches nothing."""
    if token.system not in (None, system) or not token.code:
        return NOTHING
    return codes.get(token.code, NOTHING)


# --- shared parameters of the resources about a patient ------------------------------------------


def patient_parameters(resource_type: str, *, path: str) -> tuple[SearchParameter, ...]:
    """``patient``/``subject`` (a Patient reference) and the chain ``patient.identifier``."""

    def by_reference(pk, _):
        return Q(**{f"{path}_id": pk}) if pk is not None else NOTHING

    return (
        SearchParameter(
            "patient",
            "reference",
            by_reference,
            f"The {resource_type}'s patient: `Patient/123` or `123`",
            definition=standard("clinical", "patient"),
            target="Patient",
        ),
        SearchParameter(
            "subject",
            "reference",
            by_reference,
            "The same as patient (the subject is always a Patient here)",
            definition=standard(resource_type, "subject"),
            modifiers=("Patient",),
            target="Patient",
        ),
        SearchParameter(
            "patient.identifier",
            "token",
            lambda token, _: patient_identifier_q(token, path=f"{path}__"),
            "Chained: the patient's MRN, `value` or `system|value` as in Patient?identifier",
        ),
    )


# --- Patient -------------------------------------------------------------------------------------

_GENDERS: dict[str, Q] = {}
for _sex, _gender in GENDER.items():
    _GENDERS[_gender] = _GENDERS.get(_gender, NOTHING) | Q(sex=_sex)

NAME_FIELDS = ("family_name", "given_name", "middle_name")


def patients_for_fhir(user) -> QuerySet:
    return (
        patients_visible_to(user)
        .select_related("facility")
        .prefetch_related(Prefetch("merged_from", queryset=Patient.objects.only("pk", "merged_into")))
    )


PATIENT = ResourceSearch(
    type="Patient",
    documentation="Patients of the facilities (and, for a radiologist, of the studies) the caller may see.",
    visible=patients_for_fhir,
    resource=patient_resource,
    parameters=(
        id_parameter("Patient"),
        SearchParameter(
            "identifier",
            "token",
            lambda token, _: patient_identifier_q(token),
            "The MRN (PID-3). `value` alone, or `system|value` where the system is the identifier's "
            "(urn:readroom:facility:<code>:patient-id:<authority>, urn:oid:<oid>) or the assigning "
            "authority as the hospital sends it in PID-3.4",
            definition=standard("Patient", "identifier"),
        ),
        SearchParameter(
            "name",
            "string",
            lambda value, modifier: string_q(value, modifier, NAME_FIELDS),
            "Family, given or middle name: starts with, case-insensitive (`:exact`, `:contains`)",
            definition=standard("Patient", "name"),
            modifiers=("exact", "contains"),
        ),
        SearchParameter(
            "family",
            "string",
            lambda value, modifier: string_q(value, modifier, ("family_name",)),
            "Family name: starts with, case-insensitive (`:exact`, `:contains`)",
            definition=standard("individual", "family"),
            modifiers=("exact", "contains"),
        ),
        SearchParameter(
            "given",
            "string",
            lambda value, modifier: string_q(value, modifier, ("given_name", "middle_name")),
            "Given or middle name: starts with, case-insensitive (`:exact`, `:contains`)",
            definition=standard("individual", "given"),
            modifiers=("exact", "contains"),
        ),
        SearchParameter(
            "birthdate",
            "date",
            lambda value, _: day_q(value, "birth_date"),
            "Date of birth (PID-7), with eq/ne/gt/lt/ge/le/sa/eb prefixes",
            definition=standard("individual", "birthdate"),
        ),
        SearchParameter(
            "gender",
            "token",
            lambda token, _: code_q(token, _GENDERS, system="http://hl7.org/fhir/administrative-gender"),
            "male | female | other | unknown (PID-8: A and O are other, N and U unknown)",
            definition=standard("individual", "gender"),
        ),
    ),
)


# --- ServiceRequest ------------------------------------------------------------------------------

# A study of the order has its final read (the resource's "completed", with ORC-5 CM).
READ_FINAL = Exists(Study.objects.filter(order=OuterRef("pk"), status=StudyStatus.FINAL))
_REVOKED = Q(status__in=REVOKED_ORDER_STATUSES)
_COMPLETED = ~_REVOKED & (Q(status=OrderStatus.COMPLETED) | Q(read_final=True))
# ``resources.service_request_status`` in SQL (tests/interfaces/test_fhir_search.py checks they agree).
SERVICE_REQUEST_STATUSES = {"revoked": _REVOKED, "completed": _COMPLETED, "active": ~_REVOKED & ~_COMPLETED}
_PRIORITIES: dict[str, Q] = {}
for _class, _priority in REQUEST_PRIORITY.items():
    _PRIORITIES[_priority] = _PRIORITIES.get(_priority, NOTHING) | Q(priority=_class)

ORDER_NUMBERS = {
    "accession": "accession_number",
    "placer": "placer_order_number",
    "filler": "filler_order_number",
}


def orders_for_fhir(user) -> QuerySet:
    return (
        orders_visible_to(user)
        .select_related("facility", "patient__facility")
        .annotate(read_final=READ_FINAL)
    )


SERVICE_REQUEST = ResourceSearch(
    type="ServiceRequest",
    documentation="Imaging orders (ORM^O01 / OMI^O23) of the facilities the caller may see; a "
    "radiologist sees the orders of the studies they may read.",
    visible=orders_for_fhir,
    resource=lambda order: service_request_resource(order, read_final=order.read_final),
    parameters=(
        id_parameter("ServiceRequest"),
        SearchParameter(
            "identifier",
            "token",
            lambda token, _: facility_number_q(token, ORDER_NUMBERS),
            "The accession number (`value` alone also matches the placer and filler numbers), or "
            "`urn:readroom:facility:<code>:accession|value` (`placer`, `filler`)",
            definition=standard("clinical", "identifier"),
        ),
        *patient_parameters("ServiceRequest", path="patient"),
        SearchParameter(
            "status",
            "token",
            lambda token, _: code_q(
                token, SERVICE_REQUEST_STATUSES, system="http://hl7.org/fhir/request-status"
            ),
            "active | revoked (cancelled or discontinued) | completed (ORC-5 CM, or the final read signed)",
            definition=standard("ServiceRequest", "status"),
        ),
        SearchParameter(
            "authored",
            "date",
            lambda value, _: date_q(value, "ordered_at"),
            "When the order was placed (ORC-9), with prefixes; a value without a zone is the "
            "facility's local time",
            definition=standard("ServiceRequest", "authored"),
        ),
        SearchParameter(
            "priority",
            "token",
            lambda token, _: code_q(token, _PRIORITIES, system="http://hl7.org/fhir/request-priority"),
            "routine | asap | stat (stroke and trauma are stat)",
            definition=standard("ServiceRequest", "priority"),
        ),
    ),
    chains=("patient.identifier",),
)


# --- ImagingStudy --------------------------------------------------------------------------------

_CANCELLED = Q(status=StudyStatus.CANCELLED)
_REGISTERED = Q(status=StudyStatus.RECEIVING, number_of_instances=0)
# ``resources._study_status`` in SQL.
IMAGING_STUDY_STATUSES = {
    "cancelled": _CANCELLED,
    "registered": _REGISTERED,
    "available": ~_CANCELLED & ~_REGISTERED,
}


def studies_for_fhir(user) -> QuerySet:
    return (
        studies_visible_to(user)
        .select_related("facility", "patient__facility", "order__facility")
        .prefetch_related("series")
    )


IMAGING_STUDY = ResourceSearch(
    type="ImagingStudy",
    documentation="Studies the caller may see (as DICOMweb shows them): a radiologist's are those "
    "they may read now.",
    visible=studies_for_fhir,
    resource=imaging_study_resource,
    parameters=(
        id_parameter("ImagingStudy"),
        SearchParameter(
            "identifier",
            "token",
            lambda token, _: study_uid_q(token) | facility_number_q(token, {"accession": "accession_number"}),
            "The Study Instance UID (`urn:dicom:uid|urn:oid:1.2…` or the bare UID) or the accession "
            "(`value` alone, or `urn:readroom:facility:<code>:accession|value`)",
            definition=standard("clinical", "identifier"),
        ),
        *patient_parameters("ImagingStudy", path="patient"),
        SearchParameter(
            "started",
            "date",
            lambda value, _: date_q(value, "study_datetime"),
            "When the study started (DICOM Study Date/Time), with prefixes; a value without a zone is "
            "the facility's local time",
            definition=standard("ImagingStudy", "started"),
        ),
        SearchParameter(
            "status",
            "token",
            lambda token, _: code_q(
                token, IMAGING_STUDY_STATUSES, system="http://hl7.org/fhir/imagingstudy-status"
            ),
            "registered (no images yet) | available | cancelled",
            definition=standard("ImagingStudy", "status"),
        ),
    ),
    chains=("patient.identifier",),
)
