"""Identifier systems of the FHIR resources, and their inverses for token search (``system|value``).

FHIR wants an absolute URI in ``Identifier.system``. HL7 v2 gives a namespace (PID-3.4 "LAKESHORE",
ORC-2.2 "EPIC") that is sometimes an OID and rarely a URI, and ReadRoom keeps MRNs, accessions and order
numbers unique per facility. So:

* an assigning authority that is an OID becomes ``urn:oid:<oid>``, one that is already a URI stays as
  it is, any other becomes ``urn:readroom:facility:<code>:patient-id:<authority>`` (percent-encoded);
* accession, placer and filler numbers: ``urn:readroom:facility:<code>:accession`` (``placer``,
  ``filler``);
* the Study Instance UID: ``urn:dicom:uid`` with the value ``urn:oid:<uid>`` (DICOM PS3.18, IHE).

A search may name a patient identifier's system by any of those forms or by the bare authority as
the hospital sends it in PID-3.4 (``identifier=LAKESHORE|MRN1001``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from django.db.models import Q

DICOM_UID = "urn:dicom:uid"
NPI = "http://hl7.org/fhir/sid/us-npi"
NPI_OID = "2.16.840.1.113883.4.6"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"  # identifier types: MR, ACSN, PLAC, FILL, NPI

_PREFIX = "urn:readroom:facility:"
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_OURS = re.compile(r"urn:readroom:facility:(?P<code>[A-Z0-9_-]+):(?P<kind>[a-z-]+)(:(?P<authority>\S+))?")
NOTHING = Q(pk__in=[])


def facility_system(facility_code: str, kind: str) -> str:
    """``kind``: accession, placer or filler."""
    return f"{_PREFIX}{facility_code}:{kind}"


def patient_id_system(facility_code: str, authority: str) -> str:
    if _OID.fullmatch(authority):
        return f"urn:oid:{authority}"
    if _URI.fullmatch(authority):
        return authority
    return f"{_PREFIX}{facility_code}:patient-id:{quote(authority, safe='')}"


@dataclass(frozen=True)
class Token:
    """A token search value: ``system|code``. ``None``: not constrained; ``""``: explicitly absent."""

    system: str | None
    code: str | None


@dataclass(frozen=True)
class OurSystem:
    facility_code: str
    kind: str
    authority: str = ""


def our_system(system: str) -> OurSystem | None:
    match = _OURS.fullmatch(system)
    if match is None:
        return None
    return OurSystem(match["code"], match["kind"], unquote(match["authority"] or ""))


def patient_identifier_q(token: Token, *, path: str = "") -> Q:
    """Patients (or records through ``path``, e.g. ``patient__``) whose MRN matches the token."""
    where = Q(**{f"{path}mrn": token.code}) if token.code else Q()
    if token.system is None:
        return where if token.code else NOTHING
    if token.system == "":
        return NOTHING  # every MRN has a system here
    ours = our_system(token.system)
    if ours is not None:
        if ours.kind != "patient-id":
            return NOTHING
        return where & Q(
            **{f"{path}facility__code": ours.facility_code, f"{path}assigning_authority": ours.authority}
        )
    authorities = [token.system]
    if token.system.startswith("urn:oid:"):
        authorities.append(token.system.removeprefix("urn:oid:"))  # sent as the bare OID in PID-3.4
    from imaging.selectors import patient_issuer_q  # the identity domain (docs/orders.md)

    return where & patient_issuer_q(authorities, path=path)


def facility_number_q(token: Token, fields: dict[str, str], *, facility_path: str = "facility") -> Q:
    """Records whose accession / placer / filler number matches. ``fields`` maps each kind to its
    field (e.g. ``{"accession": "accession_number"}``); a token without a system matches any of them."""
    if token.system == "":
        return NOTHING
    if token.system is None:
        if not token.code:
            return NOTHING
        where = NOTHING
        for field in fields.values():
            where |= Q(**{field: token.code})
        return where
    ours = our_system(token.system)
    if ours is None or ours.kind not in fields:
        return NOTHING
    field = fields[ours.kind]
    where = Q(**{f"{facility_path}__code": ours.facility_code}) & ~Q(**{field: ""})
    return where & Q(**{field: token.code}) if token.code else where


def dicom_uid_value(uid: str) -> str:
    return f"urn:oid:{uid}"


def study_uid_q(token: Token, *, field: str = "study_instance_uid") -> Q:
    """The Study Instance UID as ``urn:dicom:uid|urn:oid:1.2…`` (or the bare UID)."""
    if token.system not in (None, DICOM_UID) or not token.code:
        return NOTHING
    return Q(**{field: token.code.removeprefix("urn:oid:")})


def is_npi_authority(authority: str) -> bool:
    """XCN.9 naming the NPI registry: "NPI" (as most RIS send it), its OID, or the FHIR system."""
    return authority.strip().upper() in {"NPI", "CMS NPI", "US NPI"} or authority.strip() in {
        NPI_OID,
        f"urn:oid:{NPI_OID}",
        NPI,
    }
