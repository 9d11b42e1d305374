"""Which rule of the procedure catalogue classifies a procedure, and why.

Precedence (first hit wins; see ``worklist.models.CatalogueRule``):

1. the facility's rule for the exact procedure code;
2. the default catalogue's rule for the exact procedure code;
3. the facility's description patterns (by ``rank``, then id);
4. the default catalogue's description patterns (by ``rank``, then id).

Codes are compared trimmed and upper-cased; patterns are case-insensitive regular expressions
searched in the descriptions given, one description at a time in the order given (the order's
procedure text against every pattern, then the study's DICOM description).

``match_rules`` is pure over rules already loaded, so a page can test a draft rule against a sample
study without saving it ("this study would go to: …, because …")."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Q

from worklist.models import CatalogueRule


@dataclass(frozen=True)
class CatalogueMatch:
    rule_id: int | None
    subspecialty_id: int
    subspecialty_code: str
    modality: str
    body_part: str
    rvu: Decimal
    priority: str  # "" = no default priority
    stroke_protocol: bool
    trauma_protocol: bool
    source: str  # "facility" or "default"
    matched_on: str  # "code" or "pattern"
    because: str


def normalise_code(code: str | None) -> str:
    return (code or "").strip().upper()


def _texts(description: str | Sequence[str] | None) -> list[str]:
    if description is None:
        return []
    if isinstance(description, str):
        description = [description]
    return [t for t in description if t and t.strip()]


def _match(rule: CatalogueRule, *, on: str, because: str) -> CatalogueMatch:
    source = "facility" if rule.facility_id else "default"
    return CatalogueMatch(
        rule_id=rule.pk,
        subspecialty_id=rule.subspecialty_id,
        subspecialty_code=rule.subspecialty.code,
        modality=rule.modality,
        body_part=rule.body_part,
        rvu=rule.rvu,
        priority=rule.priority,
        stroke_protocol=rule.stroke_protocol,
        trauma_protocol=rule.trauma_protocol,
        source=source,
        matched_on=on,
        because=f"{because} ({'facility' if source == 'facility' else 'default catalogue'} rule)",
    )


def match_rules(
    rules: Iterable[CatalogueRule], procedure_code: str | None, description: str | Sequence[str] | None
) -> CatalogueMatch | None:
    """The winning rule among ``rules`` (a facility's and the defaults), or None. Pure."""
    rules = list(rules)
    code = normalise_code(procedure_code)
    texts = _texts(description)
    facility_first = sorted(rules, key=lambda r: (r.facility_id is None, r.rank, r.pk or 0))
    if code:
        for rule in facility_first:
            if rule.procedure_code and normalise_code(rule.procedure_code) == code:
                return _match(rule, on="code", because=f"procedure code {code}")
    # The order's text is what was asked for; the DICOM description only stands in when it says
    # nothing the catalogue knows: each text meets every pattern before the next text is tried.
    patterns = []
    for rule in facility_first:
        if rule.description_pattern:
            try:
                patterns.append((rule, re.compile(rule.description_pattern, re.IGNORECASE)))
            except re.error:
                continue  # an invalid pattern saved around validation matches nothing rather than failing
    for text in texts:
        for rule, pattern in patterns:
            if pattern.search(text):
                return _match(
                    rule,
                    on="pattern",
                    because=f"description “{text.strip()}” matches /{rule.description_pattern}/",
                )
    return None


def catalogue_rules(facility) -> list[CatalogueRule]:
    """The rules that apply at ``facility`` (its own and the defaults), in one query."""
    facility_id = getattr(facility, "pk", facility)
    where = Q(facility__isnull=True)
    if facility_id:
        where |= Q(facility_id=facility_id)
    return list(CatalogueRule.objects.filter(where).select_related("subspecialty"))


def catalogue_match(
    facility, procedure_code: str | None, description: str | Sequence[str] | None
) -> CatalogueMatch | None:
    """How a procedure at ``facility`` (a Facility, its id, or None for the defaults only) is read:
    the winning catalogue rule with the sentence saying why, or None when nothing matches."""
    return match_rules(catalogue_rules(facility), procedure_code, description)
